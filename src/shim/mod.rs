//! berthd's side of shim v2: starting shims, talking to their Task service, and
//! receiving the events they publish.

pub mod client;
pub mod events;
#[cfg(test)]
pub(crate) mod fake;
pub mod features;
pub mod launch;
mod options;
mod task;

pub use client::{TtrpcConnect, TtrpcTasks, connect};
pub use events::{EventServer, ShimEvent};
pub use launch::ShimEnv;
pub use task::{
    Connect, CreateTask, ExecTask, Exit, RuntimeOptions, TaskClient, TaskState, TaskStatus, Tasks,
};
