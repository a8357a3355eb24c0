//! Attach: a client joins a running container's own stdio. Its output comes from
//! the live feed of the copiers that write the container's log, so the log loses
//! nothing and a slow client only loses what it fell behind on; its input goes to
//! the stdin berthd holds open for containers whose config asks for stdin.
//!
//! As containerd does: the session ends when the container's output ends (it
//! exited), when the client goes, or when the client's input ends — which, for a
//! `stdin_once` container without a terminal, first closes the container's stdin
//! and then follows its output to the end.

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use super::io::Chunk;
use super::service::ContainerService;
use super::stdio::{ProcessStreams, forward_resizes};
use crate::error::{Error, Result};
use crate::logs::Stream;

impl ContainerService {
    /// Attaches `streams` to container `id` until the session ends.
    pub async fn attach(&self, id: &str, streams: ProcessStreams) -> Result<()> {
        let record = self.get(id)?;
        if !record.phase.can_attach() {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        let output = self.output(&record.id).ok_or_else(|| {
            Error::FailedPrecondition(format!("container {} has no output to attach", record.id))
        })?;
        let Some(mut feed) = output.subscribe() else {
            // It exited in the meantime and everything it wrote is in the log.
            return Ok(());
        };
        let (_, task) = self.task_of(&record)?;
        let tty = record.config.tty;
        let ProcessStreams {
            stdin,
            stdout,
            stderr,
            resize,
            ..
        } = streams;
        let resizer = resize.filter(|_| tty).map(|sizes| {
            tokio::spawn(forward_resizes(
                sizes,
                task.clone(),
                record.id.clone(),
                String::new(),
            ))
        });
        // Input for a container without stdin has nowhere to go and is dropped.
        let mut input = stdin.filter(|_| output.has_stdin());
        let close_stdin_at_end = record.config.stdin_once && !tty;

        loop {
            tokio::select! {
                chunk = next(&mut feed) => {
                    let Some((stream, data)) = chunk else { break };
                    let sink = if tty || stream == Stream::Stdout { &stdout } else { &stderr };
                    if let Some(sink) = sink
                        && sink.send(data).await.is_err()
                    {
                        break;
                    }
                }
                data = recv_input(&mut input) => match data {
                    Some(data) => {
                        if !output.write_stdin(data).await {
                            input = None;
                        }
                    }
                    None if close_stdin_at_end => {
                        input = None;
                        output.close_stdin().await;
                        if let Err(e) = task.close_stdin(&record.id, "").await {
                            tracing::debug!(container_id = %record.id, error = %e, "closing stdin");
                        }
                    }
                    None => break,
                },
                () = client_gone(&stdout, &stderr) => break,
            }
        }
        if let Some(resizer) = resizer {
            resizer.abort();
        }
        Ok(())
    }
}

/// The next piece of output; `None` once the container's output has ended.
async fn next(feed: &mut broadcast::Receiver<Chunk>) -> Option<Chunk> {
    loop {
        match feed.recv().await {
            Ok(chunk) => return Some(chunk),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "attach client too slow: output chunks skipped");
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// The client's next input; never resolves without an input stream.
async fn recv_input(input: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match input {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the client no longer takes output.
async fn client_gone(stdout: &Option<mpsc::Sender<Bytes>>, stderr: &Option<mpsc::Sender<Bytes>>) {
    match (stdout, stderr) {
        (Some(out), _) => out.closed().await,
        (None, Some(err)) => err.closed().await,
        (None, None) => std::future::pending().await,
    }
}
