//! A process's stdio as berthd moves it: fifos in the bundle that the shim hands
//! to the process, and the pumps between those fifos and the channels of whoever
//! is attached (an exec or attach session, ExecSync's collector).
//!
//! berthd holds a writer of its own on each output fifo while the process runs,
//! so that its reader never meets end-of-file while no other writer is attached
//! (before the shim opens its end, across a berthd restart). Once the process
//! has exited that writer goes, and the output is complete at end-of-file: when
//! the process, and the shim's terminal copy that may trail it, have closed
//! theirs. A writer that outlives the process (a background child holding the
//! output) is waited for only while it keeps writing.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::stat::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

use crate::error::{Error, IoContext, Result};
use crate::shim::TaskClient;

/// After exit, how long a fifo with writers left may stay silent before its
/// output counts as complete.
const DRAIN_QUIET: Duration = Duration::from_secs(1);
/// Output buffers start small, since most containers say little, and grow to the
/// largest size when a read fills them: hundreds of quiet containers then cost
/// kilobytes, not a 32 KiB buffer per stream each.
const READ_BUFFER_FIRST: usize = 2 * 1024;
const READ_BUFFER_MAX: usize = 32 * 1024;

/// A terminal size, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// The far end of a process's stdio: what a streaming client (or ExecSync) sends
/// and receives. A `None` stream is not wanted; a closed `stdin` channel is the
/// end of input. With `tty`, output is one stream, `stdout`.
#[derive(Debug, Default)]
pub struct ProcessStreams {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    pub tty: bool,
}

/// Makes a fifo; one left by an earlier berthd is reused.
pub(super) fn make_fifo(path: &Path) -> Result<()> {
    match nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::Io {
            context: format!("creating fifo {}", path.display()),
            source: e.into(),
        }),
    }
}

/// berthd's ends of an output fifo: its reader, and the writer that keeps the
/// reader from seeing end-of-file until the process has exited.
pub(super) struct OutputFifo {
    reader: pipe::Receiver,
    keepalive: std::fs::File,
}

pub(super) fn open_reader(path: &Path) -> Result<OutputFifo> {
    let context = || format!("opening fifo {}", path.display());
    // Read side first: a non-blocking open for writing needs a reader.
    let reader = pipe::OpenOptions::new()
        .open_receiver(path)
        .context(context)?;
    let keepalive = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .context(context)?;
    Ok(OutputFifo { reader, keepalive })
}

/// berthd's writing end of a stdin fifo.
pub(super) fn open_writer(path: &Path) -> Result<pipe::Sender> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .context(|| format!("opening fifo {}", path.display()))
}

/// Reads an output fifo until `exited` says the process is gone and the fifo
/// has reached its end.
pub(super) struct Drain {
    reader: pipe::Receiver,
    keepalive: Option<std::fs::File>,
    exited: watch::Receiver<bool>,
    buf: Vec<u8>,
}

impl Drain {
    pub(super) fn new(fifo: OutputFifo, exited: watch::Receiver<bool>) -> Drain {
        Drain {
            reader: fifo.reader,
            keepalive: Some(fifo.keepalive),
            exited,
            buf: vec![0u8; READ_BUFFER_FIRST],
        }
    }

    /// The next chunk; `None` at the end.
    pub(super) async fn next(&mut self) -> io::Result<Option<&[u8]>> {
        let mut n = None;
        if self.keepalive.is_some() {
            n = tokio::select! {
                read = self.reader.read(&mut self.buf) => Some(read?),
                _ = self.exited.wait_for(|done| *done) => None,
            };
        }
        let n = match n {
            Some(n) => n,
            None => {
                self.keepalive = None;
                match tokio::time::timeout(DRAIN_QUIET, self.reader.read(&mut self.buf)).await {
                    Ok(read) => read?,
                    Err(_) => 0,
                }
            }
        };
        if n == self.buf.len() && n < READ_BUFFER_MAX {
            // Full: there is likely more. The next read gets a larger buffer; this
            // chunk moves along with it.
            self.buf.resize((n * 4).min(READ_BUFFER_MAX), 0);
        }
        Ok((n > 0).then(|| &self.buf[..n]))
    }
}

/// Moves a process's output to `to` until it has exited and the fifo is
/// drained. A client that went away is not waited for: the rest is read and
/// dropped, so the process never blocks on a full fifo.
pub(super) async fn pump_out(
    reader: OutputFifo,
    to: mpsc::Sender<Bytes>,
    exited: watch::Receiver<bool>,
) {
    let mut to = Some(to);
    let mut drain = Drain::new(reader, exited);
    loop {
        match drain.next().await {
            Ok(Some(chunk)) => {
                if let Some(tx) = &to
                    && tx.send(Bytes::copy_from_slice(chunk)).await.is_err()
                {
                    to = None;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "reading process output");
                return;
            }
        }
    }
}

/// Writes what arrives on `from` into a stdin fifo until the input ends (the
/// channel closes) or the process stops reading for good. Returns whether the
/// input ended, as opposed to the fifo failing.
pub(super) async fn pump_in(mut from: mpsc::Receiver<Bytes>, to: &mut pipe::Sender) -> bool {
    while let Some(chunk) = from.recv().await {
        if let Err(e) = to.write_all(&chunk).await {
            tracing::debug!(error = %e, "writing process input");
            return false;
        }
    }
    true
}

/// Passes a client's terminal resizes to the shim until the client stops sending.
pub(super) async fn forward_resizes(
    mut sizes: mpsc::Receiver<TerminalSize>,
    task: TaskClient,
    id: String,
    exec_id: String,
) {
    while let Some(size) = sizes.recv().await {
        let (width, height) = (u32::from(size.width), u32::from(size.height));
        if let Err(e) = task.resize_pty(&id, &exec_id, width, height).await {
            tracing::debug!(container_id = %id, exec_id = %exec_id, error = %e, "resizing a terminal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(mut rx: mpsc::Receiver<Bytes>) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(chunk) = rx.recv().await {
            all.extend_from_slice(&chunk);
        }
        all
    }

    #[tokio::test]
    async fn output_is_complete_at_end_of_file_after_the_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        make_fifo(&path).unwrap();
        make_fifo(&path).unwrap();
        let fifo = open_reader(&path).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let (exited_tx, exited) = watch::channel(false);
        let pump = tokio::spawn(pump_out(fifo, tx, exited));
        let mut writer = open_writer(&path).unwrap();
        writer.write_all(b"hello ").await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"hello "));
        // A terminal's output copy may trail the exit by a while: still delivered,
        // and the end comes when it closes, not after a quiet period.
        exited_tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.write_all(b"world").await.unwrap();
        drop(writer);
        let started = std::time::Instant::now();
        assert_eq!(collect(rx).await, b"world");
        assert!(
            started.elapsed() < DRAIN_QUIET / 2,
            "{:?}",
            started.elapsed()
        );
        pump.await.unwrap();
    }

    #[tokio::test]
    async fn a_writer_that_outlives_the_process_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        make_fifo(&path).unwrap();
        let fifo = open_reader(&path).unwrap();
        let (tx, rx) = mpsc::channel(4);
        let (exited_tx, exited) = watch::channel(false);
        let pump = tokio::spawn(pump_out(fifo, tx, exited));
        // A background child holding the output open, silent.
        let mut lingering = open_writer(&path).unwrap();
        lingering.write_all(b"bye").await.unwrap();
        exited_tx.send(true).unwrap();
        // The writer stays open to the end of the test: a pump that waited for
        // it would never finish, so the guard turns that hang into a failure.
        let drained = tokio::time::timeout(DEPARTED_CLIENT_DEADLINE, collect(rx)).await;
        assert_eq!(
            drained.expect("waited for a writer that outlived the process"),
            b"bye"
        );
        pump.await.unwrap();
        drop(lingering);
    }

    #[tokio::test]
    async fn a_departed_client_does_not_block_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        make_fifo(&path).unwrap();
        let fifo = open_reader(&path).unwrap();
        let mut writer = open_writer(&path).unwrap();
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let (exited_tx, exited) = watch::channel(false);
        let pump = tokio::spawn(pump_out(fifo, tx, exited));
        // Far more than a fifo holds: the write finishes only if the pump keeps
        // draining with no one to hand the output to. A regression would block
        // here, so the test fails on a deadline instead of hanging.
        let run = async move {
            writer.write_all(&vec![b'x'; 1 << 20]).await.unwrap();
            drop(writer);
            exited_tx.send(true).unwrap();
            pump.await.unwrap();
        };
        tokio::time::timeout(DEPARTED_CLIENT_DEADLINE, run)
            .await
            .expect("the pump blocked on a departed client");
    }

    /// Draining 1 MiB through a fifo takes milliseconds; this only stops a hang.
    const DEPARTED_CLIENT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

    #[tokio::test]
    async fn input_is_pumped_until_the_channel_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        make_fifo(&path).unwrap();
        let mut fifo = open_reader(&path).unwrap();
        let mut writer = open_writer(&path).unwrap();
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        drop(tx);
        assert!(pump_in(rx, &mut writer).await);
        let mut buf = [0u8; 3];
        fifo.reader.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"abc");
    }
}
