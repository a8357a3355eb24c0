//! Keeping a layer confined to its directory: tar paths normalised with `..` refused,
//! parents checked with lstat so nothing is written through a symlink, and whatever is in
//! the way removed without being followed.

use std::ffi::OsStr;
use std::fs::{self, Permissions};
use std::io::{self, ErrorKind};
use std::ops::Bound;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, lchown};
use std::path::{Path, PathBuf};

use super::{Applier, Failure, context, refuse};

/// Normalises a tar path (or hard link target) to a path relative to the
/// layer root. Leading `/` and `./`, empty and `.` components are dropped, so
/// absolute paths stay inside the layer. `..` is refused outright: whatever it
/// would resolve to, a well-formed layer never needs it.
pub(super) fn clean_path(raw: &[u8], what: &str) -> Result<PathBuf, Failure> {
    if raw.contains(&0) {
        return Err(refuse(format!("{what} contains a NUL byte")));
    }
    let mut clean = PathBuf::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(refuse(format!("{what} contains a `..` component"))),
            name => clean.push(OsStr::from_bytes(name)),
        }
    }
    Ok(clean)
}

impl Applier<'_> {
    /// Makes room for `rel`: creates its missing parents, refuses symlinked
    /// ones, and removes whatever is at `rel` unless both it and the new
    /// entry are directories (then the entry only updates metadata).
    /// Returns the full path and whether a directory is kept there.
    pub(super) fn prepare(&mut self, rel: &Path, is_dir: bool) -> Result<(PathBuf, bool), Failure> {
        self.walk_parents(rel, true)?;
        let path = self.dest.join(rel);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok((path, false)),
            Err(e) => Err(e.into()),
            Ok(existing) if existing.is_dir() && is_dir => Ok((path, true)),
            Ok(existing) => {
                self.remove(rel, &path, existing.is_dir())?;
                Ok((path, false))
            }
        }
    }

    /// Checks every parent of `rel`, from the top, with lstat: a symlink there
    /// would be followed by the kernel and let the layer write anywhere on
    /// the host. Missing parents are created (0755, root-owned, as containerd
    /// does) when `create`, and are an error otherwise.
    pub(super) fn walk_parents(&self, rel: &Path, create: bool) -> Result<(), Failure> {
        let Some(parents) = rel.parent() else {
            return Ok(());
        };
        let mut sub = PathBuf::new();
        for part in parents.components() {
            sub.push(part);
            let path = self.dest.join(&sub);
            match fs::symlink_metadata(&path) {
                Ok(found) if found.file_type().is_symlink() => {
                    return Err(refuse(format!("parent {sub:?} is a symlink")));
                }
                Ok(found) if found.is_dir() => {}
                Ok(_) => {
                    return Err(Failure::Io(io::Error::new(
                        ErrorKind::NotADirectory,
                        format!("parent {sub:?} is not a directory"),
                    )));
                }
                Err(e) if e.kind() == ErrorKind::NotFound && create => {
                    create_parent_dir(&path)
                        .map_err(|e| context(e, format_args!("creating parent {sub:?}")))?;
                }
                Err(e) => return Err(context(e, format_args!("parent {sub:?}")).into()),
            }
        }
        Ok(())
    }

    /// Removes what is at `rel` (without following it) and forgets the
    /// directory times recorded for it or below it: they no longer describe
    /// what will be there, which may even become a symlink.
    fn remove(&mut self, rel: &Path, path: &Path, is_dir: bool) -> Result<(), Failure> {
        if is_dir {
            fs::remove_dir_all(path)?;
        } else {
            fs::remove_file(path)?;
        }
        self.forget_dir_times_under(rel);
        Ok(())
    }

    /// Paths order component by component, so `rel` and everything below it are one
    /// range of the map: forgetting them costs what recording them did, not a scan of
    /// every directory the layer has (quadratic for a layer that replaces many).
    fn forget_dir_times_under(&mut self, rel: &Path) {
        let below: Vec<PathBuf> = self
            .dir_times
            .range::<Path, _>((Bound::Included(rel), Bound::Unbounded))
            .map(|(dir, _)| dir)
            .take_while(|dir| dir.starts_with(rel))
            .cloned()
            .collect();
        for dir in below {
            self.dir_times.remove(&dir);
        }
    }
}

/// Creates a directory the layer did not list but needs as a parent.
fn create_parent_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o755).create(path)?;
    // Explicitly, so neither the umask nor a setgid parent decides.
    if nix::unistd::geteuid().is_root() {
        lchown(path, Some(0), Some(0))?;
    }
    fs::set_permissions(path, Permissions::from_mode(0o755))
}
