//! A container's own stdio: fifos in its bundle that the shim hands to the
//! container, copiers that move its output into the CRI log file and on to a live
//! feed that attach sessions subscribe to, and, for a container whose config asks
//! for stdin, the writer berthd keeps open on its stdin fifo for attach. The
//! copiers stop when the container has exited and the fifos are drained.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc, watch};

use super::stdio::{Drain, make_fifo, open_reader, open_writer};
use crate::error::{IoContext, Result};
use crate::logs::{LogFile, Stream};

/// Output chunks an attach session may fall behind by before it loses some: the
/// log never waits for a slow client.
const FEED_CAPACITY: usize = 64;
/// Input chunks queued for the container's stdin.
const STDIN_QUEUE: usize = 16;

/// A piece of the container's output, as the live feed carries it.
pub type Chunk = (Stream, Bytes);

pub fn stdout_path(bundle: &Path) -> PathBuf {
    bundle.join("stdout")
}

pub fn stderr_path(bundle: &Path) -> PathBuf {
    bundle.join("stderr")
}

pub fn stdin_path(bundle: &Path) -> PathBuf {
    bundle.join("stdin")
}

/// Makes the fifos: a tty container has only stdout; stdin only when asked for.
pub fn make_fifos(bundle: &Path, tty: bool, stdin: bool) -> Result<()> {
    make_fifo(&stdout_path(bundle))?;
    if !tty {
        make_fifo(&stderr_path(bundle))?;
    }
    if stdin {
        make_fifo(&stdin_path(bundle))?;
    }
    Ok(())
}

/// How the copiers open the container's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOpening {
    /// At create: a log that cannot be opened fails the call.
    Required,
    /// At recovery: the container already runs and its output must be drained
    /// whatever the log disk does, so a log that cannot be opened is retried.
    Retried,
}

/// The copiers of one container, the log file they write, its live output and
/// its stdin.
pub struct Output {
    pub log: Option<Arc<LogFile>>,
    exited: watch::Sender<bool>,
    /// The copiers hold the strong senders, so the feed closes when they finish.
    feed: broadcast::WeakSender<Chunk>,
    stdin: Option<mpsc::Sender<StdinMessage>>,
}

enum StdinMessage {
    Data(Bytes),
    Close,
}

impl Output {
    /// Starts copying the container's fifos into `log_path` (or discarding them
    /// when the kubelet asked for no log), and opens its stdin fifo when `stdin`.
    pub fn start(
        bundle: &Path,
        tty: bool,
        stdin: bool,
        log_path: Option<&Path>,
        opening: LogOpening,
    ) -> Result<Output> {
        let log = match (log_path, opening) {
            (Some(p), LogOpening::Required) => {
                Some(LogFile::open(p).context(|| format!("opening log {}", p.display()))?)
            }
            (Some(p), LogOpening::Retried) => Some(LogFile::open_or_retry(p)),
            (None, _) => None,
        };
        let (exited, watcher) = watch::channel(false);
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let mut streams = vec![(stdout_path(bundle), Stream::Stdout)];
        if !tty {
            streams.push((stderr_path(bundle), Stream::Stderr));
        }
        for (path, stream) in streams {
            let reader = open_reader(&path)?;
            let (log, watcher, feed) = (log.clone(), watcher.clone(), feed.clone());
            tokio::spawn(async move {
                if let Err(e) = copy(Drain::new(reader, watcher), stream, log, feed).await {
                    tracing::warn!(fifo = %path.display(), error = %e, "copying container output");
                }
            });
        }
        // A container recorded before berth kept stdin fifos has none to open.
        let stdin_fifo = Some(stdin_path(bundle)).filter(|p| stdin && p.exists());
        let stdin = if let Some(path) = stdin_fifo {
            let writer = open_writer(&path)?;
            let (tx, rx) = mpsc::channel(STDIN_QUEUE);
            tokio::spawn(write_stdin(writer, rx));
            Some(tx)
        } else {
            None
        };
        Ok(Output {
            log,
            exited,
            feed: feed.downgrade(),
            stdin,
        })
    }

    /// The container exited: copiers drain what is left and stop.
    pub fn finish(&self) {
        let _ = self.exited.send(true);
    }

    pub fn reopen(&self) -> Result<()> {
        if let Some(log) = &self.log {
            log.reopen()
                .context(|| "reopening the container log".into())?;
        }
        Ok(())
    }

    /// The container's output from now on; `None` once it has all been copied.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Chunk>> {
        self.feed.upgrade().map(|feed| feed.subscribe())
    }

    /// Whether the container has a stdin berthd can write.
    pub fn has_stdin(&self) -> bool {
        self.stdin.is_some()
    }

    /// Queues input for the container; false once its stdin is gone.
    pub async fn write_stdin(&self, data: Bytes) -> bool {
        match &self.stdin {
            Some(tx) => tx.send(StdinMessage::Data(data)).await.is_ok(),
            None => false,
        }
    }

    /// Closes berthd's writer on the stdin fifo, after the input queued before.
    pub async fn close_stdin(&self) {
        if let Some(tx) = &self.stdin {
            let _ = tx.send(StdinMessage::Close).await;
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        let _ = self.exited.send(true);
    }
}

/// Copies one output stream into the log, and to attach sessions when there are
/// any. Only a failed read of the fifo ends it early: a log the disk does not
/// take drops output rather than leave the container blocked on a full fifo.
async fn copy(
    mut drain: Drain,
    stream: Stream,
    log: Option<Arc<LogFile>>,
    feed: broadcast::Sender<Chunk>,
) -> std::io::Result<()> {
    let mut lines = crate::logs::LineWriter::new(stream, log);
    while let Some(chunk) = drain.next().await? {
        lines.push(chunk);
        if feed.receiver_count() > 0 {
            let _ = feed.send((stream, Bytes::copy_from_slice(chunk)));
        }
    }
    lines.finish();
    Ok(())
}

/// Owns berthd's writer on a container's stdin fifo. A write waits while the
/// container does not read, which only holds up the attach sessions feeding it.
async fn write_stdin(
    writer: tokio::net::unix::pipe::Sender,
    mut queue: mpsc::Receiver<StdinMessage>,
) {
    let mut writer = Some(writer);
    while let Some(message) = queue.recv().await {
        match message {
            StdinMessage::Data(data) => {
                if let Some(w) = writer.as_mut()
                    && let Err(e) = w.write_all(&data).await
                {
                    tracing::debug!(error = %e, "writing container stdin");
                    writer = None;
                }
            }
            // The container reads end-of-file once the shim's writer goes too.
            StdinMessage::Close => writer = None,
        }
    }
}
