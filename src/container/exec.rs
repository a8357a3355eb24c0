//! Exec: run a command in a running container, with its stdio on the streams of
//! an exec session (input, a terminal and its resizes when asked for), or, for
//! ExecSync, with its output collected in memory and a deadline that kills it.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use tokio::sync::{mpsc, watch};

use super::service::ContainerService;
use super::stdio::{
    ProcessStreams, forward_resizes, make_fifo, open_reader, open_writer, pump_in, pump_out,
};
use crate::error::{Error, IoContext, Result};
use crate::shim::TaskClient;
use crate::store::{ContainerPhase, ContainerRecord};

/// Output kept per stream; the rest is read and dropped so the process never blocks.
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
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
        let deadline = (!timeout.is_zero()).then_some(timeout);
        let exit_code = self.exec_with(id, cmd, streams, deadline).await?;
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

    async fn exec_with(
        &self,
        id: &str,
        cmd: &[String],
        streams: ProcessStreams,
        deadline: Option<Duration>,
    ) -> Result<i32> {
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
        let process = ExecProcess {
            task,
            id: record.id.clone(),
            exec_id: format!("exec-{}", &super::create::new_id()[..16]),
        };
        let dir = record.bundle.join(&process.exec_id);
        std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        let result = process.run(&record, &dir, cmd, streams, deadline).await;
        let _ = std::fs::remove_dir_all(&dir);
        result
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
        deadline: Option<Duration>,
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
        let mut request = api::ExecProcessRequest {
            id: self.id.clone(),
            exec_id: self.exec_id.clone(),
            terminal: tty,
            spec: Some(process_spec(&record.bundle, cmd, tty)?).into(),
            ..Default::default()
        };
        let mut pumps = Vec::new();
        for (name, sink) in [("stdout", stdout), ("stderr", stderr)] {
            let Some(sink) = sink else { continue };
            let path = dir.join(name);
            make_fifo(&path)?;
            let reader = open_reader(&path)?;
            pumps.push(tokio::spawn(pump_out(reader, sink, watcher.clone())));
            let path = path.display().to_string();
            match name {
                "stdout" => request.stdout = path,
                _ => request.stderr = path,
            }
        }
        let input = match stdin {
            Some(from) => {
                let path = dir.join("stdin");
                make_fifo(&path)?;
                let writer = open_writer(&path)?;
                request.stdin = path.display().to_string();
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

        let exit = self.wait(cmd, deadline).await;
        let _ = exited.send(true);
        for pump in pumps {
            let _ = pump.await;
        }
        for task in input.into_iter().chain(resizer) {
            task.abort();
        }
        self.delete().await;
        exit
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

    /// The exit status; past the deadline the process is killed and the call fails.
    async fn wait(&self, cmd: &[String], deadline: Option<Duration>) -> Result<i32> {
        let waited = match deadline {
            None => self.task.wait(&self.id, &self.exec_id).await.map(Some),
            Some(limit) => {
                match tokio::time::timeout(limit, self.task.wait(&self.id, &self.exec_id)).await {
                    Ok(r) => r.map(Some),
                    Err(_) => Ok(None),
                }
            }
        };
        match waited {
            Ok(Some((status, _))) => Ok(status as i32),
            Ok(None) => {
                let _ = self
                    .task
                    .kill(&self.id, &self.exec_id, libc::SIGKILL as u32, false)
                    .await;
                let _ =
                    tokio::time::timeout(KILL_WAIT, self.task.wait(&self.id, &self.exec_id)).await;
                Err(Error::DeadlineExceeded(format!(
                    "command {cmd:?} in container {} timed out after {:?} and was killed",
                    self.id,
                    deadline.unwrap_or_default()
                )))
            }
            Err(e) => Err(e),
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
fn process_spec(bundle: &Path, cmd: &[String], tty: bool) -> Result<Any> {
    let path = bundle.join("config.json");
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).context(|| format!("reading {}", path.display()))?,
    )
    .map_err(|e| Error::Internal(format!("{} is not JSON: {e}", path.display())))?;
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = serde_json::json!(tty);
    Ok(Any {
        type_url: PROCESS_TYPE_URL.to_string(),
        value: serde_json::to_vec(&process)
            .map_err(|e| Error::Internal(format!("encoding the exec process: {e}")))?,
        ..Default::default()
    })
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
