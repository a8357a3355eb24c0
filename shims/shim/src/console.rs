//! Terminals: the runtime's console socket, and the two copy loops between
//! the pty master and containerd's fifos.
//!
//! The runtime creates the pty inside the container and sends the master over
//! a unix socket (SCM_RIGHTS). The shim copies master -> stdout fifo and
//! stdin fifo -> master on two small threads, with blocking writes so a slow
//! reader slows the process instead of losing output.

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::error::{Context, Error, Result};
use crate::stdio::{open_fifo_writer, open_stdin};

/// A listening console socket in a private temporary directory (bundle paths
/// are often too long for a unix socket address).
pub struct ConsoleSocket {
    listener: UnixListener,
    dir: PathBuf,
    path: PathBuf,
}

impl ConsoleSocket {
    pub fn new() -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "berth-pty-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
        let path = dir.join("pty.sock");
        let listener = UnixListener::bind(&path)
            .context(|| format!("bind console socket {}", path.display()))?;
        Ok(ConsoleSocket {
            listener,
            dir,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives the pty master the runtime sent. Called after the runtime
    /// command returned: its connection and message wait in the backlog.
    pub fn receive_master(&self) -> Result<OwnedFd> {
        self.listener
            .set_nonblocking(true)
            .context(|| "console socket nonblocking".to_string())?;
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|e| Error::io("the runtime did not connect to the console socket", e))?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context(|| "receive pty master".to_string())?;
        for cmsg in msg
            .cmsgs()
            .context(|| "read pty master message".to_string())?
        {
            if let ControlMessageOwned::ScmRights(fds) = cmsg
                && let Some(&fd) = fds.first()
            {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        Err(Error::FailedPrecondition(
            "the runtime sent no pty master".to_string(),
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running terminal: the master, and the stdin copy it can be told to stop.
pub struct Console {
    master: Arc<File>,
    /// Dropping this ends the stdin copy (its poll sees the pipe hang up).
    stop_stdin: Option<OwnedFd>,
    stdin_keepalive: Option<OwnedFd>,
}

impl Console {
    /// Starts copying between `master` and the process's fifos.
    pub fn start(master: OwnedFd, stdin: &str, stdout: &str) -> Result<Console> {
        let master = Arc::new(File::from(master));
        if !stdout.is_empty() {
            let out = File::from(open_fifo_writer(stdout)?);
            let m = Arc::clone(&master);
            thread::Builder::new()
                .name("pty-out".into())
                .stack_size(64 * 1024)
                .spawn(move || copy_out(&m, out))
                .context(|| "spawn pty copy thread".to_string())?;
        }
        let mut console = Console {
            master,
            stop_stdin: None,
            stdin_keepalive: None,
        };
        if !stdin.is_empty() {
            let (reader, keepalive) = open_stdin(stdin)?;
            let (stop_r, stop_w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context(|| "pipe".to_string())?;
            let m = Arc::clone(&console.master);
            thread::Builder::new()
                .name("pty-in".into())
                .stack_size(64 * 1024)
                .spawn(move || copy_in(File::from(reader), &m, stop_r))
                .context(|| "spawn pty copy thread".to_string())?;
            console.stop_stdin = Some(stop_w);
            console.stdin_keepalive = Some(keepalive);
        }
        Ok(console)
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let ws = libc::winsize {
            ws_row: height as u16,
            ws_col: width as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(Error::io("resize pty", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// CloseIO: containerd closed its stdin writer; let EOF through.
    pub fn close_stdin(&mut self) {
        self.stdin_keepalive = None;
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.stop_stdin = None;
    }
}

fn copy_out(master: &File, mut out: File) {
    let mut buf = [0u8; 8192];
    loop {
        match (&*master).read(&mut buf) {
            // EIO: every slave fd closed, the process is gone.
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
}

/// Ctrl-D, the terminal's default end-of-file character.
const VEOF: u8 = 0x04;

fn copy_in(mut stdin: File, master: &File, stop: OwnedFd) {
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        match stdin.read(&mut buf) {
            Ok(0) => {
                // stdin was closed (CloseIO): a terminal has no half-close,
                // so type the EOF character, as a user would.
                let _ = (&*master).write_all(&[VEOF]);
                return;
            }
            Err(_) => return,
            Ok(n) => {
                if (&*master).write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
