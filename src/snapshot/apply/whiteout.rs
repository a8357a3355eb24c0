//! OCI whiteouts in their overlayfs form: `.wh.<name>` a 0/0 character device,
//! `.wh..wh..opq` the opaque xattr on its directory.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::lchown;
use std::path::Path;

use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::meta::Meta;
use super::{Applier, Failure, context, refuse};

/// Basename prefix of an OCI whiteout: `.wh.<name>` deletes `<name>`.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Basename prefix reserved for whiteout metadata (e.g. aufs' `.wh..wh.plnk`).
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// Basename marking its directory opaque: lower layers' contents are hidden.
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
/// How overlayfs records an opaque directory.
pub(super) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// The whiteout an entry stands for, if its basename says it is one.
pub(super) enum Whiteout<'a> {
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted.
    Remove(&'a OsStr),
    /// Other `.wh..wh.*` names: whiteout metadata with no meaning for overlayfs.
    Ignored,
}

impl Whiteout<'_> {
    pub(super) fn of(rel: &Path) -> Result<Option<Whiteout<'_>>, Failure> {
        let Some(base) = rel.file_name() else {
            return Ok(None);
        };
        let base = base.as_bytes();
        if base == WHITEOUT_OPAQUE {
            return Ok(Some(Whiteout::Opaque));
        }
        if base.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(Some(Whiteout::Ignored));
        }
        match base.strip_prefix(WHITEOUT_PREFIX) {
            None => Ok(None),
            // `.wh.`, `.wh..` and `.wh...` would whiteout the directory itself or its parent.
            Some(b"" | b"." | b"..") => Err(refuse("whiteout does not name a file")),
            Some(name) => Ok(Some(Whiteout::Remove(OsStr::from_bytes(name)))),
        }
    }
}

impl Applier<'_> {
    /// `.wh.<name>` becomes a 0/0 character device at `hidden`, which is how
    /// overlayfs hides `<name>` of the layers below.
    pub(super) fn whiteout(&mut self, hidden: &Path, meta: &Meta) -> Result<(), Failure> {
        let (path, _) = self.prepare(hidden, false)?;
        mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))?;
        lchown(&path, Some(meta.uid), Some(meta.gid)).map_err(|e| context(e, "chown"))?;
        Ok(())
    }

    /// `.wh..wh..opq` marks its directory opaque for overlayfs; the marker
    /// itself is not created.
    pub(super) fn mark_opaque(&mut self, marker: &Path) -> Result<(), Failure> {
        // Creates the marked directory too if the layer did not list it.
        self.walk_parents(marker, true)?;
        let dir = self.dest.join(marker.parent().unwrap_or(Path::new("")));
        xattr::set(&dir, OPAQUE_XATTR, b"y").map_err(|e| context(e, OPAQUE_XATTR))?;
        Ok(())
    }
}
