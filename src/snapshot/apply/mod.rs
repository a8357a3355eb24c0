//! Applying an OCI image layer (a tar stream, maybe compressed) into an empty
//! directory that becomes an overlayfs lower layer.
//!
//! This follows containerd's overlay applier, but the rules that keep a layer
//! confined are spelled out here instead of being left to `tar::Entry::unpack`:
//!
//! * tar paths are normalised (leading `/` and `./`, `.` components dropped)
//!   and any `..` component is refused;
//! * nothing is ever written through a symlink: every parent of an entry is
//!   checked with `lstat` first, and an existing entry is removed, never
//!   followed, before it is replaced;
//! * OCI whiteouts become their overlayfs form: `.wh.<name>` a 0/0 character
//!   device, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.
//!
//! * only extended attributes that describe a file inside the container are set
//!   (`user.*`, file capabilities, ACLs): `trusted.*` (overlayfs's own metadata) and LSM
//!   labels are dropped, counted in [`Applied::dropped_xattrs`] (see `meta.rs`).
//!
//! The layer's diff ID (sha256 of the whole uncompressed stream) is computed on
//! the way through, so the caller can check it against the image config.
//!
//! # What a layer can cost berthd
//!
//! The tar stream is read by `reader.rs`, which bounds every extension header (GNU long
//! names and links, PAX records) at [`MAX_EXTENSION_BYTES`] and refuses a bigger one before
//! reading it, as Go's archive/tar does for containerd. Beyond those, an unpack holds a
//! 64 KiB copy buffer, the decoder's window (32 KiB for gzip, at most 128 MiB for zstd) and
//! the caller's read buffer; `image::pull` bounds how many unpacks run at once.
//!
//! A layer's unpacked size is **not** capped, as containerd and CRI-O do not cap it: disk
//! belongs to the filesystem holding berth's root and to the kubelet, which watches that
//! image filesystem and collects images (then evicts pods) when it fills. Any fixed cap
//! would be too small for real images (tens of GB for ML runtimes) or too large to protect
//! anything; a zip bomb costs the node disk at disk speed, like a big honest image. The one
//! thing in memory that grows with the layer is the table of directory times restored at
//! the end: a path and two times per directory the layer creates (containerd's applier
//! keeps the same), and those directories cost inodes on disk first.

mod compression;
mod entry;
#[cfg(test)]
pub(crate) mod fuzz;
mod kind;
mod meta;
mod path;
mod reader;
#[cfg(test)]
mod tests;
mod whiteout;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

use compression::decompress;
use meta::{Meta, Times, set_times};
use path::clean_path;
use whiteout::Whiteout;

pub use compression::Compression;
pub use reader::{MAX_EXTENSION_BYTES, SeekingFile, TarEntry, TarReader, TarSource};

/// What applying a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// "sha256:<hex>" of the whole uncompressed tar stream (the OCI diff ID), including
    /// everything after the end-of-archive blocks: drain the stream to EOF before finishing.
    pub diff_id: String,
    /// Bytes of regular-file content written.
    pub unpacked_bytes: u64,
    /// Number of tar entries processed.
    pub entries: u64,
    /// Extended attributes the layer carried but an image may not set (see `meta.rs`).
    pub dropped_xattrs: u64,
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The layer tries to escape the snapshot or is otherwise unsafe; `entry` is the tar path.
    #[error("layer entry {entry:?} refused: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error("layer entry {entry:?}: {source}")]
    Entry {
        entry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading layer: {0}")]
    Read(#[source] std::io::Error),
}

/// A layer that is unsafe or malformed is the image's fault (InvalidArgument); a
/// write or read that fails (a full disk, a bad device) is an I/O failure, so a
/// full disk reaches the client as the node's condition, not as a bad image.
impl From<ApplyError> for crate::error::Error {
    fn from(e: ApplyError) -> Self {
        use crate::error::{Error, is_node_failure};
        match e {
            ApplyError::Entry { entry, source } if is_node_failure(&source) => Error::Io {
                context: format!("layer entry {entry:?}"),
                source,
            },
            ApplyError::Read(source) if is_node_failure(&source) => Error::Io {
                context: "reading layer".into(),
                source,
            },
            e => Error::InvalidArgument(e.to_string()),
        }
    }
}

/// Apply the layer read from `reader` into `dest`, an existing empty directory.
///
/// On error `dest` is left partially populated; the caller discards it.
pub fn apply_layer(
    reader: impl std::io::Read,
    compression: Compression,
    dest: &std::path::Path,
) -> Result<Applied, ApplyError> {
    let stream = HashingReader::new(decompress(reader, compression).map_err(ApplyError::Read)?);
    let mut tar = TarReader::new(stream);
    let mut applier = Applier::new(dest);
    while let Some(entry) = tar.next_entry().map_err(ApplyError::Read)? {
        applier.apply_entry(&entry, &mut tar.data())?;
    }
    let mut stream = tar.into_inner();
    // The diff ID covers the whole stream, padding after the end marker included.
    io::copy(&mut stream, &mut io::sink()).map_err(ApplyError::Read)?;
    applier.restore_dir_times()?;
    Ok(Applied {
        diff_id: stream.diff_id(),
        unpacked_bytes: applier.unpacked_bytes,
        entries: applier.entries,
        dropped_xattrs: applier.dropped_xattrs,
    })
}

/// A `Read` that hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn diff_id(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Skipped data is read all the same: the diff ID covers it.
impl<R: Read> TarSource for HashingReader<R> {}

/// What went wrong with one entry, before the entry's name is attached.
#[derive(Debug)]
enum Failure {
    Unsafe(String),
    Io(io::Error),
    /// The layer stream itself failed (truncated, corrupt compression, ...).
    Read(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

impl From<nix::Error> for Failure {
    fn from(e: nix::Error) -> Self {
        Failure::Io(e.into())
    }
}

impl Failure {
    fn named(self, entry: &str) -> ApplyError {
        let entry = entry.to_owned();
        match self {
            Failure::Unsafe(reason) => ApplyError::Unsafe { entry, reason },
            Failure::Io(source) => ApplyError::Entry { entry, source },
            Failure::Read(e) => ApplyError::Read(e),
        }
    }
}

fn refuse(reason: impl Into<String>) -> Failure {
    Failure::Unsafe(reason.into())
}

/// Prefixes an I/O error with what we were doing, keeping its kind and the
/// error itself as the source, so its errno (a full disk, a failing device)
/// still says whose fault it is ([`crate::error::os_errno`]).
fn context(e: io::Error, what: impl Display) -> io::Error {
    io::Error::new(
        e.kind(),
        Context {
            what: what.to_string(),
            source: e,
        },
    )
}

#[derive(Debug)]
struct Context {
    what: String,
    source: io::Error,
}

impl Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Applies entries one by one into `dest`, keeping what must be done last.
struct Applier<'d> {
    dest: &'d Path,
    /// Directory times, keyed by path relative to `dest`. Creating children
    /// changes a directory's mtime, so they are set once every entry is in.
    dir_times: BTreeMap<PathBuf, Times>,
    unpacked_bytes: u64,
    entries: u64,
    dropped_xattrs: u64,
}

impl<'d> Applier<'d> {
    fn new(dest: &'d Path) -> Self {
        Applier {
            dest,
            dir_times: BTreeMap::new(),
            unpacked_bytes: 0,
            entries: 0,
            dropped_xattrs: 0,
        }
    }

    fn apply_entry(&mut self, entry: &TarEntry, data: &mut impl Read) -> Result<(), ApplyError> {
        self.entries += 1;
        self.apply(entry, data)
            .map_err(|failure| failure.named(&String::from_utf8_lossy(entry.path_bytes())))
    }

    fn apply(&mut self, entry: &TarEntry, data: &mut impl Read) -> Result<(), Failure> {
        // A global PAX header describes the archive, not a file.
        if entry.header().entry_type() == EntryType::XGlobalHeader {
            return Ok(());
        }
        let rel = clean_path(entry.path_bytes(), "path")?;
        let meta = Meta::read(entry)?;
        self.dropped_xattrs += meta.dropped_xattrs;
        match Whiteout::of(&rel)? {
            Some(Whiteout::Opaque) => self.mark_opaque(&rel),
            Some(Whiteout::Remove(name)) => self.whiteout(&rel.with_file_name(name), &meta),
            Some(Whiteout::Ignored) => Ok(()),
            None => self.create(entry, data, &rel, &meta),
        }
    }

    /// Sets the recorded directory times, now that no child will change them.
    fn restore_dir_times(&mut self) -> Result<(), ApplyError> {
        for (rel, times) in std::mem::take(&mut self.dir_times) {
            let name = if rel.as_os_str().is_empty() {
                ".".to_owned()
            } else {
                rel.to_string_lossy().into_owned()
            };
            // `remove` keeps this map in step with the tree; checking again is cheap.
            self.walk_parents(&rel, false).map_err(|f| f.named(&name))?;
            set_times(&self.dest.join(&rel), times).map_err(|source| ApplyError::Entry {
                entry: name,
                source: context(source, "setting times"),
            })?;
        }
        Ok(())
    }
}
