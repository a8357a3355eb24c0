//! Containers: their configs as the kubelet gave them, and the OCI runtime spec built
//! from those configs and the image.

pub mod config;
pub mod spec;
