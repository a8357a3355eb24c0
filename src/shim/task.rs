//! The seam between berthd and a shim: what berthd asks of a shim's Task service,
//! in domain types. `client.rs` speaks it over ttrpc to a real shim; `fake.rs`
//! (tests only) keeps tasks in memory, so the container and sandbox services'
//! state transitions, undo and recovery are tested without root, runc or a shim.
//! Protobuf stays behind this trait.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use oci_spec::runtime::LinuxResources;

use crate::error::Result;
use crate::snapshot::overlay::Mount;

/// A client of one shim's tasks, shared by every container of its pod.
pub type TaskClient = Arc<dyn Tasks>;

/// How a task's OCI runtime is run: what runc's shim options carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// The OCI runtime binary (runc, crun), by name or path.
    pub binary_name: String,
    /// Its state directory (runc `--root`).
    pub root: PathBuf,
    pub systemd_cgroup: bool,
}

/// A task to create from an OCI bundle (the infra container or a container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTask {
    pub id: String,
    /// Holds `config.json`; the rootfs is mounted at its `rootfs`.
    pub bundle: PathBuf,
    /// Mounted by the shim, in order; empty when the rootfs is in place already.
    pub rootfs: Vec<Mount>,
    pub terminal: bool,
    /// The fifos the process's stdio is connected to; `None` for none.
    pub stdin: Option<PathBuf>,
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
    pub options: RuntimeOptions,
}

/// A further process in a running task (exec).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecTask {
    pub id: String,
    pub exec_id: String,
    pub terminal: bool,
    pub stdin: Option<PathBuf>,
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
    /// The OCI runtime spec `process` to run, as JSON.
    pub process: serde_json::Value,
}

/// Where a task or exec process is, as its shim reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TaskStatus {
    #[default]
    Unknown,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exit {
    /// Its exit status; 128 + the signal for a process a signal killed.
    pub status: u32,
    /// When it exited, in nanoseconds since the epoch; 0 if the shim did not say.
    pub at: i64,
}

/// A task's (or exec process's) state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskState {
    pub pid: u32,
    pub status: TaskStatus,
    /// Meaningful once `status` is Stopped.
    pub exit: Exit,
}

/// Connects to a shim by the address it printed when it started (and that its pod's
/// bundle keeps, for reconnecting after a restart).
#[async_trait]
pub trait Connect: Send + Sync {
    async fn connect(&self, address: &str) -> Result<TaskClient>;
}

/// The calls of the shim v2 Task service berthd makes. `exec_id` is empty for the
/// task's own process. Failures use the domain error of the same meaning: NotFound
/// for a task that is not there, Unavailable for a shim that does not answer,
/// Runtime for a refusal of the OCI runtime.
#[async_trait]
pub trait Tasks: Send + Sync {
    /// Creates the task; its pid.
    async fn create(&self, request: &CreateTask) -> Result<u32>;
    /// Starts the task or exec process; its pid.
    async fn start(&self, id: &str, exec_id: &str) -> Result<u32>;
    async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()>;
    /// Blocks until the process exits.
    async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit>;
    async fn state(&self, id: &str, exec_id: &str) -> Result<TaskState>;
    /// Removes the task (or exec process); how it ended.
    async fn delete(&self, id: &str, exec_id: &str) -> Result<Exit>;
    async fn exec(&self, request: &ExecTask) -> Result<()>;
    async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()>;
    async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()>;
    /// New cgroup limits for the task.
    async fn update(&self, id: &str, resources: &LinuxResources) -> Result<()>;
    /// Asks the shim to exit once it has no tasks left; a shim that is gone
    /// already is fine.
    async fn shutdown(&self, id: &str) -> Result<()>;
}
