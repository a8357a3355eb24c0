//! Pod network namespaces as bind-mounted files (`/run/berth/netns/<pod-id>`), the
//! way `ip netns add` makes them: the namespace lives as long as the mount, with no
//! process holding it, so the infra container and CNI plugins can join it by path.
//!
//! Every function here but [`tcp_sockets_in`] blocks (a thread join, mount
//! syscalls): call them from `spawn_blocking`, never on an async worker.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::NetworkError;

/// A network namespace pinned by a bind mount at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    path: PathBuf,
}

impl NetNs {
    /// The bind-mounted file; what goes into CNI_NETNS and the OCI spec.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts and deletes the namespace file; see [`remove`].
    pub fn remove(&self) -> Result<(), NetworkError> {
        remove(&self.path)
    }
}

/// Serialises making `dir` a mount point: two pods started at once must not both
/// bind it onto itself and stack two mounts.
static DIR_SETUP: Mutex<()> = Mutex::new(());

/// Creates a fresh network namespace pinned at `dir/name`. Nothing inside is
/// configured; `lo` comes up through the loopback CNI plugin.
pub fn create(dir: &Path, name: &str) -> Result<NetNs, NetworkError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(NetworkError::Netns {
            path: dir.join(name),
            op: "create",
            source: io::Error::new(io::ErrorKind::InvalidInput, "bad namespace name"),
        });
    }
    let path = dir.join(name);
    let fail = |op: &'static str| {
        let path = path.clone();
        move |source: io::Error| NetworkError::Netns { path, op, source }
    };
    std::fs::create_dir_all(dir).map_err(fail("create directory"))?;
    make_shared_mount_point(dir).map_err(fail("make directory a shared mount"))?;
    // create_new: a leftover file from a crash is someone else's namespace until
    // `remove` says otherwise.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(fail("create mount point file"))?;

    // unshare(CLONE_NEWNET) changes the calling thread for good, so it happens on a
    // thread of its own that exits afterwards; a tokio worker or a pooled thread
    // would go on running in the pod's namespace.
    let target = path.clone();
    let pinned = std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || pin_new_netns(&target))
        .map_err(fail("spawn thread"))
        .and_then(|handle| {
            handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
                .map_err(fail("unshare and bind mount"))
        });
    if let Err(e) = pinned {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    tracing::debug!(path = %path.display(), "created network namespace");
    Ok(NetNs { path })
}

/// Runs on a throwaway thread: moves it into a new network namespace and binds
/// that namespace onto `target`.
fn pin_new_netns(target: &Path) -> io::Result<()> {
    // SAFETY: unshare takes no pointers; it affects only this thread, which is
    // discarded when the closure returns.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    mount(
        Some("/proc/thread-self/ns/net"),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// Makes `dir` (created if missing) the shared mount point namespace files are
/// pinned under, for namespaces pinned by other code (a pod's user namespace
/// owns its network namespace, so it is made there).
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    make_shared_mount_point(dir)
}

/// As `ip netns` does for /run/netns: the directory becomes a mount point with
/// shared propagation, so the namespace mounts under it reach mount namespaces
/// copied later (shims, containers) and their unmounts do too, instead of leaving
/// copies that pin dead namespaces.
fn make_shared_mount_point(dir: &Path) -> io::Result<()> {
    let _guard = DIR_SETUP.lock().unwrap_or_else(|p| p.into_inner());
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, dir, None::<&str>, shared, None::<&str>) {
        Ok(()) => return Ok(()),
        // EINVAL: not a mount point yet.
        Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(e.into()),
    }
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    mount(None::<&str>, dir, None::<&str>, shared, None::<&str>)?;
    Ok(())
}

/// Makes an unconnected, non-blocking TCP socket for IPv4, and one for IPv6 if
/// the namespace has it, in the namespace pinned at `netns` (berthd's own with `None`), for the
/// caller to connect asynchronously: a socket stays in the namespace it was made
/// in. Only `socket(2)` runs in the namespace, on a throwaway thread that joins
/// it, and never waits on the network: a dial neither holds a thread while it
/// connects nor takes one from the blocking pool that unpacking, stats and CNI
/// share. Does not block the caller.
pub async fn tcp_sockets_in(netns: Option<&Path>) -> io::Result<(OwnedFd, io::Result<OwnedFd>)> {
    let Some(path) = netns else {
        return Ok((tcp_socket(libc::AF_INET)?, tcp_socket(libc::AF_INET6)));
    };
    let path = path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let made = std::fs::File::open(&path).and_then(|ns| {
                // SAFETY: setns takes a descriptor we own and no pointers; it moves
                // only this thread, which ends when the closure returns.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok((tcp_socket(libc::AF_INET)?, tcp_socket(libc::AF_INET6)))
            });
            let _ = tx.send(made);
        })?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
}

fn tcp_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers; a descriptor it returns is ours alone.
    let fd = unsafe { libc::socket(family, flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Unmounts (lazily, in case a plugin still holds it) and deletes a namespace file.
/// A path that is gone or no longer mounted is fine: remove is idempotent.
pub fn remove(path: &Path) -> Result<(), NetworkError> {
    let fail = |op: &'static str| {
        move |source: io::Error| NetworkError::Netns {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    if is_mounted(path) {
        match umount2(path, MntFlags::MNT_DETACH) {
            // Lost a race with another remove of the same namespace.
            Ok(()) | Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(fail("unmount")(e.into())),
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail("delete")(e)),
    }
    tracing::debug!(path = %path.display(), "removed network namespace");
    Ok(())
}

/// Whether `path` is a live namespace mount (and not a leftover empty file): the
/// CNI spec wants an empty CNI_NETNS for DEL when the namespace is gone.
pub(crate) fn is_mounted(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["", "a/b", "..", "."] {
            assert!(create(dir.path(), name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn removing_what_is_not_there_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        remove(&dir.path().join("never-created")).unwrap();
        // A plain file (a crash between create and mount) is deleted too.
        let stale = dir.path().join("stale");
        std::fs::write(&stale, "").unwrap();
        assert!(!is_mounted(&stale));
        remove(&stale).unwrap();
        assert!(!stale.exists());
    }
}
