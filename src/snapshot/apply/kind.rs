//! What a tar entry becomes on disk, decided from its header alone.

use std::io::{self, ErrorKind};

use nix::sys::stat::SFlag;
use tar::EntryType;

use super::Failure;
use super::reader::TarEntry;

/// PAX record prefix of GNU's sparse formats, which store a file map, not the file.
const PAX_SPARSE_PREFIX: &[u8] = b"GNU.sparse.";

/// How a tar entry is materialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File,
    Symlink,
    HardLink,
    /// Character or block device, or fifo.
    Node(SFlag),
}

impl Kind {
    pub(super) fn of(entry: &TarEntry) -> Result<Kind, Failure> {
        let (header, raw_path) = (entry.header(), entry.path_bytes());
        if entry
            .pax_records()
            .any(|(key, _)| key.starts_with(PAX_SPARSE_PREFIX))
        {
            // Unpacked as a regular file it would hold the map: other tools see another file.
            return Err(Failure::Io(io::Error::new(
                ErrorKind::Unsupported,
                "GNU sparse files are not supported",
            )));
        }
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
