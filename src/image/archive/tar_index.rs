//! The tar index: one pass over the headers, recording where each member's bytes lie and
//! where each link points, so members can be found by name and read in place.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::{ArchiveError, GZIP_MAGIC, MAX_LINK_HOPS, ZSTD_MAGIC};
use crate::snapshot::apply::{SeekingFile, TarEntry, TarReader};

/// Where a regular member's bytes lie in the tar file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) offset: u64,
    pub(super) size: u64,
}

/// What the last tar entry with a given name was.
#[derive(Debug, Clone)]
pub(super) enum Node {
    File(Span),
    /// A hard or symbolic link, with its target as a member name; `None` if it points outside
    /// the archive. docker save and skopeo's docker-archive link `<id>/layer.tar` to a layer
    /// stored elsewhere in the archive, so links must be followed.
    Link(Option<String>),
    /// A directory, device, sparse file...: never served.
    Other(&'static str),
}

#[derive(Debug, Default)]
pub(super) struct TarIndex {
    /// By normalised name (see [`normalize`]).
    pub(super) nodes: HashMap<String, Node>,
}

impl TarIndex {
    pub(super) fn read(path: &Path) -> Result<TarIndex, ArchiveError> {
        let file = File::open(path).map_err(|e| ArchiveError::io(path, "cannot open", e))?;
        let length = file
            .metadata()
            .map_err(|e| ArchiveError::io(path, "cannot stat", e))?
            .len();
        // Extension headers (long names, PAX) are bounded there; data is seeked over.
        let file = SeekingFile::new(file).map_err(|e| ArchiveError::io(path, "cannot stat", e))?;
        let mut tar = TarReader::new(file);
        let mut index = TarIndex::default();
        let mut count = 0;
        while let Some(entry) = tar.next_entry().map_err(|e| tar_error(path, count, e))? {
            count += 1;
            index
                .add(&entry, length)
                .map_err(|message| ArchiveError::Invalid {
                    path: path.to_owned(),
                    what: "tar".into(),
                    message,
                })?;
        }
        Ok(index)
    }

    /// Records one entry. Names that are not UTF-8 or climb out of the archive are skipped:
    /// no name we look up can match them.
    fn add(&mut self, entry: &TarEntry, archive_length: u64) -> Result<(), String> {
        let raw_name = entry.path_bytes();
        let Some(name) = std::str::from_utf8(raw_name).ok().and_then(normalize) else {
            return Ok(());
        };
        if name.is_empty() {
            return Ok(());
        }
        let kind = entry.header().entry_type();
        let node = if kind.is_file() || kind.is_contiguous() {
            let span = Span {
                offset: entry.data_offset(),
                size: entry.size(),
            };
            // Seeking past the end is not an error, so a truncated archive would otherwise
            // show its last member whole.
            if span
                .offset
                .checked_add(span.size)
                .is_none_or(|end| end > archive_length)
            {
                return Err(format!("{name} is cut short: the file ends inside it"));
            }
            Node::File(span)
        } else if kind.is_symlink() || kind.is_hard_link() {
            Node::Link(link_target(&name, entry, kind.is_symlink()))
        } else {
            Node::Other(kind_name(kind))
        };
        self.nodes.insert(name, node);
        Ok(())
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    /// The span of a regular member, following links. `Ok(None)`: no such member.
    /// `Err`: present but not usable as a file.
    pub(super) fn find(&self, name: &str) -> Result<Option<Span>, String> {
        let mut current = normalize(name).ok_or("names a path outside the archive")?;
        for hop in 0..=MAX_LINK_HOPS {
            match self.nodes.get(&current) {
                None if hop == 0 => return Ok(None),
                None => {
                    return Err(format!(
                        "is a link to {current}, which is not in the archive"
                    ));
                }
                Some(Node::File(span)) => return Ok(Some(*span)),
                Some(Node::Other(kind)) => {
                    return Err(format!("{current} is a {kind}, not a regular file"));
                }
                Some(Node::Link(None)) => {
                    return Err(format!("{current} is a link pointing outside the archive"));
                }
                Some(Node::Link(Some(target))) => current = target.clone(),
            }
        }
        Err("too many levels of links".into())
    }
}

/// Classifies a tar read error: failing on the first header means the file is not a tar at
/// all; later, that the tar is damaged.
fn tar_error(path: &Path, count: usize, error: io::Error) -> ArchiveError {
    if count > 0 {
        return ArchiveError::Invalid {
            path: path.to_owned(),
            what: "tar".into(),
            message: format!("after {count} entries: {}", printable(&error.to_string())),
        };
    }
    let reason = match compression_of(path) {
        Some(kind) => format!("it is {kind}-compressed; decompress it first"),
        None => "not a tar file: its first header is not valid".to_owned(),
    };
    ArchiveError::NotAnArchive {
        path: path.to_owned(),
        reason,
    }
}

/// The tar crate quotes the bad header field in its messages; garbage must not reach a
/// terminal or log as is.
fn printable(message: &str) -> String {
    const MAX_CHARS: usize = 200;
    message
        .chars()
        .take(MAX_CHARS)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// `image.tar.gz` is a common mistake; naming it gives a better message than "bad checksum".
fn compression_of(path: &Path) -> Option<&'static str> {
    let mut head = Vec::with_capacity(ZSTD_MAGIC.len());
    let file = File::open(path).ok()?;
    file.take(ZSTD_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .ok()?;
    if head.starts_with(GZIP_MAGIC) {
        Some("gzip")
    } else if head.starts_with(ZSTD_MAGIC) {
        Some("zstd")
    } else {
        None
    }
}

/// Where a link entry points, as a member name. Hard link targets are member names already;
/// symlink targets are relative to the link's directory. An absolute symlink points into the
/// host's filesystem, never into the archive.
fn link_target(name: &str, entry: &TarEntry, symbolic: bool) -> Option<String> {
    let raw = entry.link_name_bytes()?;
    let target = std::str::from_utf8(raw).ok()?;
    if !symbolic {
        return normalize(target);
    }
    if target.starts_with('/') {
        return None;
    }
    let directory = name.rsplit_once('/').map_or("", |(directory, _)| directory);
    normalize(&format!("{directory}/{target}"))
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Directory => "directory",
        tar::EntryType::Char | tar::EntryType::Block => "device",
        tar::EntryType::Fifo => "fifo",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "special entry",
    }
}

/// The canonical form of a member name: no leading `./` or `/`, no `.` or empty components,
/// `..` applied. `None` if it climbs above the archive's root.
pub(super) fn normalize(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}
