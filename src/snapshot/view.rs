//! Reading a file of a container's root filesystem before it is mounted: the merged
//! view of its overlay layers, resolved the way the container would see it and
//! never outside it.
//!
//! berthd reads a few files of an image on the host's side (`/etc/passwd` and
//! `/etc/group` to resolve users). Those paths are the image's to choose: a
//! symlink `etc/passwd -> /etc/shadow` must not make berthd read the host's file.
//! The rules:
//!
//! * every component is looked up with `O_NOFOLLOW` in each layer, top first, as
//!   overlayfs does: a 0/0 character device hides the name in the layers below, a
//!   directory with `trusted.overlay.opaque=y` hides the directories below it, and a
//!   non-directory ends the merge;
//! * a symlink is followed inside the view: an absolute target starts again at the
//!   view's root, a relative one at the link's directory, at most [`MAX_LINKS`]
//!   links per lookup;
//! * a `..` that would climb above the root means the file is not there: the
//!   lookup answers "no such file", as it does for anything that is not a regular
//!   file (a fifo would block the reader, a device is not the image's data);
//! * a file is read only up to the caller's limit; a bigger one is an error.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

/// Symlinks followed in one lookup before giving up, as the kernel's MAXSYMLINKS.
pub const MAX_LINKS: usize = 40;
/// The opaque marker overlayfs reads on a directory.
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque\0";

/// Why a file of the view could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    #[error("{path} has more than {limit} entries")]
    TooManyEntries { path: String, limit: usize },
    #[error("{path}: more than {MAX_LINKS} symlinks")]
    Loop { path: String },
    #[error("reading {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// A root filesystem as the stack of directories overlayfs would merge, top first.
pub struct LayeredView<'a> {
    layers: &'a [PathBuf],
}

/// One directory of the view: the layers' directories that merge into it, top first.
pub(crate) type MergedDir = Vec<OwnedFd>;

/// What a path of the view leads to, its symlinks followed inside the view.
pub(crate) enum Walked {
    /// Nothing, a whiteout, or a path that climbs out of the view.
    Missing,
    /// A directory, and its path in the view with no symlink in it.
    Dir { merged: MergedDir, path: PathBuf },
    /// A regular file, by its parent directory and name.
    File(OwnedFd, OsString),
    /// A fifo, socket or device.
    Other,
}

pub(crate) enum Found {
    Missing,
    Dir(MergedDir),
    Link(OwnedFd, OsString),
    File(OwnedFd, OsString),
    /// A fifo, socket or device: never opened.
    Other,
}

impl<'a> LayeredView<'a> {
    /// `layers` top first; a single directory is a plain root filesystem.
    pub fn new(layers: &'a [PathBuf]) -> Self {
        LayeredView { layers }
    }

    /// The contents of the regular file at `path` (absolute or relative to the root),
    /// `None` when the view has no regular file there, or only one reached by
    /// climbing out of it.
    pub fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, ViewError> {
        match self.walk(path)? {
            Walked::File(parent, name) => read_capped(&parent, &name, path, limit),
            Walked::Missing | Walked::Dir { .. } | Walked::Other => Ok(None),
        }
    }

    /// Resolves `path` inside the view, following symlinks as the container would
    /// (never out of the view), and says what is there.
    pub(crate) fn walk(&self, path: &str) -> Result<Walked, ViewError> {
        let io_err = |source| ViewError::Io {
            path: path.to_string(),
            source,
        };
        let root = self.root().map_err(io_err)?;
        // The merged directories from the root down, and their names.
        let mut stack: Vec<MergedDir> = vec![root];
        let mut names: Vec<OsString> = Vec::new();
        let mut pending: VecDeque<OsString> = components(Path::new(path));
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                if stack.len() == 1 {
                    return Ok(Walked::Missing);
                }
                stack.pop();
                names.pop();
                continue;
            }
            let dir = stack.last().expect("the root is never popped");
            match lookup(dir, &name).map_err(io_err)? {
                Found::Missing => return Ok(Walked::Missing),
                Found::Other => {
                    return Ok(if pending.is_empty() {
                        Walked::Other
                    } else {
                        Walked::Missing
                    });
                }
                Found::Dir(merged) => {
                    stack.push(merged);
                    names.push(name);
                }
                Found::Link(parent, name) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(ViewError::Loop {
                            path: path.to_string(),
                        });
                    }
                    let target =
                        readlinkat(&parent, name.as_os_str()).map_err(|e| io_err(e.into()))?;
                    let target = Path::new(&target);
                    if target.is_absolute() {
                        stack.truncate(1);
                        names.clear();
                    }
                    for c in components(target).into_iter().rev() {
                        pending.push_front(c);
                    }
                }
                Found::File(parent, name) => {
                    if !pending.is_empty() {
                        return Ok(Walked::Missing);
                    }
                    return Ok(Walked::File(parent, name));
                }
            }
        }
        let merged = stack.pop().expect("the root is never popped");
        let path: PathBuf = std::iter::once(OsStr::new("/"))
            .chain(names.iter().map(OsString::as_os_str))
            .collect();
        Ok(Walked::Dir { merged, path })
    }

    fn root(&self) -> io::Result<MergedDir> {
        let mut merged = Vec::new();
        for layer in self.layers {
            match open_dir(None, layer.as_os_str()) {
                Ok(fd) => merged.push(fd),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(merged)
    }
}

/// The normal components of `path`, `..` kept for the walk to handle.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// `name` in a merged directory, looked up layer by layer as overlayfs does.
pub(crate) fn lookup(dir: &MergedDir, name: &OsStr) -> io::Result<Found> {
    let mut merged = Vec::new();
    for parent in dir {
        let stat = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => continue,
            Err(e) => return Err(e.into()),
        };
        let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFDIR {
            let fd = open_dir(Some(parent), name)?;
            let opaque = is_opaque(&fd);
            merged.push(fd);
            if opaque {
                break;
            }
            continue;
        }
        if !merged.is_empty() {
            // A non-directory below a directory ends the merge.
            break;
        }
        let owned = || -> io::Result<OwnedFd> { parent.try_clone() };
        return Ok(match kind {
            _ if is_whiteout(&stat, kind) => Found::Missing,
            SFlag::S_IFLNK => Found::Link(owned()?, name.to_os_string()),
            SFlag::S_IFREG => Found::File(owned()?, name.to_os_string()),
            _ => Found::Other,
        });
    }
    Ok(if merged.is_empty() {
        Found::Missing
    } else {
        Found::Dir(merged)
    })
}

fn is_whiteout(stat: &FileStat, kind: SFlag) -> bool {
    kind == SFlag::S_IFCHR && stat.st_rdev == 0
}

fn is_opaque(dir: &OwnedFd) -> bool {
    let mut value = [0u8; 1];
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the given size.
    let n = unsafe {
        libc::fgetxattr(
            dir.as_raw_fd(),
            OPAQUE_XATTR.as_ptr().cast(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

fn open_dir(parent: Option<&OwnedFd>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match parent {
        Some(p) => openat(p, name, flags, Mode::empty())?,
        None => openat(nix::fcntl::AT_FDCWD, name, flags, Mode::empty())?,
    };
    Ok(fd)
}

/// Opens a regular file without following a link or blocking, and reads at most
/// `limit` bytes of it.
fn read_capped(
    parent: &OwnedFd,
    name: &OsStr,
    path: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, ViewError> {
    let io_err = |source| ViewError::Io {
        path: path.to_string(),
        source,
    };
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(parent, name, flags, Mode::empty()).map_err(|e| io_err(e.into()))?;
    let stat = fstat(fd.as_fd()).map_err(|e| io_err(e.into()))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Ok(None);
    }
    let too_large = || ViewError::TooLarge {
        path: path.to_string(),
        limit,
    };
    if stat.st_size as u64 > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(stat.st_size as usize);
    File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(Some(bytes))
}

pub mod tree;

#[cfg(test)]
mod tests;
