//! The infra container through its shim: start the pod's shim, create and start
//! the pause task, and later stop it. The shim outlives berthd; its address stays
//! in the bundle (`address`) for reconnecting after a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::pause::beside_berthd;
use crate::config::RuntimeHandler;
use crate::error::{Error, IoContext, Result};
use crate::shim::{Connect, CreateTask, RuntimeOptions, ShimEnv, TaskClient, TaskStatus};
use crate::snapshot::overlay::Mount;

const KILL_WAIT: Duration = Duration::from_secs(10);

/// How the pod's tasks are run: the shim binary and the options Create carries.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub shim: PathBuf,
    pub binary_name: String,
    /// The OCI runtime's state directory (runc `--root`).
    pub root: PathBuf,
    pub systemd_cgroup: bool,
}

impl Runtime {
    fn options(&self) -> RuntimeOptions {
        RuntimeOptions {
            binary_name: self.binary_name.clone(),
            root: self.root.clone(),
            systemd_cgroup: self.systemd_cgroup,
        }
    }
}

/// A handler's shim as a path: absolute or relative as given, a bare name next to
/// berthd, else in PATH.
pub fn resolve_shim(handler: &RuntimeHandler) -> Result<PathBuf> {
    let shim = &handler.shim;
    if shim.components().count() > 1 {
        return Ok(shim.clone());
    }
    let name = shim.to_string_lossy();
    if let Some(path) = beside_berthd(&name) {
        return Ok(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(shim))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "shim {name:?} is neither next to berthd nor in PATH"
            ))
        })
}

/// Starts the pod's shim on `bundle` (whose config.json is written) and the infra
/// task in it. Returns the client and the infra pid. On failure nothing of it is
/// left running.
pub async fn start(
    shims: &ShimEnv,
    connector: &dyn Connect,
    runtime: &Runtime,
    id: &str,
    bundle: &Path,
    rootfs: Vec<Mount>,
) -> Result<(TaskClient, u32)> {
    let address = shims.start(&runtime.shim, id, bundle).await?;
    let client = match connector.connect(&address).await {
        Ok(c) => c,
        Err(e) => {
            let _ = shims.delete(&runtime.shim, id, bundle).await;
            return Err(e);
        }
    };
    let request = CreateTask {
        id: id.to_string(),
        bundle: bundle.to_path_buf(),
        rootfs,
        terminal: false,
        stdin: None,
        stdout: None,
        stderr: None,
        options: runtime.options(),
    };
    let started = async {
        client.create(&request).await?;
        client.start(id, "").await
    }
    .await;
    match started {
        Ok(pid) => Ok((client, pid)),
        Err(e) => {
            if let Err(undo) = stop(&client, id).await {
                tracing::warn!(error = %undo, "deleting a failed infra task");
            }
            let _ = client.shutdown(id).await;
            Err(e.within("starting the infra container"))
        }
    }
}

/// Kills the infra task (SIGKILL) and deletes it. A task that is already gone
/// is fine.
pub async fn stop(client: &TaskClient, id: &str) -> Result<()> {
    // Anything but stopped may hold a process: a task berthd was starting when it
    // died can be created now and running a moment later, as the shim finishes.
    let alive = match client.state(id, "").await {
        Ok(state) => state.status != TaskStatus::Stopped,
        Err(Error::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    if alive {
        // SIGKILL at once, as containerd kills the sandbox container and as the
        // floor does: the pause has nothing to flush, and its namespaces' init
        // takes everything in its PID namespace with it. (After SIGTERM, a
        // grace of 2 s ran out now and then in the bench before the exit was
        // seen, for 2-3 s teardowns.)
        kill_and_wait(client, id, false).await?;
    }
    match client.delete(id, "").await {
        Ok(_) | Err(Error::NotFound(_)) => Ok(()),
        // Started after the state was read: kill it for good and delete again.
        Err(Error::FailedPrecondition(_)) => {
            kill_and_wait(client, id, true).await?;
            match client.delete(id, "").await {
                Ok(_) | Err(Error::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// A task the shim is still creating (berthd died while asking for it) cannot be
/// signalled yet: the signal is retried until the create has finished.
async fn kill_when_created(client: &TaskClient, id: &str, signal: i32, all: bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    loop {
        match client.kill(id, "", signal as u32, all).await {
            Err(Error::FailedPrecondition(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(CREATE_POLL).await;
            }
            other => return other,
        }
    }
}

/// How often a task still being created is asked again.
const CREATE_POLL: Duration = Duration::from_millis(100);

/// SIGKILL (to every process of the task with `all`), then its exit; a task
/// already gone is fine.
async fn kill_and_wait(client: &TaskClient, id: &str, all: bool) -> Result<()> {
    match kill_when_created(client, id, libc::SIGKILL, all).await {
        Ok(()) | Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    tokio::time::timeout(KILL_WAIT, client.wait(id, ""))
        .await
        .map_err(|_| killed_but_alive(id))?
        .map(|_| ())
}

fn killed_but_alive(id: &str) -> Error {
    Error::Unavailable(format!(
        "infra container {id} did not exit {KILL_WAIT:?} after SIGKILL"
    ))
}

/// Reconnects to the shim whose address is in the bundle.
pub async fn reconnect(connector: &dyn Connect, bundle: &Path) -> Result<TaskClient> {
    let path = bundle.join("address");
    let connected = match tokio::fs::read_to_string(&path).await {
        Ok(address) => connector.connect(address.trim()).await,
        Err(e) => Err(e).context(|| format!("reading {}", path.display())),
    };
    crate::metrics::shim_reconnect(connected.is_ok());
    connected
}

/// Whether the shim still runs the infra task, and its pid.
pub async fn running_pid(client: &TaskClient, id: &str) -> Option<u32> {
    let state = client.state(id, "").await.ok()?;
    (state.status == TaskStatus::Running).then_some(state.pid)
}
