//! Who on the host may read what berthd keeps: the modes of its directories and
//! files, set when they are made and repaired at start for what an older berth left.
//!
//! The rule is containerd's (its snapshotter and content roots are 0700): nothing of
//! a container's or an image's is reachable by a local user. Image and container
//! filesystems, bundles (their `config.json` holds the containers' env, often
//! secrets), the store and ingest live under 0700 directories; the root and state
//! directories are 0711 so that root-owned children can still be named; logs are
//! 0640, as containerd writes them.
//!
//! berthd itself runs with umask 077, so anything made without an explicit mode is
//! private. What a container must read (its overlay root, the pod's hosts and
//! resolv.conf, volume directories made for it) is given its mode explicitly, and the
//! processes berthd starts (shims, runc, CNI plugins) get the usual 022 back, since
//! what they create inside a container's rootfs is the container's to read.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::config::Config;
use crate::error::{IoContext, Result};

/// berthd's own umask: private unless said otherwise.
pub const DAEMON_UMASK: u32 = 0o077;
/// The umask of every process berthd starts, as under containerd's systemd unit.
pub const CHILD_UMASK: u32 = 0o022;
/// The root and state directories: traversable to reach a named child, not listable.
pub const TRAVERSE_ONLY: u32 = 0o711;
/// Directories holding filesystems, bundles, blobs or the store.
pub const PRIVATE_DIR: u32 = 0o700;
/// Files holding containers' configuration (env).
pub const PRIVATE_FILE: u32 = 0o600;
/// Container logs, as containerd opens them: the group may read them (log agents).
pub const LOG_FILE: u32 = 0o640;
/// What a container must traverse or read: its rootfs root, hosts, volume dirs.
pub const SHARED_DIR: u32 = 0o755;
pub const SHARED_FILE: u32 = 0o644;

/// Sets berthd's umask; call before anything is created.
pub fn set_daemon_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(DAEMON_UMASK));
}

/// Gives a process berthd starts the usual umask back.
pub fn with_child_umask(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    // SAFETY: umask(2) is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(CHILD_UMASK as libc::mode_t);
            Ok(())
        })
    }
}

/// Sets `path`'s permission bits to exactly `mode`.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode))
        .context(|| format!("setting the mode of {} to {mode:o}", path.display()))
}

/// Creates `path` (and missing parents) and makes it exactly 0700.
pub fn private_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).context(|| format!("creating {}", path.display()))?;
    set_mode(path, PRIVATE_DIR)
}

/// Creates `path` and its missing parents 0755 each, whatever the umask: for
/// directories made on a container's behalf. Existing ones are left as they are.
pub fn shared_dir_all(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        shared_dir_all(parent)?;
    }
    match DirBuilder::new().mode(SHARED_DIR).create(path) {
        Ok(()) => fs::set_permissions(path, Permissions::from_mode(SHARED_DIR)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes a file a container reads (its hosts, resolv.conf, hostname), 0644.
pub fn write_shared_file(path: &Path, contents: &[u8]) -> Result<()> {
    fs::write(path, contents).context(|| format!("writing {}", path.display()))?;
    set_mode(path, SHARED_FILE)
}

/// Writes a file only root may read, 0600 from its creation on.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(path)
        .context(|| format!("creating {}", path.display()))?;
    // An existing file keeps its mode through open(2): set it.
    file.set_permissions(Permissions::from_mode(PRIVATE_FILE))
        .and_then(|()| file.write_all(contents))
        .context(|| format!("writing {}", path.display()))
}

/// Makes the root and state directories and their private children, and repairs
/// the modes of what an older berth made wider.
pub fn prepare(config: &Config) -> Result<()> {
    for dir in [&config.root, &config.state] {
        fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        set_mode(dir, TRAVERSE_ONLY)?;
    }
    for dir in PRIVATE_ROOT_DIRS {
        private_dir(&config.root.join(dir))?;
    }
    for dir in PRIVATE_STATE_DIRS {
        private_dir(&config.state.join(dir))?;
    }
    for dir in BUNDLE_DIRS {
        let path = config.state.join(dir);
        fs::create_dir_all(&path).context(|| format!("creating {}", path.display()))?;
        set_mode(&path, TRAVERSE_ONLY)?;
    }
    for file in PRIVATE_ROOT_FILES {
        let path = config.root.join(file);
        if path.exists() {
            set_mode(&path, PRIVATE_FILE)?;
        }
    }
    for dir in ["containers", "pods"] {
        repair_bundles(&config.state.join(dir))?;
    }
    Ok(())
}

/// Under the root: image and container filesystems, blobs, CNI results, the pause rootfs.
const PRIVATE_ROOT_DIRS: [&str; 4] = ["content", "snapshots", "cni", "pause"];
/// Under the state directory: shim and runc state, netns mounts.
const PRIVATE_STATE_DIRS: [&str; 3] = ["s", "runc", "netns"];
/// The bundle and pod-file directories: traversable, since a container in a user
/// namespace of its pod resolves its rootfs and mount sources there as the pod's
/// root; each bundle in them stays 0700 (0710 to the pod's root group).
const BUNDLE_DIRS: [&str; 2] = ["containers", "pods"];
const PRIVATE_ROOT_FILES: [&str; 2] = ["meta.redb", "berthd.lock"];

/// Each bundle's `config.json` (it holds the env) made 0600.
fn repair_bundles(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).context(|| format!("reading {}", dir.display()))?;
    for entry in entries.flatten() {
        let config = entry.path().join("config.json");
        if config.is_file() {
            set_mode(&config, PRIVATE_FILE)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_dirs_are_0755_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let made = shared_dir_all(&dir.path().join("a/b/c"));
        nix::sys::stat::umask(old);
        made.unwrap();
        for sub in ["a", "a/b", "a/b/c"] {
            let mode = fs::metadata(dir.path().join(sub))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, SHARED_DIR, "{sub}");
        }
    }

    #[test]
    fn private_files_are_0600_even_when_they_existed_wider() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, "{}").unwrap();
        set_mode(&path, 0o644).unwrap();
        write_private_file(&path, b"{\"env\":1}").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read(&path).unwrap(), b"{\"env\":1}");
    }
}
