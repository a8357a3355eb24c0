//! ExecSync: run a command in a running container and return its output and exit
//! code. At the deadline the process is killed and the call says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use nix::sys::stat::Mode;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::service::ContainerService;
use crate::error::{Error, IoContext, Result};
use crate::store::ContainerPhase;

/// Output kept per stream; the rest is read and dropped so the process never blocks.
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const DRAIN_QUIET: Duration = Duration::from_millis(100);
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

impl ContainerService {
    /// Runs `cmd` in container `id`; `timeout` of zero means no deadline.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("cmd is empty".into()));
        }
        let record = self.get(id)?;
        if record.phase != ContainerPhase::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        let (_, task) = self.task_of(&record)?;
        let exec_id = format!("exec-{}", &super::create::new_id()[..16]);
        let dir = record.bundle.join(&exec_id);
        std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        let result = self
            .exec_in(
                &task,
                &record.id,
                &record.bundle,
                &exec_id,
                &dir,
                cmd,
                timeout,
            )
            .await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn exec_in(
        &self,
        task: &crate::shim::TaskClient,
        id: &str,
        bundle: &Path,
        exec_id: &str,
        dir: &Path,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
        let (done, watcher) = watch::channel(false);
        let out = collect(&stdout, watcher.clone())?;
        let err = collect(&stderr, watcher)?;
        let request = api::ExecProcessRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            terminal: false,
            stdout: stdout.display().to_string(),
            stderr: stderr.display().to_string(),
            spec: Some(process_spec(bundle, cmd)?).into(),
            ..Default::default()
        };
        task.exec(&request).await?;
        let waited = async {
            task.start(id, exec_id).await?;
            if timeout.is_zero() {
                task.wait(id, exec_id).await.map(Some)
            } else {
                match tokio::time::timeout(timeout, task.wait(id, exec_id)).await {
                    Ok(r) => r.map(Some),
                    Err(_) => Ok(None),
                }
            }
        }
        .await;
        let exit = match waited {
            Ok(Some((status, _))) => Ok(status as i32),
            Ok(None) => {
                let _ = task.kill(id, exec_id, libc::SIGKILL as u32, false).await;
                let _ = tokio::time::timeout(KILL_WAIT, task.wait(id, exec_id)).await;
                Err(Error::DeadlineExceeded(format!(
                    "command {cmd:?} in container {id} timed out after {timeout:?} and was killed"
                )))
            }
            Err(e) => Err(e),
        };
        let _ = done.send(true);
        let stdout = out.await.unwrap_or_default();
        let stderr = err.await.unwrap_or_default();
        if let Err(e) = task.delete(id, exec_id).await
            && !matches!(e, Error::NotFound(_))
        {
            tracing::warn!(container_id = id, exec_id, error = %e, "deleting an exec process");
        }
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code: exit?,
        })
    }
}

/// The container's own process (user, env, cwd, capabilities) with other args.
fn process_spec(bundle: &Path, cmd: &[String]) -> Result<Any> {
    let path = bundle.join("config.json");
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).context(|| format!("reading {}", path.display()))?,
    )
    .map_err(|e| Error::Internal(format!("{} is not JSON: {e}", path.display())))?;
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = serde_json::json!(false);
    Ok(Any {
        type_url: PROCESS_TYPE_URL.to_string(),
        value: serde_json::to_vec(&process)
            .map_err(|e| Error::Internal(format!("encoding the exec process: {e}")))?,
        ..Default::default()
    })
}

/// Reads a fifo into memory (up to the cap) until told the process is done and
/// the fifo is drained.
fn collect(
    path: &PathBuf,
    mut done: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Vec<u8>>> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)).map_err(|e| Error::Io {
        context: format!("creating fifo {}", path.display()),
        source: e.into(),
    })?;
    let mut reader = pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .context(|| format!("opening fifo {}", path.display()))?;
    Ok(tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        let keep = |data: &[u8], kept: &mut Vec<u8>| {
            let room = MAX_EXEC_OUTPUT.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        };
        loop {
            tokio::select! {
                read = reader.read(&mut buf) => match read {
                    Ok(n) => keep(&buf[..n], &mut kept),
                    Err(_) => return kept,
                },
                _ = done.wait_for(|d| *d) => break,
            }
        }
        while let Ok(Ok(n)) = tokio::time::timeout(DRAIN_QUIET, reader.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            keep(&buf[..n], &mut kept);
        }
        kept
    }))
}
