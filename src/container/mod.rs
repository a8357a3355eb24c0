//! Containers: their configs as the kubelet gave them, the OCI runtime spec built
//! from those configs and the image, and their lifecycle in the pod's shim.

mod attach;
pub mod config;
pub(crate) mod create;
mod events;
mod exec;
mod holders;
pub(crate) mod image_config;
mod io;
mod lifecycle;
mod pod;
mod service;
pub mod spec;
mod stats;
mod stdio;
mod update;
mod userns;

pub use events::{ContainerEvent, ContainerEventKind};
pub use exec::ExecOutput;
pub use service::{ContainerFilter, ContainerService};
pub use stats::{ContainerStats, Cpu, Interface, LayerUsage, PodStats};
pub use stdio::{ProcessStreams, TerminalSize};
