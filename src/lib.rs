//! berth: a Kubernetes container runtime for one node. `berthd` serves the CRI v1
//! RuntimeService and ImageService on a unix socket. DESIGN.md has the design; the
//! README's Layout section, the module map.

pub mod admin;
pub mod authority;
pub mod cgroup_warmup;
pub mod cli;
pub mod config;
mod config_telemetry;
pub mod container;
pub mod content;
pub mod counted;
pub mod cri;
pub mod daemon;
pub mod domain;
pub mod error;
pub mod fault;
pub mod id_locks;
pub mod image;
pub mod layout;
pub mod logs;
pub mod malloc;
pub mod metrics;
pub mod network;
pub mod notify;
pub mod sandbox;
pub mod shim;
pub mod snapshot;
pub mod spec;
pub mod store;
pub mod streaming;
pub mod traces;
pub mod userns;
