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
//! The layer's diff ID (sha256 of the whole uncompressed stream) is computed on
//! the way through, so the caller can check it against the image config.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::fs::{self, File, Permissions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use tar::EntryType;

/// Basename prefix of an OCI whiteout: `.wh.<name>` deletes `<name>`.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Basename prefix reserved for whiteout metadata (e.g. aufs' `.wh..wh.plnk`).
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// Basename marking its directory opaque: lower layers' contents are hidden.
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
/// How overlayfs records an opaque directory.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// PAX record prefix carrying an extended attribute (as written by GNU tar and Go).
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// Size of the copy buffer for file contents.
const COPY_BUFFER: usize = 64 * 1024;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From an OCI / Docker layer media type, e.g. application/vnd.oci.image.layer.v1.tar+gzip,
    /// application/vnd.docker.image.rootfs.diff.tar.gzip, ...tar+zstd, ...tar, and the
    /// nondistributable variants. None for an unknown media type.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        // Media types are case-insensitive and may carry parameters after `;`.
        let essence = media_type.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// From the first bytes of a blob (gzip 1f 8b, zstd 28 b5 2f fd, else None).
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

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

/// Apply the layer read from `reader` into `dest`, an existing empty directory.
///
/// On error `dest` is left partially populated; the caller discards it.
pub fn apply_layer(
    reader: impl std::io::Read,
    compression: Compression,
    dest: &std::path::Path,
) -> Result<Applied, ApplyError> {
    let mut stream = HashingReader::new(decompress(reader, compression).map_err(ApplyError::Read)?);
    let mut applier = Applier::new(dest);
    {
        let mut archive = tar::Archive::new(&mut stream);
        for entry in archive.entries().map_err(ApplyError::Read)? {
            let mut entry = entry.map_err(ApplyError::Read)?;
            applier.apply_entry(&mut entry)?;
        }
    }
    check_end_of_archive(&mut stream).map_err(ApplyError::Read)?;
    // The diff ID covers the whole stream, padding after the end marker included.
    io::copy(&mut stream, &mut io::sink()).map_err(ApplyError::Read)?;
    applier.restore_dir_times()?;
    Ok(Applied {
        diff_id: stream.diff_id(),
        unpacked_bytes: applier.unpacked_bytes,
        entries: applier.entries,
    })
}

/// Wraps `reader` in the decoder for `compression`.
fn decompress<'r, R: Read + 'r>(
    reader: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'r>> {
    Ok(match compression {
        Compression::None => Box::new(reader),
        // Multi-member: pigz and friends write concatenated gzip members.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    })
}

/// The tar crate stops at the first all-zero block. Go's archive/tar (and so
/// containerd) insists the next block is zero too or absent; otherwise entries
/// could hide after the end marker, invisible here but not to other tools.
fn check_end_of_archive(stream: &mut impl Read) -> io::Result<()> {
    let mut block = Vec::with_capacity(512);
    stream.take(512).read_to_end(&mut block)?;
    if block.iter().any(|&b| b != 0) {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            "data after the tar end-of-archive block",
        ));
    }
    Ok(())
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

/// Prefixes an I/O error with what we were doing, keeping its kind.
fn context(e: io::Error, what: impl Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Normalises a tar path (or hard link target) to a path relative to the
/// layer root. Leading `/` and `./`, empty and `.` components are dropped, so
/// absolute paths stay inside the layer. `..` is refused outright: whatever it
/// would resolve to, a well-formed layer never needs it.
fn clean_path(raw: &[u8], what: &str) -> Result<PathBuf, Failure> {
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

/// How a tar entry is materialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    HardLink,
    /// Character or block device, or fifo.
    Node(SFlag),
}

impl Kind {
    fn of(header: &tar::Header, raw_path: &[u8]) -> Result<Kind, Failure> {
        Ok(match header.entry_type() {
            // Pre-POSIX archives mark a directory by a trailing slash on a '\0' entry.
            EntryType::Regular if header.as_old().linkflag[0] == 0 && raw_path.ends_with(b"/") => {
                Kind::Dir
            }
            EntryType::Regular | EntryType::Continuous => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::HardLink,
            EntryType::Char => Kind::Node(SFlag::S_IFCHR),
            EntryType::Block => Kind::Node(SFlag::S_IFBLK),
            EntryType::Fifo => Kind::Node(SFlag::S_IFIFO),
            other => {
                return Err(Failure::Io(io::Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "unsupported tar entry type {other:?} ({:?})",
                        char::from(other.as_byte())
                    ),
                )));
            }
        })
    }
}

/// The whiteout an entry stands for, if its basename says it is one.
enum Whiteout<'a> {
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted.
    Remove(&'a OsStr),
    /// Other `.wh..wh.*` names: whiteout metadata with no meaning for overlayfs.
    Ignored,
}

impl Whiteout<'_> {
    fn of(rel: &Path) -> Result<Option<Whiteout<'_>>, Failure> {
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

/// Access and modification times.
#[derive(Debug, Clone, Copy)]
struct Times {
    atime: TimeSpec,
    mtime: TimeSpec,
}

/// The metadata of an entry, from its header and PAX records.
struct Meta {
    /// Permission bits including setuid, setgid and sticky.
    mode: u32,
    uid: u32,
    gid: u32,
    times: Times,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Meta {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
        let header = entry.header();
        let mode = header.mode()? & 0o7777;
        let uid = id_of(header.uid()?, "uid")?;
        let gid = id_of(header.gid()?, "gid")?;
        let header_mtime = TimeSpec::new(i64::try_from(header.mtime()?).unwrap_or(i64::MAX), 0);

        let (mut atime, mut mtime, mut xattrs) = (None, None, Vec::new());
        if let Some(records) = entry.pax_extensions()? {
            for record in records {
                let record = record?;
                let (key, value) = (record.key_bytes(), record.value_bytes());
                if key == b"mtime" {
                    mtime = Some(parse_pax_time(value)?);
                } else if key == b"atime" {
                    atime = Some(parse_pax_time(value)?);
                } else if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    xattrs.push((OsStr::from_bytes(name).to_owned(), value.to_vec()));
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
        })
    }
}

fn id_of(id: u64, what: &str) -> io::Result<u32> {
    u32::try_from(id)
        .map_err(|_| io::Error::new(ErrorKind::InvalidData, format!("{what} {id} out of range")))
}

/// Parses a PAX time: decimal seconds, optionally negative, with an optional
/// fraction of which nanoseconds are kept (e.g. `1600000000.123456789`).
fn parse_pax_time(value: &[u8]) -> io::Result<TimeSpec> {
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

/// Applies entries one by one into `dest`, keeping what must be done last.
struct Applier<'d> {
    dest: &'d Path,
    /// Directory times, keyed by path relative to `dest`. Creating children
    /// changes a directory's mtime, so they are set once every entry is in.
    dir_times: BTreeMap<PathBuf, Times>,
    unpacked_bytes: u64,
    entries: u64,
}

impl<'d> Applier<'d> {
    fn new(dest: &'d Path) -> Self {
        Applier {
            dest,
            dir_times: BTreeMap::new(),
            unpacked_bytes: 0,
            entries: 0,
        }
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ApplyError> {
        self.entries += 1;
        let raw_path = entry.path_bytes().into_owned();
        self.apply(entry, &raw_path)
            .map_err(|failure| failure.named(&String::from_utf8_lossy(&raw_path)))
    }

    fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw_path: &[u8],
    ) -> Result<(), Failure> {
        // A global PAX header describes the archive, not a file.
        if entry.header().entry_type() == EntryType::XGlobalHeader {
            return Ok(());
        }
        let rel = clean_path(raw_path, "path")?;
        let meta = Meta::read(entry)?;
        match Whiteout::of(&rel)? {
            Some(Whiteout::Opaque) => self.mark_opaque(&rel),
            Some(Whiteout::Remove(name)) => self.whiteout(&rel.with_file_name(name), &meta),
            Some(Whiteout::Ignored) => Ok(()),
            None => self.create(entry, raw_path, &rel, &meta),
        }
    }

    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw_path: &[u8],
        rel: &Path,
        meta: &Meta,
    ) -> Result<(), Failure> {
        let kind = Kind::of(entry.header(), raw_path)?;
        if rel.as_os_str().is_empty() {
            // The layer root itself (`./`): only its metadata applies.
            if kind != Kind::Dir {
                return Err(refuse("only a directory may name the layer root"));
            }
            return self.set_metadata(rel, kind, meta);
        }
        match kind {
            // A hard link shares its target's inode, whose entry set the metadata.
            Kind::HardLink => self.hard_link(entry, rel),
            Kind::Dir => self.make_dir(rel, meta),
            Kind::File => self.make_file(entry, rel, meta),
            Kind::Symlink => self.make_symlink(entry, rel, meta),
            Kind::Node(node) => self.make_node(entry.header(), rel, node, meta),
        }
    }

    fn make_dir(&mut self, rel: &Path, meta: &Meta) -> Result<(), Failure> {
        let (path, is_existing_dir) = self.prepare(rel, true)?;
        if !is_existing_dir {
            fs::DirBuilder::new().mode(0o700).create(&path)?;
        }
        self.set_metadata(rel, Kind::Dir, meta)
    }

    fn make_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        meta: &Meta,
    ) -> Result<(), Failure> {
        let (path, _) = self.prepare(rel, false)?;
        // create_new: O_EXCL never follows a symlink at `path` (`prepare` removed any anyway).
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let expected = entry.size();
        let written = copy_content(entry, &mut file)?;
        if written != expected {
            return Err(Failure::Read(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("layer ends inside a file: {written} of {expected} bytes"),
            )));
        }
        self.unpacked_bytes = self.unpacked_bytes.saturating_add(written);
        drop(file);
        self.set_metadata(rel, Kind::File, meta)
    }

    fn make_symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        rel: &Path,
        meta: &Meta,
    ) -> Result<(), Failure> {
        // Stored verbatim: a symlink may point anywhere, it is just never followed here.
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "symlink has no target"))?;
        let (path, _) = self.prepare(rel, false)?;
        symlink(OsStr::from_bytes(&target), &path)?;
        self.set_metadata(rel, Kind::Symlink, meta)
    }

    fn make_node(
        &mut self,
        header: &tar::Header,
        rel: &Path,
        node: SFlag,
        meta: &Meta,
    ) -> Result<(), Failure> {
        // A fifo has no device numbers, and writers often leave the fields blank.
        let dev = if node == SFlag::S_IFIFO {
            0
        } else {
            device_of(header)?
        };
        let (path, _) = self.prepare(rel, false)?;
        mknod(
            &path,
            node,
            Mode::from_bits_truncate(meta.mode & 0o777),
            dev,
        )?;
        self.set_metadata(rel, Kind::Node(node), meta)
    }

    /// Makes room for `rel`: creates its missing parents, refuses symlinked
    /// ones, and removes whatever is at `rel` unless both it and the new
    /// entry are directories (then the entry only updates metadata).
    /// Returns the full path and whether a directory is kept there.
    fn prepare(&mut self, rel: &Path, is_dir: bool) -> Result<(PathBuf, bool), Failure> {
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
    fn walk_parents(&self, rel: &Path, create: bool) -> Result<(), Failure> {
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
        self.dir_times.retain(|dir, _| !dir.starts_with(rel));
        Ok(())
    }

    /// Links `rel` to the entry's target, which must already be in the layer,
    /// reached without symlinks, and not be a directory.
    fn hard_link<R: Read>(&mut self, entry: &tar::Entry<'_, R>, rel: &Path) -> Result<(), Failure> {
        let raw_target = entry
            .link_name_bytes()
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "hard link has no target"))?;
        let target_rel = clean_path(&raw_target, "hard link target")?;
        if target_rel.as_os_str().is_empty() {
            return Err(refuse("hard link target is the layer root"));
        }
        if target_rel == rel {
            return Err(refuse("hard link to itself"));
        }
        self.walk_parents(&target_rel, false)?;
        let target = self.dest.join(&target_rel);
        let found = fs::symlink_metadata(&target)
            .map_err(|e| context(e, format_args!("hard link target {target_rel:?}")))?;
        if found.is_dir() {
            return Err(refuse(format!(
                "hard link target {target_rel:?} is a directory"
            )));
        }
        let (path, _) = self.prepare(rel, false)?;
        // linkat without AT_SYMLINK_FOLLOW: a symlink target is linked, not followed.
        fs::hard_link(&target, &path)?;
        Ok(())
    }

    /// `.wh.<name>` becomes a 0/0 character device at `hidden`, which is how
    /// overlayfs hides `<name>` of the layers below.
    fn whiteout(&mut self, hidden: &Path, meta: &Meta) -> Result<(), Failure> {
        let (path, _) = self.prepare(hidden, false)?;
        mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))?;
        lchown(&path, Some(meta.uid), Some(meta.gid)).map_err(|e| context(e, "chown"))?;
        Ok(())
    }

    /// `.wh..wh..opq` marks its directory opaque for overlayfs; the marker
    /// itself is not created.
    fn mark_opaque(&mut self, marker: &Path) -> Result<(), Failure> {
        // Creates the marked directory too if the layer did not list it.
        self.walk_parents(marker, true)?;
        let dir = self.dest.join(marker.parent().unwrap_or(Path::new("")));
        xattr::set(&dir, OPAQUE_XATTR, b"y").map_err(|e| context(e, OPAQUE_XATTR))?;
        Ok(())
    }

    /// Ownership, then mode (chown clears setuid/setgid), then xattrs, then
    /// times; a directory's times wait for `restore_dir_times`.
    fn set_metadata(&mut self, rel: &Path, kind: Kind, meta: &Meta) -> Result<(), Failure> {
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

/// Creates a directory the layer did not list but needs as a parent.
fn create_parent_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o755).create(path)?;
    // Explicitly, so neither the umask nor a setgid parent decides.
    if nix::unistd::geteuid().is_root() {
        lchown(path, Some(0), Some(0))?;
    }
    fs::set_permissions(path, Permissions::from_mode(0o755))
}

/// Copies an entry's content, telling stream failures from write failures.
fn copy_content(from: &mut impl Read, to: &mut File) -> Result<u64, Failure> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Read(e)),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn device_of(header: &tar::Header) -> io::Result<libc::dev_t> {
    // Pre-POSIX headers have no device fields; Go reads them as 0 too.
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
    Ok(makedev(major.into(), minor.into()))
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
fn set_times(path: &Path, times: Times) -> io::Result<()> {
    utimensat(
        AT_FDCWD,
        path,
        &times.atime,
        &times.mtime,
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use tar::{Builder, Header};
    use tempfile::TempDir;

    const MTIME: u64 = 1_500_000_000;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// The owner to give test entries: one only root can set, else our own.
    fn owner() -> (u32, u32) {
        if is_root() {
            (1234, 5678)
        } else {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        }
    }

    /// A scratch area holding `dest` (the layer root) and `outside`, a
    /// sibling that must stay untouched.
    struct Scratch {
        root: TempDir,
    }

    impl Scratch {
        fn new() -> Self {
            let root = TempDir::new().expect("tempdir");
            fs::create_dir(root.path().join("dest")).expect("dest");
            fs::create_dir(root.path().join("outside")).expect("outside");
            Scratch { root }
        }
        fn dest(&self) -> PathBuf {
            self.root.path().join("dest")
        }
        fn outside(&self) -> PathBuf {
            self.root.path().join("outside")
        }
        fn apply(&self, tar: &[u8]) -> Result<Applied, ApplyError> {
            apply_layer(tar, Compression::None, &self.dest())
        }
        fn assert_outside_untouched(&self) {
            let left: Vec<_> = fs::read_dir(self.outside())
                .expect("read outside")
                .map(|e| e.expect("dirent").file_name())
                .collect();
            assert!(left.is_empty(), "outside was written: {left:?}");
            let mut top: Vec<_> = fs::read_dir(self.root.path())
                .expect("read root")
                .map(|e| e.expect("dirent").file_name())
                .collect();
            top.sort();
            assert_eq!(
                top,
                ["dest", "outside"],
                "something was created next to dest"
            );
        }
    }

    fn header(kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        let (uid, gid) = owner();
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h
    }

    fn file(b: &mut Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
        let mut h = header(EntryType::Regular, mode, data.len() as u64);
        b.append_data(&mut h, path, data).expect("append file");
    }

    fn dir(b: &mut Builder<Vec<u8>>, path: &str, mode: u32, mtime: u64) {
        let mut h = header(EntryType::Directory, mode, 0);
        h.set_mtime(mtime);
        b.append_data(&mut h, path, io::empty())
            .expect("append dir");
    }

    fn link(b: &mut Builder<Vec<u8>>, kind: EntryType, path: &str, target: &str) {
        let mut h = header(kind, 0o777, 0);
        h.set_link_name(target).expect("link name");
        b.append_data(&mut h, path, io::empty())
            .expect("append link");
    }

    /// An entry whose name the tar builder would refuse (`..`, absolute).
    fn raw(b: &mut Builder<Vec<u8>>, name: &[u8], kind: EntryType, data: &[u8]) {
        let mut h = header(kind, 0o644, data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, data).expect("append raw");
    }

    fn tar(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().expect("finish tar")
    }

    fn mtime_of(path: &Path) -> (i64, i64) {
        let m = fs::symlink_metadata(path).expect("lstat");
        (m.mtime(), m.mtime_nsec())
    }

    fn expect_unsafe(result: Result<Applied, ApplyError>, entry: &str) {
        match result {
            Err(ApplyError::Unsafe { entry: e, reason }) => {
                assert_eq!(e, entry, "wrong entry named ({reason})");
            }
            other => panic!("expected {entry:?} to be refused, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_files_dirs_links_and_metadata() {
        let s = Scratch::new();
        let layer = tar(|b| {
            dir(b, "./", 0o711, 1_000);
            dir(b, "d", 0o750, 1_111_111_111);
            file(b, "d/f", 0o4755, b"hello");
            file(b, "d/sticky", 0o1777, b"");
            link(b, EntryType::Symlink, "d/l", "../nowhere/f");
            link(b, EntryType::Link, "d/h", "./d/f");
            b.append_pax_extensions([
                ("SCHILY.xattr.user.test", b"value".as_slice()),
                ("mtime", b"1600000000.25".as_slice()),
            ])
            .expect("pax");
            file(b, "d/x", 0o600, b"xattr");
            file(b, "implicit/parent/f", 0o644, b"1");
        });
        let applied = s.apply(&layer).expect("apply");
        assert_eq!(applied.entries, 8, "the PAX header belongs to d/x");
        assert_eq!(applied.unpacked_bytes, 5 + 5 + 1);

        let d = s.dest().join("d");
        let (uid, gid) = owner();
        let f = fs::symlink_metadata(d.join("f")).expect("f");
        assert_eq!(fs::read(d.join("f")).expect("read f"), b"hello");
        assert_eq!(f.mode() & 0o7777, 0o4755, "setuid kept");
        assert_eq!((f.uid(), f.gid()), (uid, gid));
        assert_eq!(f.mtime(), MTIME as i64);
        assert_eq!(
            fs::symlink_metadata(d.join("sticky"))
                .expect("sticky")
                .mode()
                & 0o7777,
            0o1777
        );

        let dm = fs::symlink_metadata(&d).expect("d");
        assert!(dm.is_dir());
        assert_eq!(dm.mode() & 0o7777, 0o750);
        assert_eq!((dm.uid(), dm.gid()), (uid, gid));
        assert_eq!(
            mtime_of(&d),
            (1_111_111_111, 0),
            "dir mtime survives its children"
        );
        let root = fs::symlink_metadata(s.dest()).expect("dest");
        assert_eq!(root.mode() & 0o7777, 0o711, "./ applies to dest");
        assert_eq!(root.mtime(), 1_000);

        assert_eq!(
            fs::read_link(d.join("l")).expect("readlink"),
            Path::new("../nowhere/f")
        );
        assert_eq!(fs::symlink_metadata(d.join("h")).expect("h").ino(), f.ino());

        let x = d.join("x");
        assert_eq!(
            xattr::get(&x, "user.test").expect("getxattr"),
            Some(b"value".to_vec())
        );
        assert_eq!(mtime_of(&x), (1_600_000_000, 250_000_000), "PAX mtime wins");

        let implicit = fs::symlink_metadata(s.dest().join("implicit/parent")).expect("implicit");
        assert_eq!(implicit.mode() & 0o7777, 0o755);
        if is_root() {
            assert_eq!((implicit.uid(), implicit.gid()), (0, 0));
        }
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        if !is_root() {
            eprintln!("skipping whiteouts_become_overlay_whiteouts: needs root");
            return;
        }
        let s = Scratch::new();
        let layer = tar(|b| {
            dir(b, "a", 0o755, MTIME);
            file(b, "a/.wh.gone", 0o644, b"");
            file(b, "b/.wh..wh..opq", 0o644, b"");
            file(b, ".wh..wh..opq", 0o644, b"");
            file(b, "a/.wh..wh.plnk", 0o644, b"");
        });
        let applied = s.apply(&layer).expect("apply");
        assert_eq!(applied.entries, 5);

        let gone = fs::symlink_metadata(s.dest().join("a/gone")).expect("whiteout");
        assert!(gone.file_type().is_char_device());
        assert_eq!(gone.rdev(), 0);
        assert_eq!((gone.uid(), gone.gid()), owner());
        assert!(!s.dest().join("a/.wh.gone").exists());
        assert!(!s.dest().join("a/.wh..wh.plnk").exists());
        assert_eq!(
            mtime_of(&s.dest().join("a")),
            (MTIME as i64, 0),
            "whiteout kept dir mtime"
        );

        let b = s.dest().join("b");
        assert!(b.is_dir(), "opaque marker creates its directory");
        assert_eq!(
            xattr::get(&b, OPAQUE_XATTR).expect("getxattr"),
            Some(b"y".to_vec())
        );
        assert!(!b.join(".wh..wh..opq").exists());
        assert_eq!(
            xattr::get(s.dest(), OPAQUE_XATTR).expect("getxattr"),
            Some(b"y".to_vec())
        );
    }

    #[test]
    fn whiteout_of_nothing_is_refused() {
        let s = Scratch::new();
        for name in [".wh.", "a/.wh..", "a/.wh..."] {
            let layer = tar(|b| raw(b, name.as_bytes(), EntryType::Regular, b""));
            expect_unsafe(s.apply(&layer), name);
        }
        s.assert_outside_untouched();
    }

    #[test]
    fn device_nodes_and_fifos() {
        let s = Scratch::new();
        let layer = tar(|b| {
            let mut h = header(EntryType::Fifo, 0o640, 0);
            b.append_data(&mut h, "fifo", io::empty()).expect("fifo");
        });
        s.apply(&layer).expect("apply fifo");
        let fifo = fs::symlink_metadata(s.dest().join("fifo")).expect("fifo");
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o640);

        if !is_root() {
            eprintln!("skipping device part of device_nodes_and_fifos: needs root");
            return;
        }
        let layer = tar(|b| {
            for (kind, path, major, minor) in [
                (EntryType::Char, "null", 1, 3),
                (EntryType::Block, "loop0", 7, 0),
            ] {
                let mut h = header(kind, 0o666, 0);
                h.set_device_major(major).expect("major");
                h.set_device_minor(minor).expect("minor");
                b.append_data(&mut h, path, io::empty()).expect("device");
            }
        });
        let s = Scratch::new();
        s.apply(&layer).expect("apply devices");
        let null = fs::symlink_metadata(s.dest().join("null")).expect("null");
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        let lo = fs::symlink_metadata(s.dest().join("loop0")).expect("loop0");
        assert!(lo.file_type().is_block_device());
        assert_eq!(lo.rdev(), makedev(7, 0));
    }

    #[test]
    fn compressions_share_the_diff_id() {
        let mut layer = tar(|b| {
            dir(b, "etc", 0o755, MTIME);
            file(b, "etc/hostname", 0o644, b"berth\n");
        });
        // Writers pad to a 10 KiB record: the diff ID covers that padding too.
        layer.resize(10240, 0);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));

        let mut gzip = Vec::new();
        for half in [&layer[..700], &layer[700..]] {
            // Two gzip members, as pigz may write.
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(half).expect("gzip");
            gzip.extend(enc.finish().expect("gzip"));
        }
        let zstd = zstd::encode_all(layer.as_slice(), 3).expect("zstd");

        for (blob, compression) in [
            (&layer, Compression::None),
            (&gzip, Compression::Gzip),
            (&zstd, Compression::Zstd),
        ] {
            assert_eq!(Compression::detect(blob), compression);
            let s = Scratch::new();
            let applied = apply_layer(blob.as_slice(), compression, &s.dest()).expect("apply");
            assert_eq!(applied.diff_id, expected, "{compression:?}");
            assert_eq!(applied.entries, 2);
            assert_eq!(
                fs::read(s.dest().join("etc/hostname")).expect("read"),
                b"berth\n"
            );
        }
    }

    #[test]
    fn media_types() {
        use Compression as C;
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Some(C::None)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(C::Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(C::Zstd)),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Some(C::None),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(C::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Some(C::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar",
                Some(C::None),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(C::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.zstd",
                Some(C::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar",
                Some(C::None),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(C::Gzip),
            ),
            (
                "Application/VND.OCI.Image.Layer.v1.tar+gzip; x=y",
                Some(C::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                None,
            ),
            ("application/vnd.oci.image.config.v1+json", None),
            ("", None),
        ];
        for (media_type, expected) in cases {
            assert_eq!(
                Compression::from_media_type(media_type),
                expected,
                "{media_type}"
            );
        }
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), C::Gzip);
        assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), C::Zstd);
        assert_eq!(Compression::detect(b"ustar"), C::None);
        assert_eq!(Compression::detect(&[0x1f]), C::None);
    }

    #[test]
    fn dotdot_is_refused() {
        for name in ["../escape", "a/../../escape", "a/..", "./../escape"] {
            let s = Scratch::new();
            let layer = tar(|b| raw(b, name.as_bytes(), EntryType::Regular, b"x"));
            expect_unsafe(s.apply(&layer), name);
            s.assert_outside_untouched();
        }
    }

    #[test]
    fn absolute_paths_are_confined() {
        let s = Scratch::new();
        let layer = tar(|b| raw(b, b"/etc/x", EntryType::Regular, b"confined"));
        s.apply(&layer).expect("apply");
        assert_eq!(fs::read(s.dest().join("etc/x")).expect("read"), b"confined");
        s.assert_outside_untouched();
    }

    #[test]
    fn writing_through_a_symlinked_parent_is_refused() {
        type Layer = fn(&mut Builder<Vec<u8>>, &str);
        // Each layer gets the absolute path of this case's `outside` dir.
        let cases: [(&str, Layer); 6] = [
            ("evil/pwned", |b, outside| {
                link(b, EntryType::Symlink, "evil", outside);
                file(b, "evil/pwned", 0o644, b"x");
            }),
            ("evil/x", |b, _| {
                link(b, EntryType::Symlink, "evil", "..");
                file(b, "evil/x", 0o644, b"x");
            }),
            ("a/evil/f", |b, _| {
                dir(b, "a", 0o755, MTIME);
                link(b, EntryType::Symlink, "a/evil", "../../outside");
                file(b, "a/evil/f", 0o644, b"x");
            }),
            ("evil/sub/x", |b, outside| {
                link(b, EntryType::Symlink, "evil", outside);
                file(b, "evil/sub/x", 0o644, b"x");
            }),
            ("evil/.wh.x", |b, outside| {
                link(b, EntryType::Symlink, "evil", outside);
                file(b, "evil/.wh.x", 0o644, b"");
            }),
            ("evil/.wh..wh..opq", |b, outside| {
                link(b, EntryType::Symlink, "evil", outside);
                file(b, "evil/.wh..wh..opq", 0o644, b"");
            }),
        ];
        for (entry, build) in cases {
            let s = Scratch::new();
            let outside = s.outside();
            let outside = outside.to_str().expect("utf-8 temp path");
            let layer = tar(|b| build(b, outside));
            expect_unsafe(s.apply(&layer), entry);
            s.assert_outside_untouched();
        }
    }

    #[test]
    fn hard_links_must_stay_inside() {
        // Outside the layer, next to `outside`, so the latter can be checked empty.
        let secret_dir = TempDir::new().expect("secret dir");
        let secret = secret_dir.path().join("secret");
        fs::write(&secret, "secret").expect("secret");
        let secret_parent = secret_dir.path().to_str().expect("utf-8").to_owned();

        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "h",
                tar(|b| link(b, EntryType::Link, "h", "../../etc/passwd")),
            ),
            (
                "h",
                tar(|b| {
                    link(b, EntryType::Symlink, "ln", &secret_parent);
                    link(b, EntryType::Link, "h", "ln/secret");
                }),
            ),
            (
                "h",
                tar(|b| link(b, EntryType::Link, "h", &format!("{secret_parent}/secret"))),
            ),
            (
                "h",
                tar(|b| {
                    dir(b, "d", 0o755, MTIME);
                    link(b, EntryType::Link, "h", "d");
                }),
            ),
            ("h", tar(|b| link(b, EntryType::Link, "h", "h"))),
            ("h", tar(|b| link(b, EntryType::Link, "h", "./"))),
        ];
        for (i, (entry, layer)) in cases.into_iter().enumerate() {
            let s = Scratch::new();
            match s.apply(&layer) {
                Err(ApplyError::Unsafe { entry: e, .. }) => assert_eq!(e, entry),
                // A target that is not in the layer (an absolute path confined to dest).
                Err(ApplyError::Entry { entry: e, source }) if i == 2 => {
                    assert_eq!(e, entry);
                    assert_eq!(source.kind(), ErrorKind::NotFound);
                }
                other => panic!("case {i}: expected a refusal, got {other:?}"),
            }
            assert!(!s.dest().join("h").exists(), "case {i}");
            s.assert_outside_untouched();
        }

        // A hard link to a symlink links the symlink itself, never what it points at.
        let s = Scratch::new();
        let layer = tar(|b| {
            link(
                b,
                EntryType::Symlink,
                "ln",
                &format!("{secret_parent}/secret"),
            );
            link(b, EntryType::Link, "h", "ln");
        });
        s.apply(&layer).expect("hard link to a symlink");
        let h = fs::symlink_metadata(s.dest().join("h")).expect("h");
        assert!(h.file_type().is_symlink());
        assert_eq!(h.nlink(), 2);
        assert_eq!(fs::metadata(&secret).expect("secret").nlink(), 1);
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let s = Scratch::new();
        let outside = s.outside().join("sub");
        fs::create_dir(&outside).expect("outside/sub");
        let before = mtime_of(&outside);
        let layer = tar(|b| {
            file(b, "x", 0o644, b"file");
            dir(b, "x", 0o755, MTIME);
            file(b, "x/child", 0o644, b"c");
            dir(b, "y", 0o755, MTIME);
            file(b, "y/child", 0o644, b"c");
            file(b, "y", 0o600, b"now a file");
            link(b, EntryType::Symlink, "z", "/etc/passwd");
            file(b, "z", 0o644, b"not through the link");
            dir(b, "v", 0o755, 1);
            file(b, "v/kept", 0o644, b"k");
            dir(b, "v", 0o700, 2);
            // A directory whose recorded times must not follow it once it is a symlink.
            dir(b, "w", 0o755, MTIME);
            dir(b, "w/sub", 0o755, 3);
            link(b, EntryType::Symlink, "w", "../outside");
        });
        s.apply(&layer).expect("apply");
        let dest = s.dest();
        assert!(fs::symlink_metadata(dest.join("x")).expect("x").is_dir());
        assert_eq!(fs::read(dest.join("x/child")).expect("x/child"), b"c");
        assert_eq!(fs::read(dest.join("y")).expect("y"), b"now a file");
        assert_eq!(
            fs::symlink_metadata(dest.join("y")).expect("y").mode() & 0o7777,
            0o600
        );
        assert!(fs::symlink_metadata(dest.join("z")).expect("z").is_file());
        assert_eq!(
            fs::read(dest.join("z")).expect("z"),
            b"not through the link"
        );
        let v = fs::symlink_metadata(dest.join("v")).expect("v");
        assert_eq!((v.mode() & 0o7777, v.mtime()), (0o700, 2));
        assert_eq!(fs::read(dest.join("v/kept")).expect("v/kept"), b"k");
        assert!(
            fs::symlink_metadata(dest.join("w"))
                .expect("w")
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            mtime_of(&outside),
            before,
            "dir times followed a replaced directory"
        );
    }

    #[test]
    fn root_entry_must_be_a_directory() {
        let s = Scratch::new();
        // Type flag '0': a regular file, not an old-style directory.
        let layer = tar(|b| raw(b, b"./", EntryType::Regular, b"x"));
        expect_unsafe(s.apply(&layer), "./");
        s.assert_outside_untouched();
    }

    #[test]
    fn old_style_directory_entries() {
        let s = Scratch::new();
        let layer = tar(|b| {
            let mut h = header(EntryType::Regular, 0o755, 0);
            h.as_old_mut().name[..7].copy_from_slice(b"olddir/");
            // A '\0' type flag with a trailing slash: a pre-POSIX directory.
            h.as_old_mut().linkflag[0] = 0;
            h.set_cksum();
            b.append(&h, io::empty()).expect("append");
        });
        s.apply(&layer).expect("apply");
        assert!(
            fs::symlink_metadata(s.dest().join("olddir"))
                .expect("olddir")
                .is_dir()
        );
    }

    #[test]
    fn long_names() {
        let s = Scratch::new();
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
        let target = format!("{}/{}", "t".repeat(130), "x");
        let layer = tar(|b| {
            file(b, &long, 0o644, b"long");
            let mut h = header(EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, "l", &target).expect("long link");
        });
        s.apply(&layer).expect("apply");
        assert_eq!(fs::read(s.dest().join(&long)).expect("read"), b"long");
        assert_eq!(
            fs::read_link(s.dest().join("l")).expect("readlink"),
            Path::new(&target)
        );
    }

    #[test]
    fn unsupported_entry_types_are_named() {
        let s = Scratch::new();
        let layer = tar(|b| {
            let mut h = header(EntryType::new(b'Z'), 0o644, 0);
            b.append_data(&mut h, "weird", io::empty()).expect("append");
        });
        match s.apply(&layer) {
            Err(ApplyError::Entry { entry, source }) => {
                assert_eq!(entry, "weird");
                assert_eq!(source.kind(), ErrorKind::Unsupported);
            }
            other => panic!("expected an unsupported entry error, got {other:?}"),
        }
    }

    #[test]
    fn global_pax_headers_are_ignored() {
        let s = Scratch::new();
        let layer = tar(|b| {
            let mut h = header(EntryType::XGlobalHeader, 0o644, 0);
            let data = b"19 comment=berthxx\n";
            h.set_size(data.len() as u64);
            b.append_data(&mut h, "pax_global_header", data.as_slice())
                .expect("global");
            file(b, "f", 0o644, b"f");
        });
        let applied = s.apply(&layer).expect("apply");
        assert_eq!(applied.entries, 2);
        assert!(!s.dest().join("pax_global_header").exists());
    }

    #[test]
    fn truncated_layers_fail() {
        let layer = tar(|b| file(b, "big", 0o644, &[7u8; 4000]));
        // Inside a header, inside the content, inside the padding after it.
        for cut in [300, 512 + 1000, 512 + 4050] {
            let s = Scratch::new();
            match s.apply(&layer[..cut]) {
                Err(ApplyError::Read(_)) => {}
                other => panic!("cut at {cut}: expected a read error, got {other:?}"),
            }
        }
        let gz = {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&layer).expect("gzip");
            enc.finish().expect("gzip")
        };
        let s = Scratch::new();
        let result = apply_layer(&gz[..gz.len() - 10], Compression::Gzip, &s.dest());
        assert!(matches!(result, Err(ApplyError::Read(_))), "{result:?}");
    }

    #[test]
    fn entries_hidden_after_the_end_marker_are_refused() {
        let first = tar(|b| file(b, "a", 0o644, b"a"));
        let second = tar(|b| file(b, "hidden", 0o644, b"h"));
        // `a`, one zero block, then `hidden`: Go's tar reader rejects this.
        let mut layer = first[..1024].to_vec();
        layer.extend_from_slice(&[0u8; 512]);
        layer.extend_from_slice(&second);
        let s = Scratch::new();
        assert!(matches!(s.apply(&layer), Err(ApplyError::Read(_))));
        assert!(!s.dest().join("hidden").exists());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let s = Scratch::new();
        let mut garbage = vec![0xa5u8; 2048];
        assert!(apply_layer(garbage.as_slice(), Compression::None, &s.dest()).is_err());
        assert!(apply_layer(garbage.as_slice(), Compression::Gzip, &s.dest()).is_err());
        assert!(apply_layer(garbage.as_slice(), Compression::Zstd, &s.dest()).is_err());
        garbage.truncate(0);
        let empty = apply_layer(garbage.as_slice(), Compression::None, &s.dest()).expect("empty");
        assert_eq!(empty.entries, 0);
    }

    #[test]
    fn clean_path_rules() {
        let ok = |raw: &str| clean_path(raw.as_bytes(), "path").map_err(|f| format!("{f:?}"));
        assert_eq!(ok("./a/b/").expect("a/b"), Path::new("a/b"));
        assert_eq!(ok("/etc//x").expect("etc/x"), Path::new("etc/x"));
        assert_eq!(ok("a/./b").expect("a/b"), Path::new("a/b"));
        assert_eq!(ok("./").expect("root"), Path::new(""));
        assert_eq!(ok("/").expect("root"), Path::new(""));
        assert!(ok("a/../b").is_err());
        assert!(ok("..").is_err());
        assert!(clean_path(b"a\0b", "path").is_err());
        assert_eq!(
            ok("a/..b/c..").expect("dots in names"),
            Path::new("a/..b/c..")
        );
    }

    #[test]
    fn pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec(), t.tv_nsec()));
        assert_eq!(t("1600000000").expect("int"), (1_600_000_000, 0));
        assert_eq!(
            t("1600000000.123456789123").expect("frac"),
            (1_600_000_000, 123_456_789)
        );
        assert_eq!(t("5.5").expect("half"), (5, 500_000_000));
        assert_eq!(t("-1.25").expect("negative"), (-2, 750_000_000));
        assert_eq!(t("-3").expect("negative int"), (-3, 0));
        for bad in ["", ".5", "1.2.3", "x", "1e9", "-", "99999999999999999999"] {
            assert!(t(bad).is_err(), "{bad:?}");
        }
    }
}
