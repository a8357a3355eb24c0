//! Image volumes (CRI `Mount.image`, the kubelet's ImageVolume): an image the
//! kubelet pulled, mounted read-only into a container.
//!
//! The image's unpacked layers are shared, not copied: berthd mounts a read-only
//! overlay of them (no upper layer) in the container's bundle, `nosuid,nodev,noexec`
//! as containerd mounts image volumes, and the spec bind-mounts that read-only. The
//! mount lives as long as the container: RemoveContainer (and the undoing of a
//! half-created container at start-up) unmounts it before the bundle goes. While
//! it is there the image cannot be removed (see `image::volume_holds`).

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::error::{Error, IoContext, Result};

/// The kernel copies mount options into one page: a longer `lowerdir=` list is
/// refused by mount(2), so it is refused here first with a message that says why.
const MAX_MOUNT_DATA: usize = 4095;
/// Where the image volumes of a container are mounted, in its bundle.
const DIR: &str = "image-volumes";
/// An empty directory: overlayfs wants two lower layers when it has no upper one.
const EMPTY_LOWER: &str = "empty";

/// The directory image volume `index` of the container with bundle `bundle` is
/// mounted at.
pub fn target(bundle: &Path, index: usize) -> PathBuf {
    bundle.join(DIR).join(index.to_string())
}

/// Mounts the image whose layers are `lowers` (top first) read-only at `target`.
pub fn mount(bundle: &Path, target: &Path, lowers: &[PathBuf], field: &str) -> Result<()> {
    let dir = bundle.join(DIR);
    crate::layout::private_dir(&dir)?;
    let mut lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    if lowers.len() == 1 {
        let empty = dir.join(EMPTY_LOWER);
        std::fs::create_dir_all(&empty).context(|| format!("creating {}", empty.display()))?;
        lowerdir.push(empty.display().to_string());
    }
    let data = format!("lowerdir={}", lowerdir.join(":"));
    if data.len() > MAX_MOUNT_DATA {
        return Err(Error::InvalidArgument(format!(
            "{field}: the image has too many layers ({}) to mount as a volume",
            lowers.len()
        )));
    }
    std::fs::create_dir_all(target).context(|| format!("creating {}", target.display()))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(data.as_str()),
    )
    .map_err(std::io::Error::from)
    .context(|| format!("{field}: mounting the image at {}", target.display()))
}

/// Unmounts every image volume of the bundle, so that removing the bundle never
/// reaches into an image's layers (a read-only overlay would refuse anyway).
pub fn unmount_all(bundle: &Path) {
    let Ok(entries) = std::fs::read_dir(bundle.join(DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name() == EMPTY_LOWER {
            continue;
        }
        let path = entry.path();
        match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unmounting an image volume");
            }
        }
    }
}
