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
use std::thread;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::error::{Context, Error, Result};
use crate::stdio::{open_fifo_writer, open_stdin};

/// A listening console socket in a directory of its own.
///
/// Whoever can bind the socket's path receives the pty master, that is the
/// keyboard and screen of `kubectl exec -it` into a root shell. So the
/// directory is made by `mkdtemp(3)`: a random name, created exclusively
/// (an existing path, a symlink included, is never accepted) with mode 0700,
/// so no other user can plant, replace or even reach the socket. It lives in
/// the temporary directory, as containerd's does, because bundle paths are
/// often too long for a unix socket address.
pub struct ConsoleSocket {
    listener: UnixListener,
    dir: PathBuf,
    path: PathBuf,
}

/// `mkdtemp` replaces the trailing X's with random characters.
const DIR_TEMPLATE: &str = "berth-pty-XXXXXX";
const SOCKET_NAME: &str = "pty.sock";

impl ConsoleSocket {
    pub fn new() -> Result<Self> {
        Self::new_in(&std::env::temp_dir())
    }

    fn new_in(parent: &Path) -> Result<Self> {
        let template = parent.join(DIR_TEMPLATE);
        let dir = mkdtemp(&template)
            .context(|| format!("create console directory in {}", parent.display()))?;
        let path = dir.join(SOCKET_NAME);
        match UnixListener::bind(&path) {
            Ok(listener) => Ok(ConsoleSocket {
                listener,
                dir,
                path,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(Error::io(
                    format!("bind console socket {}", path.display()),
                    e,
                ))
            }
        }
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

/// mkdtemp(3): a new directory, mode 0700, named from `template` with its
/// X's randomised; glibc retries other names on EEXIST and never opens an
/// existing path.
fn mkdtemp(template: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut bytes = std::ffi::CString::new(template.as_os_str().as_bytes())?.into_bytes_with_nul();
    // SAFETY: `bytes` is a writable NUL-terminated buffer that outlives the call.
    if unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) }.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    bytes.pop();
    Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        // Only what `new` made: the directory holds nothing else.
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn console_directory_is_fresh_private_and_removed() {
        let parent = tempfile::tempdir().unwrap();
        let a = ConsoleSocket::new_in(parent.path()).unwrap();
        let b = ConsoleSocket::new_in(parent.path()).unwrap();
        assert_ne!(a.dir, b.dir, "each console gets its own directory");
        let meta = std::fs::symlink_metadata(&a.dir).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        // SAFETY: geteuid has no preconditions.
        assert_eq!(meta.uid(), unsafe { libc::geteuid() });
        assert!(a.path().starts_with(&a.dir));
        let dir = a.dir.clone();
        drop(a);
        assert!(!dir.exists(), "removed with the socket");
    }
}
