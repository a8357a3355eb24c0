//! The shim's log, as containerd carries it: a fifo `log` in the bundle that the
//! shim points its stdout/stderr at, read by berthd into its own log. Debian's
//! `containerd-shim-runc-v2` does not get past Create without a reader on it;
//! berth's shim writes to it when it is there.

use std::io;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

use crate::error::{IoContext, Result};

const FIFO: &str = "log";

/// Makes the fifo in the bundle. Blocks (a filesystem call); an existing one is fine.
pub fn create_fifo(bundle: &Path) -> Result<()> {
    let path = bundle.join(FIFO);
    match nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(io::Error::from(e)).context(|| format!("creating {}", path.display())),
    }
}

/// Copies the shim's lines into berthd's log until dropped.
pub struct ShimLog {
    task: JoinHandle<()>,
}

impl ShimLog {
    /// Opens the fifo for reading. Read-write, so that it neither blocks for a
    /// writer nor ends when one shim process closes it.
    pub fn open(bundle: &Path, pod_id: &str) -> Result<ShimLog> {
        let path = bundle.join(FIFO);
        let receiver = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&path)
            .context(|| format!("opening {}", path.display()))?;
        let pod_id = pod_id.to_string();
        let task = tokio::spawn(async move {
            let mut lines = BufReader::new(receiver).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(pod_id = %pod_id, "shim: {line}");
            }
        });
        Ok(ShimLog { task })
    }
}

impl Drop for ShimLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}
