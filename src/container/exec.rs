//! Exec: run a command in a running container, with its stdio on the streams of
//! an exec session (input, a terminal and its resizes when asked for), or, for
//! ExecSync, with its output collected in memory and a deadline that kills it.
//!
//! ExecSync's deadline covers the whole call, not only the wait for the exit: a
//! command that leaves a background writer holding its output open ends the call by
//! the deadline too (DeadlineExceeded, as containerd). Whatever way an exec ends (done,
//! past its deadline, or its caller gone), an [`ExecCleanup`] kills what is left of
//! it in the container, deletes it from the shim and removes its directory.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::service::ContainerService;
use super::stdio::{
    ProcessStreams, forward_resizes, make_fifo, open_reader, open_writer, pump_in, pump_out,
};
use crate::error::{Error, IoContext, Result};
use crate::shim::{ExecTask, TaskClient};
use crate::store::ContainerRecord;

/// ExecSync output kept per stream; the rest is read and dropped so the process
/// never blocks. Both streams together stay under the 16 MiB a kubelet (and most
/// gRPC clients) accept in one reply, with room for the message's framing.
pub const MAX_EXEC_OUTPUT: usize = (16 << 20) / 2 - (64 << 10);
/// ExecSync without a deadline: how long output is drained after the process
/// exited before whatever still holds it open (a background writer) is killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);
const KILL_WAIT: Duration = Duration::from_secs(10);
/// Output chunks in flight between a fifo and its reader.
const OUTPUT_QUEUE: usize = 16;

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
        let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
        let (err_tx, err_rx) = mpsc::channel(OUTPUT_QUEUE);
        let stdout = tokio::spawn(collect(out_rx));
        let stderr = tokio::spawn(collect(err_rx));
        let streams = ProcessStreams {
            stdout: Some(out_tx),
            stderr: Some(err_tx),
            ..Default::default()
        };
        let exit_code = if timeout.is_zero() {
            self.exec_with(id, cmd, streams, Some(DRAIN_AFTER_EXIT))
                .await?
        } else {
            // Dropping the call at the deadline runs the exec's cleanup.
            tokio::time::timeout(timeout, self.exec_with(id, cmd, streams, None))
                .await
                .map_err(|_| {
                    Error::DeadlineExceeded(format!(
                        "command {} in container {id} did not finish within {timeout:?}; \
                         it was killed",
                        crate::error::quote(&format!("{cmd:?}"))
                    ))
                })??
        };
        Ok(ExecOutput {
            stdout: stdout.await?,
            stderr: stderr.await?,
            exit_code,
        })
    }

    /// Runs `cmd` in container `id` with its stdio on `streams` and returns its
    /// exit code once it has exited and its output has been delivered.
    pub async fn exec(&self, id: &str, cmd: &[String], streams: ProcessStreams) -> Result<i32> {
        self.exec_with(id, cmd, streams, None).await
    }

    /// With `drain`, output still open that long after the exit is cut off by
    /// killing what holds it.
    async fn exec_with(
        &self,
        id: &str,
        cmd: &[String],
        streams: ProcessStreams,
        drain: Option<Duration>,
    ) -> Result<i32> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("cmd is empty".into()));
        }
        let record = self.get(id)?;
        if !record.phase.can_exec() {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        // `runc exec` moves the process into the container's cgroups.
        crate::cgroup_warmup::warm();
        let (_, task) = self.task_of(&record)?;
        let process = ExecProcess {
            task,
            id: record.id.clone(),
            exec_id: format!("exec-{}", &super::create::new_id()[..16]),
        };
        let dir = record.bundle.join(&process.exec_id);
        std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        let mut cleanup = ExecCleanup {
            process: process.clone(),
            dir: dir.clone(),
            container_pid: record.pid,
            finished: false,
        };
        let result = process.run(&record, &dir, cmd, streams, drain).await;
        cleanup.finished = true;
        result
    }
}

/// Runs when an exec's call ends, however it ends. A call dropped half-way (its
/// deadline, or its client gone) leaves a process that may still run: it is
/// killed, with anything else in the container holding its output, and deleted,
/// on a task of its own since drop cannot wait.
struct ExecCleanup {
    process: ExecProcess,
    dir: PathBuf,
    container_pid: u32,
    finished: bool,
}

impl Drop for ExecCleanup {
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.dir);
        if self.finished {
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let process = self.process.clone();
        let container_pid = self.container_pid;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let _ = std::fs::remove_dir_all(&dir);
            return;
        };
        runtime.spawn(async move {
            process.kill().await;
            process.kill_output_holders(&dir, container_pid).await;
            let _ =
                tokio::time::timeout(KILL_WAIT, process.task.wait(&process.id, &process.exec_id))
                    .await;
            process.delete().await;
            let _ = tokio::fs::remove_dir_all(&dir).await;
        });
    }
}

/// One exec process in a container's shim, from creation to deletion.
#[derive(Clone)]
struct ExecProcess {
    task: TaskClient,
    id: String,
    exec_id: String,
}

impl ExecProcess {
    async fn run(
        &self,
        record: &ContainerRecord,
        dir: &Path,
        cmd: &[String],
        streams: ProcessStreams,
        drain: Option<Duration>,
    ) -> Result<i32> {
        let ProcessStreams {
            stdin,
            stdout,
            stderr,
            resize,
            tty,
        } = streams;
        // A terminal merges both outputs into one.
        let stderr = stderr.filter(|_| !tty);
        let (exited, watcher) = watch::channel(false);
        let mut request = ExecTask {
            id: self.id.clone(),
            exec_id: self.exec_id.clone(),
            terminal: tty,
            stdin: None,
            stdout: None,
            stderr: None,
            process: process_spec(&record.bundle, cmd, tty)?,
        };
        let mut pumps = Vec::new();
        for (name, sink) in [("stdout", stdout), ("stderr", stderr)] {
            let Some(sink) = sink else { continue };
            let path = dir.join(name);
            make_fifo(&path)?;
            let reader = open_reader(&path)?;
            pumps.push(tokio::spawn(pump_out(reader, sink, watcher.clone())));
            match name {
                "stdout" => request.stdout = Some(path),
                _ => request.stderr = Some(path),
            }
        }
        let input = match stdin {
            Some(from) => {
                let path = dir.join("stdin");
                make_fifo(&path)?;
                let writer = open_writer(&path)?;
                request.stdin = Some(path);
                Some((from, writer))
            }
            None => None,
        };

        self.task.exec(&request).await?;
        if let Err(e) = self.task.start(&self.id, &self.exec_id).await {
            self.delete().await;
            return Err(e);
        }
        let input = input.map(|(from, writer)| tokio::spawn(self.clone().feed(from, writer)));
        let resizer = resize.map(|sizes| {
            tokio::spawn(forward_resizes(
                sizes,
                self.task.clone(),
                self.id.clone(),
                self.exec_id.clone(),
            ))
        });

        let exit = self.task.wait(&self.id, &self.exec_id).await;
        let _ = exited.send(true);
        let mut output = futures::future::join_all(pumps);
        if let Some(limit) = drain
            && tokio::time::timeout(limit, &mut output).await.is_err()
        {
            self.kill_output_holders(dir, record.pid).await;
            let _ = tokio::time::timeout(KILL_WAIT, output).await;
        } else {
            output.await;
        }
        for task in input.into_iter().chain(resizer) {
            task.abort();
        }
        self.delete().await;
        exit.map(|exit| exit.status as i32)
    }

    /// Copies the client's input; at its end, closes the process's stdin (ours and
    /// the shim's writer), so the process reads end-of-file.
    async fn feed(self, from: mpsc::Receiver<Bytes>, mut writer: tokio::net::unix::pipe::Sender) {
        if pump_in(from, &mut writer).await {
            drop(writer);
            if let Err(e) = self.task.close_stdin(&self.id, &self.exec_id).await {
                tracing::debug!(exec_id = %self.exec_id, error = %e, "closing exec stdin");
            }
        }
    }

    async fn kill(&self) {
        let _ = self
            .task
            .kill(&self.id, &self.exec_id, libc::SIGKILL as u32, false)
            .await;
    }

    /// Kills the processes of the container that hold this exec's output fifos
    /// open: what the command left running in the background. Only processes in
    /// the container's PID namespace are considered, never the shim.
    async fn kill_output_holders(&self, dir: &Path, container_pid: u32) {
        let fifos: Vec<(u64, u64)> = ["stdout", "stderr"]
            .iter()
            .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        if fifos.is_empty() || container_pid == 0 {
            return;
        }
        let exec_id = self.exec_id.clone();
        let killed = tokio::task::spawn_blocking(move || {
            crate::container::holders::kill_holders(container_pid, &fifos)
        })
        .await
        .unwrap_or_default();
        if killed > 0 {
            tracing::info!(container_id = %self.id, %exec_id, killed, "killed processes an exec left holding its output");
        }
    }

    async fn delete(&self) {
        if let Err(e) = self.task.delete(&self.id, &self.exec_id).await
            && !matches!(e, Error::NotFound(_))
        {
            tracing::warn!(container_id = %self.id, exec_id = %self.exec_id, error = %e, "deleting an exec process");
        }
    }
}

/// The container's own process (user, env, cwd, capabilities) with other args.
fn process_spec(bundle: &Path, cmd: &[String], tty: bool) -> Result<serde_json::Value> {
    let path = bundle.join("config.json");
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).context(|| format!("reading {}", path.display()))?,
    )
    .map_err(|e| Error::Internal(format!("{} is not JSON: {e}", path.display())))?;
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = serde_json::json!(tty);
    Ok(process)
}

/// Gathers output up to the cap; the rest is dropped.
async fn collect(mut chunks: mpsc::Receiver<Bytes>) -> Vec<u8> {
    let mut kept = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        let room = MAX_EXEC_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    kept
}
