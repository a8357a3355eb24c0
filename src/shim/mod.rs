//! berthd's side of shim v2: starting shims, talking to their Task service, and
//! receiving the events they publish.

pub mod client;
pub mod events;
pub mod features;
pub mod launch;
mod options;

pub use client::TaskClient;
pub use events::{EventServer, ShimEvent};
pub use launch::ShimEnv;
pub use options::{rootfs_mount, runc_options};
