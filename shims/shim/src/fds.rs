//! Keeping the shim's descriptors out of every process it runs.
//!
//! The runtime, its hooks, logging and publish binaries and (through them)
//! containers must inherit only the stdio they are given. Descriptors the shim
//! opens itself are close-on-exec already (std, nix and ttrpc all ask for it);
//! what remains is what the shim inherited: above all the ttrpc listener that
//! `start` hands over as fd 3 with close-on-exec cleared, which a hook or a
//! publish binary could otherwise `accept` on to speak for berthd.

use std::os::fd::RawFd;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use crate::error::{Context, Result};

/// The first descriptor past stdin, stdout and stderr.
const FIRST_NON_STDIO: RawFd = 3;

/// Marks every inherited descriptor above stderr close-on-exec (the shim
/// keeps using them; only its children lose them). Call before any thread
/// exists, so no descriptor is opened meanwhile.
pub fn close_inherited_on_exec() -> Result<()> {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .context(|| "list /proc/self/fd".to_string())?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= FIRST_NON_STDIO)
        .collect();
    for fd in fds {
        // SAFETY: only the descriptor flags of a number that is open (or, for
        // the directory listing's own fd, was: EBADF) are touched.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        match fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
            Ok(_) | Err(nix::errno::Errno::EBADF) => {}
            Err(e) => {
                return Err(crate::error::Error::io(
                    format!("mark fd {fd} close-on-exec"),
                    e,
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::*;

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD on a descriptor this test owns.
        unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        let file = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: dup of an open descriptor; the copy lacks FD_CLOEXEC, like
        // the listener `start` passes.
        let leaky = unsafe { OwnedFd::from_raw_fd(libc::dup(file.as_raw_fd())) };
        assert!(!cloexec(leaky.as_raw_fd()));
        close_inherited_on_exec().unwrap();
        assert!(cloexec(leaky.as_raw_fd()));
    }
}
