//! Copy-up: filling a new volume directory with what the image holds at the volume's
//! path, as Docker and containerd do, so a container sees the image's files there.
//!
//! The source is read through the image's [`LayeredView`] only (nothing it names is
//! followed out of the image: symlinks are copied as links); the destination is a
//! fresh directory of berthd's, written through descriptors with `O_NOFOLLOW`.
//! Owners, modes (set-id bits included), times and extended attributes are kept,
//! except overlayfs's own `trusted.overlay.*`. Hard links are copied as separate
//! files (containerd keeps them; a volume rarely holds any). Sockets and device
//! nodes are skipped: the unpacker never writes them into a layer.
//!
//! An image can hold far more at a volume path than berthd should copy per
//! container (every container of the image gets its own copy): the copy stops,
//! and CreateContainer fails naming the volume, past [`MAX_COPY_BYTES`],
//! [`MAX_COPY_ENTRIES`] or [`MAX_DEPTH`].

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fchmod, futimens, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, symlinkat};

use crate::snapshot::view::ViewError;
use crate::snapshot::view::tree::{TreeEntry, ViewDir};

/// Bytes copied into one container's volumes: an image's volume seed data (a
/// database's empty schema, default configs) is small, and each container pays it
/// again on the node's disk.
pub const MAX_COPY_BYTES: u64 = 1 << 30;
/// Files, directories and links copied into one container's volumes, for the same
/// reason: inodes are a node resource too.
pub const MAX_COPY_ENTRIES: u64 = 100_000;
/// Nesting below a volume's root: each level holds a descriptor per image layer.
pub const MAX_DEPTH: usize = 64;
/// Extended attributes of one file, names and values: the kernel's own caps
/// (XATTR_LIST_MAX and XATTR_SIZE_MAX) are 64 KiB.
const MAX_XATTR_BYTES: usize = 64 << 10;
/// Overlayfs's markers in the layers (opaque, redirect...): not the image's data.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// Why a copy-up stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("more than {what} to copy")]
    TooMuch { what: String },
    #[error(transparent)]
    View(#[from] ViewError),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

/// What is left to copy for one container.
pub struct Budget {
    bytes: u64,
    entries: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            bytes: MAX_COPY_BYTES,
            entries: MAX_COPY_ENTRIES,
        }
    }
}

impl Budget {
    fn take_entry(&mut self) -> Result<(), CopyError> {
        self.entries = self.entries.checked_sub(1).ok_or(CopyError::TooMuch {
            what: format!("{MAX_COPY_ENTRIES} files and directories"),
        })?;
        Ok(())
    }
}

/// Copies the directory `src` of the image into the empty directory `dest`, and
/// gives `dest` the owner, mode, times and xattrs of `src`.
pub fn copy_dir(
    src: &ViewDir,
    dest: &OwnedFd,
    budget: &mut Budget,
    depth: usize,
) -> Result<(), CopyError> {
    if depth > MAX_DEPTH {
        return Err(CopyError::TooMuch {
            what: format!("{MAX_DEPTH} levels of directories"),
        });
    }
    let io_err = |name: &OsStr| {
        let path = src.path().join(name).display().to_string();
        move |source: io::Error| CopyError::Io {
            path: path.clone(),
            source,
        }
    };
    let names = src.names(MAX_COPY_ENTRIES as usize)?;
    for name in names {
        let Some(entry) = src.entry(&name)? else {
            continue;
        };
        let err = io_err(&name);
        match entry {
            TreeEntry::Dir(dir) => {
                budget.take_entry()?;
                mkdirat(dest, name.as_os_str(), Mode::from_bits_truncate(0o700))
                    .map_err(|e| err(e.into()))?;
                let child = open_dir(dest, &name).map_err(&err)?;
                copy_dir(&dir, &child, budget, depth + 1)?;
            }
            TreeEntry::File(fd, stat) => {
                budget.take_entry()?;
                copy_file(fd, &stat, dest, &name, budget).map_err(|e| match e {
                    CopyError::Io { source, .. } => err(source),
                    other => other,
                })?;
            }
            TreeEntry::Link(target, stat) => {
                budget.take_entry()?;
                symlinkat(target.as_os_str(), dest, name.as_os_str()).map_err(|e| err(e.into()))?;
                fchownat(
                    dest,
                    name.as_os_str(),
                    Some(Uid::from_raw(stat.st_uid)),
                    Some(Gid::from_raw(stat.st_gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| err(e.into()))?;
                utimensat(
                    dest,
                    name.as_os_str(),
                    &atime(&stat),
                    &mtime(&stat),
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| err(e.into()))?;
            }
            TreeEntry::Fifo(stat) => {
                budget.take_entry()?;
                mknodat(dest, name.as_os_str(), SFlag::S_IFIFO, Mode::empty(), 0)
                    .map_err(|e| err(e.into()))?;
                let fd = openat(
                    dest,
                    name.as_os_str(),
                    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| err(e.into()))?;
                // fchown/fchmod do not take O_PATH descriptors: go through /proc.
                let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
                std::os::unix::fs::chown(&proc, Some(stat.st_uid), Some(stat.st_gid))
                    .map_err(&err)?;
                std::fs::set_permissions(
                    &proc,
                    std::os::unix::fs::PermissionsExt::from_mode(stat.st_mode & 0o7777),
                )
                .map_err(&err)?;
            }
            TreeEntry::Other => {
                tracing::debug!(path = %src.path().join(&name).display(), "copy-up skips a socket or device");
            }
        }
    }
    let err = io_err(OsStr::new(""));
    copy_xattrs(src.top().as_fd(), dest.as_fd()).map_err(&err)?;
    set_owner_mode_times(dest.as_fd(), src.stat()).map_err(err)
}

fn copy_file(
    src: OwnedFd,
    stat: &FileStat,
    dest_dir: &OwnedFd,
    name: &OsStr,
    budget: &mut Budget,
) -> Result<(), CopyError> {
    let size = stat.st_size as u64;
    let too_much = || CopyError::TooMuch {
        what: format!("{MAX_COPY_BYTES} bytes"),
    };
    if size > budget.bytes {
        return Err(too_much());
    }
    let io = |source: io::Error| CopyError::Io {
        path: String::new(),
        source,
    };
    let fd = openat(
        dest_dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| io(e.into()))?;
    let mut reader = File::from(src);
    let mut writer = File::from(fd);
    // The file may have grown since it was measured: never read past the budget.
    let copied = io::copy(&mut (&mut reader).take(budget.bytes + 1), &mut writer).map_err(io)?;
    if copied > budget.bytes {
        return Err(too_much());
    }
    budget.bytes -= copied;
    writer.flush().map_err(io)?;
    copy_xattrs(reader.as_fd(), writer.as_fd()).map_err(io)?;
    set_owner_mode_times(writer.as_fd(), stat).map_err(io)
}

/// Owner first: changing it clears the set-id bits the mode then restores.
fn set_owner_mode_times(fd: BorrowedFd<'_>, stat: &FileStat) -> io::Result<()> {
    fchown(
        fd,
        Some(Uid::from_raw(stat.st_uid)),
        Some(Gid::from_raw(stat.st_gid)),
    )?;
    fchmod(fd, Mode::from_bits_truncate(stat.st_mode & 0o7777))?;
    futimens(fd, &atime(stat), &mtime(stat))?;
    Ok(())
}

fn atime(stat: &FileStat) -> TimeSpec {
    TimeSpec::new(stat.st_atime, stat.st_atime_nsec)
}

fn mtime(stat: &FileStat) -> TimeSpec {
    TimeSpec::new(stat.st_mtime, stat.st_mtime_nsec)
}

pub(super) fn open_dir(parent: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Copies every extended attribute but overlayfs's own. A destination filesystem
/// without xattr support (ENOTSUP) keeps the data without them, as containerd does
/// for the ones it cannot set.
fn copy_xattrs(src: BorrowedFd<'_>, dest: BorrowedFd<'_>) -> io::Result<()> {
    let mut names = vec![0u8; MAX_XATTR_BYTES];
    // SAFETY: a valid descriptor and a buffer of the given size.
    let n = unsafe { libc::flistxattr(src.as_raw_fd(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(()),
            _ => Err(e),
        };
    }
    names.truncate(n as usize);
    let mut value = vec![0u8; MAX_XATTR_BYTES];
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        let len = get_xattr(src, &cname, &mut value)?;
        // SAFETY: a valid descriptor, a NUL-terminated name, a value of `len` bytes.
        let rc = unsafe {
            libc::fsetxattr(
                dest.as_raw_fd(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                len,
                0,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOTSUP) {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "setting xattr {}: {e}",
                        OsStr::from_bytes(name).to_string_lossy()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn get_xattr(src: BorrowedFd<'_>, name: &CStr, value: &mut [u8]) -> io::Result<usize> {
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the given size.
    let n = unsafe {
        libc::fgetxattr(
            src.as_raw_fd(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests;
