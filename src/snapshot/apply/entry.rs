//! Creating each kind of entry: directories, regular files, symlinks, hard links and
//! device nodes and fifos.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, symlink};
use std::path::Path;

use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::kind::Kind;
use super::meta::Meta;
use super::path::clean_path;
use super::reader::TarEntry;
use super::{Applier, Failure, context, refuse};

/// Size of the copy buffer for file contents.
const COPY_BUFFER: usize = 64 * 1024;
impl Applier<'_> {
    pub(super) fn create(
        &mut self,
        entry: &TarEntry,
        data: &mut impl Read,
        rel: &Path,
        meta: &Meta,
    ) -> Result<(), Failure> {
        let kind = Kind::of(entry)?;
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
            Kind::File => self.make_file(entry.size(), data, rel, meta),
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

    fn make_file(
        &mut self,
        expected: u64,
        data: &mut impl Read,
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
        let written = copy_content(data, &mut file)?;
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

    fn make_symlink(&mut self, entry: &TarEntry, rel: &Path, meta: &Meta) -> Result<(), Failure> {
        // Stored verbatim: a symlink may point anywhere, it is just never followed here.
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "symlink has no target"))?;
        let (path, _) = self.prepare(rel, false)?;
        symlink(OsStr::from_bytes(target), &path)?;
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

    /// Links `rel` to the entry's target, which must already be in the layer,
    /// reached without symlinks, and not be a directory.
    fn hard_link(&mut self, entry: &TarEntry, rel: &Path) -> Result<(), Failure> {
        let raw_target = entry
            .link_name_bytes()
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "hard link has no target"))?;
        let target_rel = clean_path(raw_target, "hard link target")?;
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
