//! Volumes an image declares (`VOLUME` in a Dockerfile, the config's `Volumes`).
//!
//! As containerd does by default (`ignore_image_defined_volumes = false`), each
//! declared path that no CRI mount covers gets a directory of the container's own
//! (private, removed with the container), filled by copy-up from the
//! image's content at that path and bind-mounted read-write, whatever the rootfs's
//! mode. Where the image has nothing there, the directory is empty, root's, 0755,
//! as containerd creates it.
//!
//! Docker records paths as written: `/data/`, `//data`, `data` (relative to `/`, as
//! Docker resolves it) all mean `/data`, once. A path at `/` or with a `..` is
//! ignored with a warning: neither can be mounted over safely.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::Mode;

use super::copy_up::{self, Budget, CopyError};
use crate::domain::config::Mount;
use crate::error::{Error, IoContext, Result};
use crate::snapshot::view::LayeredView;
use crate::snapshot::view::tree::DirLookup;

/// Declared volumes used per container: Docker has no limit, but each one is a
/// mount runc makes and a copy berthd makes; real images declare a handful.
pub const MAX_DECLARED_VOLUMES: usize = 128;

/// The declared paths, normalised, deduplicated and sorted (parents first), minus
/// those at or below a CRI mount's path (the kubelet's volume wins, as in containerd).
pub fn paths(declared: &[String], mounts: &[Mount]) -> Result<Vec<String>> {
    let mut out = BTreeSet::new();
    for raw in declared {
        let Some(path) = normalise(raw) else {
            tracing::warn!(volume = %raw, "ignoring an image volume at / or with '..'");
            continue;
        };
        let covered = mounts
            .iter()
            .any(|m| Path::new(&path).starts_with(Path::new(&m.container_path)));
        if !covered {
            out.insert(path);
        }
    }
    if out.len() > MAX_DECLARED_VOLUMES {
        return Err(Error::InvalidArgument(format!(
            "the image declares {} volumes; at most {MAX_DECLARED_VOLUMES} are supported",
            out.len()
        )));
    }
    Ok(out.into_iter().collect())
}

/// `raw` as one absolute path with no `.`, empty or trailing component; `None` for
/// the root, a `..` anywhere, or a NUL byte.
pub fn normalise(raw: &str) -> Option<String> {
    if raw.contains('\0') {
        return None;
    }
    let mut clean = PathBuf::from("/");
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (clean != Path::new("/")).then(|| clean.display().to_string())
}

/// Makes `dir/<i>` for each of `paths`, filled from the image's layers (`lowers`,
/// top first), and returns the mounts that put them in place.
pub fn prepare(dir: &Path, lowers: &[PathBuf], paths: &[String]) -> Result<Vec<Mount>> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(container_dir) = dir.parent() {
        crate::layout::private_dir(container_dir)?;
    }
    crate::layout::private_dir(dir)?;
    let view = LayeredView::new(lowers);
    let mut budget = Budget::default();
    let mut mounts = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let host = dir.join(i.to_string());
        fill(&view, path, &host, &mut budget)?;
        mounts.push(Mount {
            container_path: path.clone(),
            host_path: host.display().to_string(),
            readonly: false,
            ..Default::default()
        });
    }
    Ok(mounts)
}

fn fill(view: &LayeredView, path: &str, host: &Path, budget: &mut Budget) -> Result<()> {
    let named = |e: CopyError| match e {
        CopyError::TooMuch { what } => Error::InvalidArgument(format!(
            "the image's volume {path}: {what} to copy into it (the bound per container)"
        )),
        CopyError::View(e) => Error::InvalidArgument(format!("the image's volume {path}: {e}")),
        CopyError::Io { path: at, source } => Error::Io {
            context: format!("copying the image's {at} into its volume {path}"),
            source,
        },
    };
    let source = match view.dir(path).map_err(|e| named(e.into()))? {
        DirLookup::Dir(d) => Some(d),
        DirLookup::Missing => None,
        DirLookup::NotDir => {
            return Err(Error::InvalidArgument(format!(
                "the image declares a volume at {path}, where it has a file that is not a directory"
            )));
        }
    };
    nix::unistd::mkdir(host, Mode::from_bits_truncate(0o755))
        .map_err(std::io::Error::from)
        .context(|| format!("creating the volume directory {}", host.display()))?;
    let Some(source) = source else {
        // berthd's umask would make it 0700: unusable by a container's non-root user.
        return crate::layout::set_mode(host, 0o755);
    };
    let dest: OwnedFd = copy_up::open_dir(&parent_fd(host)?, host_file_name(host))
        .context(|| format!("opening {}", host.display()))?;
    copy_up::copy_dir(&source, &dest, budget, 0).map_err(named)
}

fn parent_fd(host: &Path) -> Result<OwnedFd> {
    let parent = host.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(parent)
        .map(OwnedFd::from)
        .context(|| format!("opening {}", parent.display()))
}

fn host_file_name(host: &Path) -> &OsStr {
    host.file_name().unwrap_or(OsStr::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_paths_are_normalised() {
        for (raw, want) in [
            ("/data", Some("/data")),
            ("/data/", Some("/data")),
            ("//data//x/", Some("/data/x")),
            ("data", Some("/data")),
            ("./data/.", Some("/data")),
            ("/", None),
            ("//", None),
            ("", None),
            ("/a/../b", None),
            ("..", None),
            ("/a\0b", None),
        ] {
            assert_eq!(normalise(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn duplicates_merge_and_cri_mounts_win() {
        let declared: Vec<String> = ["/data/", "/data", "//data", "/cache", "/cache/sub", "/logs"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mounts = [Mount {
            container_path: "/cache".into(),
            host_path: "/srv".into(),
            ..Default::default()
        }];
        assert_eq!(paths(&declared, &mounts).unwrap(), ["/data", "/logs"]);
        let many: Vec<String> = (0..=MAX_DECLARED_VOLUMES)
            .map(|i| format!("/v{i}"))
            .collect();
        assert!(matches!(paths(&many, &[]), Err(Error::InvalidArgument(_))));
    }
}
