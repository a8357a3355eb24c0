//! A pod's user namespace pinned on a file, as its network namespace is: a helper
//! process unshares a new user namespace, berthd writes its uid_map and gid_map,
//! the helper (now privileged in it) unshares a network namespace that the user
//! namespace owns, and both are bind-mounted from /proc/<helper>/ns before the
//! helper is killed. runc then joins both by path.
//!
//! The network namespace must be the user namespace's own: a process inside the
//! user namespace may neither join (setns) nor mount sysfs for a network namespace
//! owned by the host's user namespace.
//!
//! Everything here blocks (fork, waits, mounts): call it from `spawn_blocking`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::mapping::UserNamespace;

/// What the helper is asked to do after its user namespace has its maps.
const GO: u8 = b'g';
/// The helper's answer for a step that worked; anything else is an errno byte.
const OK: u8 = 0;

/// Creates the pod's user namespace with `userns`'s mappings, pinned at
/// `user_path`, and with `net_path` a network namespace it owns, pinned there.
/// Both files are created (and must not exist); on failure nothing is left.
pub fn create(userns: &UserNamespace, user_path: &Path, net_path: Option<&Path>) -> io::Result<()> {
    let paths: Vec<&Path> = std::iter::once(user_path).chain(net_path).collect();
    for path in &paths {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| context(e, "creating", path))?;
    }
    let made = Helper::spawn(net_path.is_some()).and_then(|helper| {
        let pinned = helper.configure(userns).and_then(|()| {
            bind(&helper.ns("user"), user_path)?;
            if let Some(net) = net_path {
                bind(&helper.ns("net"), net)?;
            }
            Ok(())
        });
        helper.end();
        pinned
    });
    if made.is_err() {
        for path in &paths {
            let _ = remove(path);
        }
    }
    made
}

/// Unmounts and deletes a pinned namespace file; one already gone is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(context(e.into(), "unmounting", path)),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(context(e, "deleting", path)),
        _ => Ok(()),
    }
}

/// The namespace file opened, for `mount_setattr`'s `userns_fd`.
pub fn open(path: &Path) -> io::Result<File> {
    File::open(path).map_err(|e| context(e, "opening", path))
}

fn bind(source: &Path, target: &Path) -> io::Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| context(e.into(), "bind-mounting the namespace on", target))
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// The forked helper, talking over two pipes.
struct Helper {
    pid: libc::pid_t,
    to_child: File,
    from_child: File,
    with_net: bool,
}

impl Helper {
    fn spawn(with_net: bool) -> io::Result<Helper> {
        let (down_r, down_w) = pipe()?;
        let (up_r, up_w) = pipe()?;
        // SAFETY: the child runs only async-signal-safe calls (unshare, read,
        // write, _exit) on descriptors it owns, then exits without unwinding.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            child(down_r.as_raw_fd(), up_w.as_raw_fd(), with_net);
        }
        drop((down_r, up_w));
        let helper = Helper {
            pid,
            to_child: File::from(down_w),
            from_child: File::from(up_r),
            with_net,
        };
        if let Err(e) = helper.answer("unsharing a user namespace") {
            helper.end();
            return Err(e);
        }
        Ok(helper)
    }

    /// Writes the maps, then lets the helper make its network namespace.
    fn configure(&self, userns: &UserNamespace) -> io::Result<()> {
        // No setgroups denial: berthd has CAP_SETGID over the new namespace.
        for (file, text) in [("uid_map", userns.uid_map()), ("gid_map", userns.gid_map())] {
            let path = format!("/proc/{}/{file}", self.pid);
            std::fs::write(&path, text.as_bytes())
                .map_err(|e| context(e, "writing", Path::new(&path)))?;
        }
        (&self.to_child).write_all(&[GO])?;
        if self.with_net {
            self.answer("unsharing a network namespace in the user namespace")?;
        }
        Ok(())
    }

    fn ns(&self, name: &str) -> std::path::PathBuf {
        format!("/proc/{}/ns/{name}", self.pid).into()
    }

    fn answer(&self, step: &str) -> io::Result<()> {
        let mut byte = [0u8];
        (&self.from_child)
            .read_exact(&mut byte)
            .map_err(|e| io::Error::new(e.kind(), format!("{step}: the helper died: {e}")))?;
        match byte[0] {
            OK => Ok(()),
            errno => {
                let e = io::Error::from_raw_os_error(i32::from(errno));
                Err(io::Error::new(e.kind(), format!("{step}: {e}")))
            }
        }
    }

    fn end(self) {
        // SAFETY: kill and waitpid on our own child, no pointers but a null status.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// The helper's body; never returns.
fn child(down: libc::c_int, up: libc::c_int, with_net: bool) -> ! {
    // SAFETY: async-signal-safe calls only, on our own descriptors and a stack byte.
    unsafe {
        let report = |ok: bool| {
            let byte: u8 = if ok {
                OK
            } else {
                (*libc::__errno_location()).clamp(1, 255) as u8
            };
            libc::write(up, (&byte as *const u8).cast(), 1);
        };
        let user = libc::unshare(libc::CLONE_NEWUSER) == 0;
        report(user);
        let mut go = 0u8;
        if !user || libc::read(down, (&mut go as *mut u8).cast(), 1) != 1 {
            libc::_exit(1);
        }
        if with_net {
            report(libc::unshare(libc::CLONE_NEWNET) == 0);
        }
        // Held until berthd has pinned the namespaces and kills us.
        libc::read(down, (&mut go as *mut u8).cast(), 1);
        libc::_exit(0)
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just returned by pipe2 and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
