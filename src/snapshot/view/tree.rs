//! Walking a directory tree of a [`LayeredView`], with the same rules as reading a
//! file of it: each name is looked up layer by layer as overlayfs would merge it,
//! nothing is opened through a symlink, and a symlink found inside the tree is
//! reported as a link (its target is the image's data, never followed here).
//!
//! Used to copy an image's content at a declared volume path into the volume.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

use super::{Found, LayeredView, MergedDir, ViewError, Walked, lookup};

/// A directory of the view, merged from its layers.
pub struct ViewDir {
    merged: MergedDir,
    /// Where it is in the view, with no symlink in it.
    path: PathBuf,
    /// The top-most layer's directory: the merged directory's owner, mode, times.
    stat: FileStat,
}

/// What a path of the view holds, for [`LayeredView::dir`].
pub enum DirLookup {
    Dir(ViewDir),
    Missing,
    /// Something that is not a directory: a file, fifo, socket or device.
    NotDir,
}

/// One entry of a [`ViewDir`].
pub enum TreeEntry {
    Dir(ViewDir),
    /// A regular file, opened without following links or blocking.
    File(OwnedFd, FileStat),
    Link(OsString, FileStat),
    Fifo(FileStat),
    /// A socket or device node: not the image's data to copy.
    Other,
}

impl LayeredView<'_> {
    /// The directory at `path`, symlinks on the way followed inside the view.
    pub fn dir(&self, path: &str) -> Result<DirLookup, ViewError> {
        match self.walk(path)? {
            Walked::Missing => Ok(DirLookup::Missing),
            Walked::File(..) | Walked::Other => Ok(DirLookup::NotDir),
            Walked::Dir { merged, path: at } => ViewDir::new(merged, at)
                .map(DirLookup::Dir)
                .map_err(|source| ViewError::Io {
                    path: path.to_string(),
                    source,
                }),
        }
    }
}

impl ViewDir {
    fn new(merged: MergedDir, path: PathBuf) -> io::Result<ViewDir> {
        let top = merged
            .first()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let stat = fstat(top.as_fd())?;
        Ok(ViewDir { merged, path, stat })
    }

    /// The directory's path in the view.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stat(&self) -> &FileStat {
        &self.stat
    }

    /// The top-most layer's directory, to read the merged directory's xattrs from.
    pub fn top(&self) -> &OwnedFd {
        &self.merged[0]
    }

    /// The names of the merged directory, sorted, whiteouts and hidden layers left
    /// out. At most `limit` names; more is an error naming the directory.
    pub fn names(&self, limit: usize) -> Result<Vec<OsString>, ViewError> {
        let io_err = |source| self.error(source);
        let mut names = BTreeSet::new();
        for layer in &self.merged {
            // The descriptor's own directory, opened afresh through /proc (no path
            // of the image's is resolved again), so no offset is shared.
            let own = format!("/proc/self/fd/{}", layer.as_raw_fd());
            for entry in std::fs::read_dir(own).map_err(io_err)? {
                names.insert(entry.map_err(io_err)?.file_name());
                if names.len() > limit {
                    return Err(ViewError::TooManyEntries {
                        path: self.path.display().to_string(),
                        limit,
                    });
                }
            }
        }
        // A name whose top-most entry is a whiteout is not in the merged directory;
        // `entry` answers Missing for it, and the caller skips it.
        Ok(names.into_iter().collect())
    }

    /// The entry `name` of this directory as overlayfs would show it; `None` for a
    /// whiteout.
    pub fn entry(&self, name: &OsStr) -> Result<Option<TreeEntry>, ViewError> {
        let io_err = |source| self.error(source);
        Ok(Some(match lookup(&self.merged, name).map_err(io_err)? {
            Found::Missing => return Ok(None),
            Found::Dir(merged) => {
                TreeEntry::Dir(ViewDir::new(merged, self.path.join(name)).map_err(io_err)?)
            }
            Found::Link(parent, name) => {
                let stat = fstatat(&parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(e.into()))?;
                let target = readlinkat(&parent, name.as_os_str()).map_err(|e| io_err(e.into()))?;
                TreeEntry::Link(target, stat)
            }
            Found::File(parent, name) => {
                let flags =
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
                let fd = openat(&parent, name.as_os_str(), flags, Mode::empty())
                    .map_err(|e| io_err(e.into()))?;
                let stat = fstat(fd.as_fd()).map_err(|e| io_err(e.into()))?;
                TreeEntry::File(fd, stat)
            }
            Found::Other => self.special(name).map_err(io_err)?,
        }))
    }

    /// A fifo, socket or device: the top-most layer holding `name` says which.
    fn special(&self, name: &OsStr) -> io::Result<TreeEntry> {
        for layer in &self.merged {
            match fstatat(layer, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) => {
                    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
                    return Ok(if kind == SFlag::S_IFIFO {
                        TreeEntry::Fifo(stat)
                    } else {
                        TreeEntry::Other
                    });
                }
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(TreeEntry::Other)
    }

    fn error(&self, source: io::Error) -> ViewError {
        ViewError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
