//! A container's output: fifos in its bundle that the shim hands to the container,
//! and copiers that move what arrives into the CRI log file. The fifos are opened
//! read-write so that reading never meets end-of-file while no writer is attached
//! (before the task starts, or across a berthd restart); the copiers stop when the
//! container has exited and the fifos are drained.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::stat::Mode;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use crate::error::{Error, IoContext, Result};
use crate::logs::{LogFile, Stream};

/// After exit, how long a fifo may stay silent before it counts as drained.
const DRAIN_QUIET: Duration = Duration::from_millis(100);

pub fn stdout_path(bundle: &Path) -> PathBuf {
    bundle.join("stdout")
}

pub fn stderr_path(bundle: &Path) -> PathBuf {
    bundle.join("stderr")
}

/// Makes the output fifos; a tty container has only stdout.
pub fn make_fifos(bundle: &Path, tty: bool) -> Result<()> {
    let mut paths = vec![stdout_path(bundle)];
    if !tty {
        paths.push(stderr_path(bundle));
    }
    for path in paths {
        match nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => {
                return Err(Error::Io {
                    context: format!("creating fifo {}", path.display()),
                    source: e.into(),
                });
            }
        }
    }
    Ok(())
}

/// The copiers of one container, and the log file they write.
pub struct Output {
    pub log: Option<Arc<LogFile>>,
    exited: watch::Sender<bool>,
}

impl Output {
    /// Starts copying the container's fifos into `log_path` (or discarding them
    /// when the kubelet asked for no log).
    pub fn start(bundle: &Path, tty: bool, log_path: Option<&Path>) -> Result<Output> {
        let log = match log_path {
            Some(p) => Some(LogFile::open(p).context(|| format!("opening log {}", p.display()))?),
            None => None,
        };
        let (exited, watcher) = watch::channel(false);
        let mut streams = vec![(stdout_path(bundle), Stream::Stdout)];
        if !tty {
            streams.push((stderr_path(bundle), Stream::Stderr));
        }
        for (path, stream) in streams {
            let reader = pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(&path)
                .context(|| format!("opening fifo {}", path.display()))?;
            let log = log.clone();
            let watcher = watcher.clone();
            tokio::spawn(async move {
                if let Err(e) = copy(reader, stream, log, watcher).await {
                    tracing::warn!(fifo = %path.display(), error = %e, "copying container output");
                }
            });
        }
        Ok(Output { log, exited })
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
}

impl Drop for Output {
    fn drop(&mut self) {
        let _ = self.exited.send(true);
    }
}

async fn copy(
    mut reader: pipe::Receiver,
    stream: Stream,
    log: Option<Arc<LogFile>>,
    mut exited: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut lines = crate::logs::LineWriter::new(stream, log);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = read?;
                lines.push(&buf[..n])?;
            }
            _ = exited.wait_for(|done| *done) => break,
        }
    }
    // Drained once nothing more arrives for a moment: the writers are gone.
    while let Ok(read) = tokio::time::timeout(DRAIN_QUIET, reader.read(&mut buf)).await {
        let n = read?;
        if n == 0 {
            break;
        }
        lines.push(&buf[..n])?;
    }
    lines.finish()
}
