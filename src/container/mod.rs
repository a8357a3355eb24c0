//! Containers: their lifecycle in the pod's shim (create, start, stop, remove,
//! exec, attach, update), the index that serves Status and List, their output and
//! stats. What the kubelet asked for is in `domain`, the OCI spec built from it in
//! `spec`.

mod attach;
mod bundle_spec;
pub mod cdi;
pub(crate) mod create;
mod events;
mod exec;
mod holders;
mod image_names;
mod index;
mod io;
mod lifecycle;
mod log_location;
pub mod metrics;
mod pod;
mod service;
mod stats;
mod stdio;
#[cfg(test)]
mod tests;
mod update;
mod userns;
mod volumes;

pub use crate::sandbox::{ContainerEvent, ContainerEventKind, EVENT_BACKLOG};
pub use exec::ExecOutput;
pub use image_names::ImageNames;
pub use service::{ContainerFilter, ContainerService};
pub use stats::{ContainerStats, Cpu, Interface, LayerUsage, PodStats};
pub use stdio::{ProcessStreams, TerminalSize};
