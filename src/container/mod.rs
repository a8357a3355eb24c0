//! Containers: their configs as the kubelet gave them, the OCI runtime spec built
//! from those configs and the image, and their lifecycle in the pod's shim.

mod attach;
mod bundle_spec;
pub mod cdi;
pub mod config;
pub(crate) mod create;
mod events;
mod exec;
mod holders;
pub(crate) mod image_config;
mod image_names;
mod io;
mod lifecycle;
mod log_location;
pub mod metrics;
mod pod;
mod service;
pub mod spec;
mod stats;
mod stdio;
mod update;
mod volumes;

pub use events::{ContainerEvent, ContainerEventKind, EVENT_BACKLOG};
pub use exec::ExecOutput;
pub use image_names::ImageNames;
pub use service::{ContainerFilter, ContainerService};
pub use stats::{ContainerStats, Cpu, Interface, LayerUsage, PodStats};
pub use stdio::{ProcessStreams, TerminalSize};
