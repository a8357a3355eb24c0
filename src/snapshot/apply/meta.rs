//! An entry's metadata: read from its header and PAX records (ownership, mode, times,
//! xattrs), and set on what was created without following symlinks.

use std::ffi::{OsStr, OsString};
use std::fs::{self, Permissions};
use std::io::{self, ErrorKind};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::Path;

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use super::kind::Kind;
use super::reader::TarEntry;
use super::{Applier, Failure, context};

/// PAX record prefix carrying an extended attribute (as written by GNU tar and Go).
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Access and modification times.
#[derive(Debug, Clone, Copy)]
pub(super) struct Times {
    atime: TimeSpec,
    mtime: TimeSpec,
}

/// The metadata of an entry, from its header and PAX records.
pub(super) struct Meta {
    /// Permission bits including setuid, setgid and sticky.
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    times: Times,
    xattrs: Vec<(OsString, Vec<u8>)>,
    /// Extended attributes the entry carried that an image may not set.
    pub(super) dropped_xattrs: u64,
}

impl Meta {
    pub(super) fn read(entry: &TarEntry) -> io::Result<Meta> {
        let header = entry.header();
        let mode = header.mode()? & 0o7777;
        let uid = id_of(entry.uid()?, "uid")?;
        let gid = id_of(entry.gid()?, "gid")?;
        let header_mtime = TimeSpec::new(i64::try_from(header.mtime()?).unwrap_or(i64::MAX), 0);

        let (mut atime, mut mtime, mut xattrs, mut dropped_xattrs) = (None, None, Vec::new(), 0);
        for (key, value) in entry.pax_records() {
            if key == b"mtime" {
                mtime = Some(parse_pax_time(value)?);
            } else if key == b"atime" {
                atime = Some(parse_pax_time(value)?);
            } else if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                if image_may_set(name) {
                    xattrs.push((OsStr::from_bytes(name).to_owned(), value.to_vec()));
                } else {
                    dropped_xattrs += 1;
                }
            }
        }
        let mtime = mtime.unwrap_or(header_mtime);
        Ok(Meta {
            mode,
            uid,
            gid,
            times: Times {
                atime: atime.unwrap_or(mtime),
                mtime,
            },
            xattrs,
            dropped_xattrs,
        })
    }
}

/// Whether an image may set the extended attribute `name` on its files. berthd runs as
/// root, so the kernel would write anything it is asked to; what an image asks for is
/// limited to what describes the file inside the container:
///
/// * `user.*`, except `user.overlay.*`, which overlayfs reads as its own metadata when
///   mounted with `userxattr`;
/// * `security.capability` (file capabilities: `ping`, `arping`...);
/// * `system.posix_acl_access` and `system.posix_acl_default` (ACLs).
///
/// Everything else is dropped: `trusted.*` is where overlayfs keeps whiteouts, opaque
/// directories, redirects and metacopy origins, so a layer setting it could reach into
/// other layers of the stack; other `security.*` names are LSM labels (SELinux, Smack,
/// IMA/EVM) that the host assigns, not the image; other `system.*` names are
/// filesystem-specific. The opaque marker berth itself sets for `.wh..wh..opq` is not an
/// xattr the layer carries, so it is unaffected.
pub(super) fn image_may_set(name: &[u8]) -> bool {
    (name.starts_with(b"user.") && !name.starts_with(b"user.overlay."))
        || matches!(
            name,
            b"security.capability" | b"system.posix_acl_access" | b"system.posix_acl_default"
        )
}

fn id_of(id: u64, what: &str) -> io::Result<u32> {
    u32::try_from(id)
        .map_err(|_| io::Error::new(ErrorKind::InvalidData, format!("{what} {id} out of range")))
}

/// Parses a PAX time: decimal seconds, optionally negative, with an optional
/// fraction of which nanoseconds are kept (e.g. `1600000000.123456789`).
pub(super) fn parse_pax_time(value: &[u8]) -> io::Result<TimeSpec> {
    let invalid = || {
        io::Error::new(
            ErrorKind::InvalidData,
            format!("invalid PAX time {:?}", String::from_utf8_lossy(value)),
        )
    };
    let text = std::str::from_utf8(value).map_err(|_| invalid())?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !all_digits(secs) || !all_digits(frac) {
        return Err(invalid());
    }
    let secs: i64 = secs.parse().map_err(|_| invalid())?;
    let nanos = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0i64, |n, digit| n * 10 + i64::from(digit - b'0'));
    Ok(match (negative, nanos) {
        (false, _) => TimeSpec::new(secs, nanos),
        (true, 0) => TimeSpec::new(-secs, 0),
        // -1.25 s is -2 s + 0.75 s: tv_nsec is never negative.
        (true, _) => TimeSpec::new(-secs - 1, 1_000_000_000 - nanos),
    })
}

impl Applier<'_> {
    /// Ownership, then mode (chown clears setuid/setgid), then xattrs, then
    /// times; a directory's times wait for `restore_dir_times`.
    pub(super) fn set_metadata(
        &mut self,
        rel: &Path,
        kind: Kind,
        meta: &Meta,
    ) -> Result<(), Failure> {
        let path = self.dest.join(rel);
        lchown(&path, Some(meta.uid), Some(meta.gid)).map_err(|e| context(e, "chown"))?;
        // There is no lchmod; `path` is known not to be a symlink otherwise.
        if kind != Kind::Symlink {
            fs::set_permissions(&path, Permissions::from_mode(meta.mode))
                .map_err(|e| context(e, "chmod"))?;
        }
        set_xattrs(&path, kind, &meta.xattrs)?;
        if kind == Kind::Dir {
            self.dir_times.insert(rel.to_path_buf(), meta.times);
        } else {
            set_times(&path, meta.times).map_err(|e| context(e, "setting times"))?;
        }
        Ok(())
    }
}

/// Sets extended attributes on `path` itself (lsetxattr: never through a symlink).
fn set_xattrs(path: &Path, kind: Kind, xattrs: &[(OsString, Vec<u8>)]) -> io::Result<()> {
    for (name, value) in xattrs {
        match xattr::set(path, name, value) {
            Ok(()) => {}
            // The filesystem has no xattrs at all; containerd skips these too.
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            // The kernel allows user.* only on regular files and directories.
            Err(e)
                if e.raw_os_error() == Some(libc::EPERM)
                    && name.as_bytes().starts_with(b"user.")
                    && !matches!(kind, Kind::File | Kind::Dir) => {}
            Err(e) => return Err(context(e, format_args!("setting xattr {name:?}"))),
        }
    }
    Ok(())
}

/// Sets the times of `path` itself, never of a symlink's target.
pub(super) fn set_times(path: &Path, times: Times) -> io::Result<()> {
    utimensat(
        AT_FDCWD,
        path,
        &times.atime,
        &times.mtime,
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}
