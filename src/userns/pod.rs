//! What a pod with its own user namespace keeps under `<state>/u/<pod>`:
//!
//! ```text
//! ns        the user namespace, pinned
//! l/        the snapshot store id-mapped: the overlay lower dirs of its containers
//! p/        the built-in pause rootfs id-mapped (when no sandbox_image)
//! v/<c>-<i> each container's volumes (host_path mounts) id-mapped
//! ```
//!
//! The directory is the pod root's to traverse (group = its host gid, 0710): runc
//! resolves the rootfs and mount sources from inside the user namespace. Only the
//! lower dirs are id-mapped: overlayfs writes its work dir as the mounter (the
//! host's root, unmapped in the view), so the writable layer stays plain and only
//! its (empty) root is given to the pod's root, as containerd does. Files berthd
//! writes for the pod (hosts, resolv.conf, hostname) are small copies of its own:
//! they are chowned to the pod's root rather than each given a mount to leak.
//!
//! Nothing here ever removes recursively: a view is a live mount of the host's
//! files, so only empty directories are deleted, after their unmount.
//! Everything here blocks: call it from `spawn_blocking`.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::mapping::UserNamespace;
use super::{idmap, ns};

/// A pod id is 64 random hex digits; 16 of them name its directory, short so
/// that a deep image's lowerdir list stays within the one page a mount takes.
const SHORT_ID: usize = 16;
/// Traversable by the pod's root group only.
const POD_DIR_MODE: u32 = 0o710;
/// The directory of all pods' directories: named children only, no listing.
const TOP_DIR_MODE: u32 = 0o711;
/// The kernel copies mount options into one page.
pub const MAX_MOUNT_OPTIONS: usize = 4096;

/// The user-namespace directory of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUserns {
    dir: PathBuf,
}

impl PodUserns {
    pub fn of(state: &Path, pod_id: &str) -> PodUserns {
        PodUserns {
            dir: state.join("u").join(short(pod_id)),
        }
    }

    /// The pinned user namespace: the `path` of the OCI spec's `user` namespace.
    pub fn ns_path(&self) -> PathBuf {
        self.dir.join("ns")
    }

    /// The id-mapped view of the built-in pause rootfs.
    pub fn pause_rootfs(&self) -> PathBuf {
        self.dir.join("p")
    }

    fn layers(&self) -> PathBuf {
        self.dir.join("l")
    }

    fn volumes(&self) -> PathBuf {
        self.dir.join("v")
    }

    /// Makes the pod's user namespace (and with `netns` the network namespace it
    /// owns, pinned there), the view of `snapshots`, and of `pause` if given. On
    /// failure, whatever was made is undone.
    pub fn setup(
        &self,
        userns: &UserNamespace,
        netns: Option<&Path>,
        snapshots: &Path,
        pause: Option<&Path>,
    ) -> io::Result<()> {
        let top = self.dir.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(top)?;
        std::fs::set_permissions(top, PermissionsExt::from_mode(TOP_DIR_MODE))?;
        std::fs::create_dir(&self.dir).map_err(|e| {
            io::Error::new(e.kind(), format!("creating {}: {e}", self.dir.display()))
        })?;
        let made = self.fill(userns, netns, snapshots, pause);
        if made.is_err() {
            let _ = self.teardown();
            if let Some(netns) = netns {
                let _ = ns::remove(netns);
            }
        }
        made
    }

    fn fill(
        &self,
        userns: &UserNamespace,
        netns: Option<&Path>,
        snapshots: &Path,
        pause: Option<&Path>,
    ) -> io::Result<()> {
        share_dir(&self.dir, userns)?;
        ns::create(userns, &self.ns_path(), netns)?;
        let user = ns::open(&self.ns_path())?;
        std::fs::create_dir(self.layers())?;
        idmap::bind(snapshots, &self.layers(), &user)?;
        if let Some(pause) = pause {
            std::fs::create_dir(self.pause_rootfs())?;
            idmap::bind(pause, &self.pause_rootfs(), &user)?;
        }
        std::fs::create_dir(self.volumes())?;
        share_dir(&self.volumes(), userns)
    }

    /// Unmounts and removes everything of the pod's; idempotent. The network
    /// namespace is the pod's network code's to remove.
    pub fn teardown(&self) -> io::Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        if let Ok(entries) = std::fs::read_dir(self.volumes()) {
            for entry in entries.flatten() {
                remove_view(&entry.path())?;
            }
        }
        for dir in [self.volumes(), self.layers(), self.pause_rootfs()] {
            remove_view(&dir)?;
        }
        ns::remove(&self.ns_path())?;
        remove_empty(&self.dir)
    }

    /// The overlay options of a container's rootfs with its lower dirs read
    /// through the pod's view, its writable layer's root given to the pod's root.
    pub fn rootfs_options(
        &self,
        userns: &UserNamespace,
        snapshots: &Path,
        options: &[String],
        upper: &Path,
    ) -> io::Result<Vec<String>> {
        let (uid, gid) = userns.host_root();
        std::os::unix::fs::chown(upper, Some(uid), Some(gid))?;
        let layers = self.layers();
        let mapped: Vec<String> = options
            .iter()
            .map(|option| match option.strip_prefix("lowerdir=") {
                Some(list) => {
                    let dirs: Vec<String> = list
                        .split(':')
                        .map(|dir| match Path::new(dir).strip_prefix(snapshots) {
                            Ok(rest) => layers.join(rest).display().to_string(),
                            Err(_) => dir.to_string(),
                        })
                        .collect();
                    format!("lowerdir={}", dirs.join(":"))
                }
                None => option.clone(),
            })
            .collect();
        let length: usize = mapped.iter().map(|o| o.len() + 1).sum();
        if length > MAX_MOUNT_OPTIONS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the image has too many layers for an id-mapped rootfs: its overlay \
                     options take {length} bytes, more than the kernel's {MAX_MOUNT_OPTIONS}"
                ),
            ));
        }
        Ok(mapped)
    }

    /// An id-mapped view of each `sources` (volume host paths), in order, for
    /// container `container_id`. On failure the views made are removed.
    pub fn volume_views(&self, container_id: &str, sources: &[&Path]) -> io::Result<Vec<PathBuf>> {
        let user = ns::open(&self.ns_path())?;
        let mut views = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            let view = self.volume_view(container_id, i);
            let made = if source.is_dir() {
                std::fs::create_dir(&view)
            } else {
                std::fs::File::create(&view).map(drop)
            }
            .and_then(|()| {
                views.push(view.clone());
                idmap::bind(source, &view, &user)
            });
            if let Err(e) = made {
                for view in &views {
                    let _ = remove_view(view);
                }
                return Err(e);
            }
        }
        Ok(views)
    }

    /// Removes container `container_id`'s volume views; idempotent.
    pub fn release_container(&self, container_id: &str) -> io::Result<()> {
        let prefix = format!("{}-", short(container_id));
        let Ok(entries) = std::fs::read_dir(self.volumes()) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                remove_view(&entry.path())?;
            }
        }
        Ok(())
    }

    fn volume_view(&self, container_id: &str, index: usize) -> PathBuf {
        self.volumes()
            .join(format!("{}-{index}", short(container_id)))
    }
}

/// Gives a directory of berthd's to the pod's root group to traverse (0710).
pub fn share_dir(dir: &Path, userns: &UserNamespace) -> io::Result<()> {
    let (_, gid) = userns.host_root();
    std::os::unix::fs::chown(dir, Some(0), Some(gid))?;
    std::fs::set_permissions(dir, PermissionsExt::from_mode(POD_DIR_MODE))
}

/// Gives a file berthd wrote for the pod (hosts, resolv.conf) to the pod's root.
pub fn give_file(path: &Path, userns: &UserNamespace) -> io::Result<()> {
    let (uid, gid) = userns.host_root();
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| io::Error::new(e.kind(), format!("chown {}: {e}", path.display())))
}

/// Every pod directory under `<state>/u`, for sweeping those of pods that are gone.
pub fn all(state: &Path) -> Vec<PodUserns> {
    let Ok(entries) = std::fs::read_dir(state.join("u")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| PodUserns { dir: e.path() })
        .collect()
}

impl PodUserns {
    /// Whether this directory belongs to the pod `pod_id`.
    pub fn is_of(&self, pod_id: &str) -> bool {
        self.dir
            .file_name()
            .is_some_and(|n| pod_id.starts_with(&*n.to_string_lossy()))
    }
}

/// berthd's ids are hex; `get` keeps any other id from splitting a character.
fn short(id: &str) -> &str {
    id.get(..SHORT_ID).unwrap_or(id)
}

/// Unmounts a view and deletes its (now empty) mount point; never recursive.
fn remove_view(path: &Path) -> io::Result<()> {
    idmap::unmount(path)?;
    remove_empty(path)
}

fn remove_empty(path: &Path) -> io::Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
            e.kind(),
            format!("removing {}: {e}", path.display()),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_dir_is_named_by_its_id_prefix_whatever_the_id() {
        let state = Path::new("/run/berth");
        let id = "0123456789abcdef0123456789abcdef";
        let dirs = PodUserns::of(state, id);
        assert_eq!(
            dirs.ns_path(),
            Path::new("/run/berth/u/0123456789abcdef/ns")
        );
        assert!(dirs.is_of(id) && !dirs.is_of("fedcba9876543210"));
        // Short or non-hex ids neither panic nor leave the directory.
        assert_eq!(
            PodUserns::of(state, "abc").ns_path(),
            Path::new("/run/berth/u/abc/ns")
        );
        let odd = PodUserns::of(state, "€€€€€€");
        assert!(odd.ns_path().starts_with("/run/berth/u/"));
    }
}
