//! Image archives for air-gapped import (`berth image import FILE`).
//!
//! Two tar formats are understood:
//! - an **OCI image layout** (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), as written by
//!   `skopeo copy ... oci-archive:` and by `docker save` of Docker 25 and later;
//! - a **`docker save` archive** (`manifest.json` naming a config file and layer files), as
//!   written by older Docker and by `skopeo copy ... docker-archive:`.
//!
//! Docker 25+ writes both at once. The OCI layout is preferred then, and `manifest.json` only
//! supplies names for images whose `index.json` entry has none.
//!
//! [`Archive::open`] makes one pass over the tar headers (seeking over the file data) and
//! remembers where each member's bytes lie; blobs are later read in place, so an archive of
//! many GB is never unpacked or buffered. Everything else is also settled in `open`, so a
//! broken archive is reported before anything is imported:
//! - OCI: `index.json` and the manifests and indexes it reaches are parsed (each at most
//!   [`JSON_LIMIT`] bytes), to know each image's target and the media types of all blobs.
//! - docker save: a Docker schema 2 manifest is synthesized per image. Its descriptors need the
//!   sha256 of the config and of every layer file, so **`open` reads each layer file once**,
//!   streaming it through the hash with a 64 KiB buffer (a layer shared by several images or
//!   symlinks is hashed once). For a large archive that is one sequential read of it.
//!
//! Blob readers return the bytes as stored, unverified: the caller's content store checks
//! the digest while it writes them.

mod docker_save;
mod member;
mod oci_layout;
mod tar_index;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use member::Exact;
use tar_index::{Span, TarIndex};

use super::oci::{DOCKER_LIST as DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Reported by [`Archive::blob`] for a blob no manifest in the archive describes.
const UNKNOWN_MEDIA_TYPE: &str = "application/octet-stream";

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Largest JSON document read whole (`index.json`, `manifest.json`, manifests, indexes), so a
/// corrupt or hostile archive cannot make us allocate without bound.
pub const JSON_LIMIT: u64 = 4 << 20;
/// Links followed from one name before giving up (a loop, or a silly chain).
const MAX_LINK_HOPS: usize = 16;
/// Nesting of indexes within indexes; real images use one or two levels.
const MAX_INDEX_DEPTH: usize = 8;
const HASH_BUFFER: usize = 64 << 10;

/// An image archive, indexed by one pass over its tar headers (a tar cannot be searched by
/// name). Blob bytes are read from the file on demand.
#[derive(Debug)]
pub struct Archive {
    path: PathBuf,
    tar: TarIndex,
    images: Vec<ArchiveImage>,
    /// Every blob the archive can serve, by digest.
    blobs: HashMap<String, Source>,
    /// Descriptors the archive's manifests give (or that were synthesized), by digest: the
    /// media type to report and the size a blob must have.
    known: HashMap<String, Descriptor>,
}

/// A content descriptor, as in OCI manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `"sha256:<hex>"` (OCI layouts may also use `"sha512:<hex>"`).
    pub digest: String,
    pub size: u64,
}

/// One image in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveImage {
    /// References as recorded: OCI `org.opencontainers.image.ref.name` annotations (a full
    /// reference like "docker.io/library/busybox:1.36", or only a tag "1.36" — then the
    /// `io.containerd.image.name` annotation, if present, gives the full name), docker `RepoTags`.
    /// A bare tag with no full name beside it is returned as it is; the caller decides.
    pub names: Vec<String>,
    /// The top object to import: an OCI index / docker manifest list, or a single manifest.
    pub target: Descriptor,
}

/// Why an archive cannot be read. Every variant names the archive file.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{}: not an image archive: {reason}", path.display())]
    NotAnArchive { path: PathBuf, reason: String },
    #[error("{}: blob {digest} is not in the archive", path.display())]
    MissingBlob { path: PathBuf, digest: String },
    /// `what` is the member or object at fault, e.g. "index.json" or "blob sha256:…".
    #[error("{}: {what}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        what: String,
        message: String,
    },
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        source: io::Error,
    },
}

/// An archive that is not what it says is the request's fault; one that cannot
/// be read is an I/O failure (a full disk, a bad device), not a bad archive.
impl From<ArchiveError> for crate::error::Error {
    fn from(e: ArchiveError) -> Self {
        use crate::error::{Error, is_node_failure};
        match e {
            ArchiveError::Io { path, what, source } if is_node_failure(&source) => Error::Io {
                context: format!("{}: {what}", path.display()),
                source,
            },
            e => Error::InvalidArgument(e.to_string()),
        }
    }
}

impl ArchiveError {
    /// An I/O failure on the archive file at `path`, while doing `what`.
    fn io(path: &Path, what: impl Into<String>, source: io::Error) -> ArchiveError {
        ArchiveError::Io {
            path: path.to_owned(),
            what: what.into(),
            source,
        }
    }
}

/// Adds an image, or merges its names into an earlier one with the same target.
pub(super) fn push_image(images: &mut Vec<ArchiveImage>, names: Vec<String>, target: Descriptor) {
    match images.iter_mut().find(|i| i.target.digest == target.digest) {
        Some(image) => add_names(&mut image.names, names),
        None => {
            let mut image = ArchiveImage {
                names: Vec::new(),
                target,
            };
            add_names(&mut image.names, names);
            images.push(image);
        }
    }
}

pub(super) fn add_names(names: &mut Vec<String>, new: impl IntoIterator<Item = String>) {
    for name in new {
        if !names.contains(&name) {
            names.push(name);
        }
    }
}

/// Where a blob's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    /// A member of the tar, by normalised name (looked up, links followed, when read).
    Member(String),
    /// A manifest synthesized for a docker-save image.
    Synthesized(Arc<[u8]>),
}

impl Archive {
    /// Indexes the tar at `path` and reads its image metadata; see the module documentation
    /// for what that costs.
    pub fn open(path: &Path) -> Result<Archive, ArchiveError> {
        let tar = TarIndex::read(path)?;
        let mut archive = Archive {
            path: path.to_owned(),
            tar,
            images: Vec::new(),
            blobs: HashMap::new(),
            known: HashMap::new(),
        };
        let oci = archive.tar.contains("index.json") && archive.tar.contains("oci-layout");
        let docker = archive.tar.contains("manifest.json");
        if oci {
            archive.load_oci(docker)?;
        } else if docker {
            archive.load_docker()?;
        } else {
            return Err(ArchiveError::NotAnArchive {
                path: archive.path,
                reason: "it has neither oci-layout + index.json nor manifest.json".into(),
            });
        }
        Ok(archive)
    }

    /// The images in the archive, in the order its index lists them. Entries with the same
    /// target are merged into one image with all their names.
    pub fn images(&self) -> Result<Vec<ArchiveImage>, ArchiveError> {
        Ok(self.images.clone())
    }

    /// Blob by digest: for OCI layouts `blobs/<alg>/<hex>`; for docker-save archives the
    /// synthesized manifest, the config file and the layer files. Returns the blob's
    /// descriptor (media type as the archive's manifests give it, else
    /// `application/octet-stream`) and a reader over exactly its bytes.
    pub fn blob(&self, digest: &str) -> Result<(Descriptor, Box<dyn Read + Send>), ArchiveError> {
        match self.blobs.get(digest) {
            None => Err(self.missing(digest)),
            Some(Source::Synthesized(bytes)) => {
                let descriptor = self.descriptor_for(digest, bytes.len() as u64)?;
                Ok((descriptor, Box::new(io::Cursor::new(Arc::clone(bytes)))))
            }
            Some(Source::Member(name)) => {
                let span = self.member(name)?.ok_or_else(|| self.missing(digest))?;
                let descriptor = self.descriptor_for(digest, span.size)?;
                Ok((descriptor, Box::new(self.open_span(span, name)?)))
            }
        }
    }

    /// The descriptor to report for a blob of `size` bytes, refusing one whose size differs
    /// from what its referrers recorded (the archive is corrupt or was tampered with).
    fn descriptor_for(&self, digest: &str, size: u64) -> Result<Descriptor, ArchiveError> {
        match self.known.get(digest) {
            Some(known) if known.size != size => Err(self.invalid(
                format!("blob {digest}"),
                format!("is {size} bytes, but its descriptor says {}", known.size),
            )),
            Some(known) if !known.media_type.is_empty() => Ok(known.clone()),
            _ => Ok(Descriptor {
                media_type: UNKNOWN_MEDIA_TYPE.into(),
                digest: digest.into(),
                size,
            }),
        }
    }

    fn open_span(&self, span: Span, name: &str) -> Result<Exact<File>, ArchiveError> {
        let mut file = File::open(&self.path).map_err(|e| self.io_error("cannot open", e))?;
        file.seek(SeekFrom::Start(span.offset))
            .map_err(|e| self.io_error(format!("seeking to {name}"), e))?;
        Ok(Exact::new(file, span.size))
    }

    /// Records what a manifest says about a blob. The first description wins, except that one
    /// with a media type replaces one without.
    fn learn(&mut self, descriptor: &Descriptor) {
        let keep = self
            .known
            .get(&descriptor.digest)
            .is_some_and(|old| !old.media_type.is_empty());
        if !keep {
            self.known
                .insert(descriptor.digest.clone(), descriptor.clone());
        }
    }
}
