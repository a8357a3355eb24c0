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

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
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

// ---------------------------------------------------------------------------------------------
// OCI image layout

/// Descriptor as found in OCI and Docker JSON.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonDescriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
}

/// An index, a manifest or `index.json`: one shape, so a document whose descriptor lacks a
/// media type can still be told apart by its fields.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonDocument {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<JsonDescriptor>>,
    #[serde(default)]
    config: Option<JsonDescriptor>,
    #[serde(default)]
    layers: Option<Vec<JsonDescriptor>>,
}

impl JsonDocument {
    fn media_type_guess(&self) -> &str {
        match &self.media_type {
            Some(media_type) if !media_type.is_empty() => media_type,
            _ if self.manifests.is_some() => OCI_INDEX,
            _ if self.config.is_some() => OCI_MANIFEST,
            _ => "",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciLayoutFile {
    image_layout_version: String,
}

/// What the walk over manifests learned about their structure, to match `manifest.json`
/// entries (which name a config) to `index.json` entries (which name a manifest or index).
#[derive(Debug, Default)]
struct Graph {
    visited: HashSet<String>,
    children: HashMap<String, Vec<String>>,
    config_of: HashMap<String, String>,
}

impl Graph {
    /// Whether the image rooted at `root` uses the config `config`.
    fn reaches_config(&self, root: &str, config: &str) -> bool {
        let mut seen = HashSet::new();
        let mut stack = vec![root];
        while let Some(digest) = stack.pop() {
            if !seen.insert(digest) {
                continue;
            }
            if self.config_of.get(digest).is_some_and(|c| c == config) {
                return true;
            }
            if let Some(children) = self.children.get(digest) {
                stack.extend(children.iter().map(String::as_str));
            }
        }
        false
    }
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

impl Archive {
    fn load_oci(&mut self, has_docker_manifest: bool) -> Result<(), ArchiveError> {
        self.check_layout_version()?;
        self.register_blob_members();
        let index: JsonDocument = self.read_member_json("index.json")?;
        let mut graph = Graph::default();
        for entry in index.manifests.unwrap_or_default() {
            let root = self.json_descriptor(&entry, "index.json")?;
            if !self.blobs.contains_key(&root.digest) {
                return Err(self.missing(&root.digest));
            }
            let target = self.visit(root, 0, &mut graph)?;
            if !is_index(&target.media_type) && !is_manifest(&target.media_type) {
                return Err(self.invalid(
                    "index.json",
                    format!(
                        "entry {} has media type {:?}, not an image manifest or index",
                        target.digest, target.media_type
                    ),
                ));
            }
            let annotations = entry.annotations.unwrap_or_default();
            push_image(&mut self.images, oci_name(&annotations), target);
        }
        if has_docker_manifest {
            self.add_docker_names(&graph)?;
        }
        Ok(())
    }

    fn check_layout_version(&self) -> Result<(), ArchiveError> {
        let layout: OciLayoutFile = self.read_member_json("oci-layout")?;
        if !layout.image_layout_version.starts_with("1.") {
            return Err(self.invalid(
                "oci-layout",
                format!(
                    "unsupported imageLayoutVersion {:?}",
                    layout.image_layout_version
                ),
            ));
        }
        Ok(())
    }

    /// Makes every `blobs/<alg>/<hex>` member servable by its digest.
    fn register_blob_members(&mut self) {
        for name in self.tar.nodes.keys() {
            let digest = name
                .strip_prefix("blobs/")
                .and_then(|rest| rest.split_once('/'))
                .map(|(algorithm, hex)| format!("{algorithm}:{hex}"));
            if let Some(digest) = digest.filter(|d| is_valid_digest(d)) {
                self.blobs.insert(digest, Source::Member(name.clone()));
            }
        }
    }

    /// Reads the manifest or index `descriptor` points to (if present in the archive) and,
    /// depth first, the manifests an index lists, learning every descriptor they hold.
    /// Returns `descriptor` with its media type filled in from the document if it had none.
    /// Absent children are skipped: Docker and containerd export only some platforms of
    /// a multi-platform index.
    fn visit(
        &mut self,
        mut descriptor: Descriptor,
        depth: usize,
        graph: &mut Graph,
    ) -> Result<Descriptor, ArchiveError> {
        let might_be_document = descriptor.media_type.is_empty()
            || is_index(&descriptor.media_type)
            || is_manifest(&descriptor.media_type);
        if !might_be_document || !graph.visited.insert(descriptor.digest.clone()) {
            self.learn(&descriptor);
            let known = self.known.get(&descriptor.digest).cloned();
            return Ok(known.unwrap_or(descriptor));
        }
        if depth > MAX_INDEX_DEPTH {
            return Err(self.invalid(
                format!("blob {}", descriptor.digest),
                "indexes are nested too deeply",
            ));
        }
        let Some(document) = self.read_blob_json(&descriptor)? else {
            self.learn(&descriptor);
            return Ok(descriptor);
        };
        if descriptor.media_type.is_empty() {
            descriptor.media_type = document.media_type_guess().to_owned();
        }
        self.learn(&descriptor);
        self.visit_document(&descriptor, document, depth, graph)?;
        Ok(descriptor)
    }

    fn visit_document(
        &mut self,
        parent: &Descriptor,
        document: JsonDocument,
        depth: usize,
        graph: &mut Graph,
    ) -> Result<(), ArchiveError> {
        let what = format!("blob {}", parent.digest);
        for entry in document.manifests.unwrap_or_default() {
            let child = self.json_descriptor(&entry, &what)?;
            let child = self.visit(child, depth + 1, graph)?;
            let siblings = graph.children.entry(parent.digest.clone()).or_default();
            siblings.push(child.digest);
        }
        if let Some(config) = document.config {
            let config = self.json_descriptor(&config, &what)?;
            self.learn(&config);
            graph.config_of.insert(parent.digest.clone(), config.digest);
        }
        for layer in document.layers.unwrap_or_default() {
            let layer = self.json_descriptor(&layer, &what)?;
            self.learn(&layer);
        }
        Ok(())
    }

    /// Reads and parses a manifest or index blob; `None` if the archive does not hold it.
    fn read_blob_json(
        &self,
        descriptor: &Descriptor,
    ) -> Result<Option<JsonDocument>, ArchiveError> {
        let Some(Source::Member(name)) = self.blobs.get(&descriptor.digest) else {
            return Ok(None);
        };
        let Some(span) = self.member(name)? else {
            return Ok(None);
        };
        if span.size != descriptor.size {
            return Err(self.invalid(
                format!("blob {}", descriptor.digest),
                format!(
                    "is {} bytes, but its descriptor says {}",
                    span.size, descriptor.size
                ),
            ));
        }
        self.parse_json(span, name).map(Some)
    }

    /// For images `index.json` gives no name, takes the `RepoTags` of the `manifest.json`
    /// entries whose config the image uses (Docker 25+ writes both files).
    fn add_docker_names(&mut self, graph: &Graph) -> Result<(), ArchiveError> {
        let unnamed: Vec<usize> = (0..self.images.len())
            .filter(|&i| self.images[i].names.is_empty())
            .collect();
        if unnamed.is_empty() {
            return Ok(());
        }
        let entries: Vec<DockerSaveEntry> = self.read_member_json("manifest.json")?;
        let mut hasher = MemberHasher::new(self)?;
        for entry in entries {
            let tags = entry.repo_tags.unwrap_or_default();
            if tags.is_empty() {
                continue;
            }
            let span = self.required_member(&entry.config, "manifest.json")?;
            let config = hasher.hash(self, span, &entry.config)?.digest;
            for &i in &unnamed {
                if graph.reaches_config(&self.images[i].target.digest, &config) {
                    add_names(&mut self.images[i].names, tags.iter().cloned());
                }
            }
        }
        Ok(())
    }

    fn json_descriptor(
        &self,
        json: &JsonDescriptor,
        what: &str,
    ) -> Result<Descriptor, ArchiveError> {
        if !is_valid_digest(&json.digest) {
            return Err(self.invalid(what, format!("invalid digest {:?}", json.digest)));
        }
        Ok(Descriptor {
            media_type: json.media_type.clone().unwrap_or_default(),
            digest: json.digest.clone(),
            size: json.size,
        })
    }
}

/// The name an `index.json` entry records: a full reference in `ref.name`, else containerd's
/// full name, else `ref.name` even if it is only a tag (skopeo writes whatever it was given).
fn oci_name(annotations: &HashMap<String, String>) -> Vec<String> {
    let ref_name = annotations.get(REF_NAME).filter(|r| !r.is_empty());
    let full_name = annotations.get(CONTAINERD_NAME).filter(|n| !n.is_empty());
    // A tag cannot contain '/', ':' or '@'; a name with any of them is a reference.
    let is_reference = |r: &&String| r.contains(['/', ':', '@']);
    let name = ref_name.filter(is_reference).or(full_name).or(ref_name);
    name.cloned().into_iter().collect()
}

/// `algorithm:hex` for the algorithms OCI registers, in lowercase hex of the right length.
/// Checked before a digest becomes a lookup key, so odd strings cannot name odd members.
fn is_valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == length && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Adds an image, or merges its names into an earlier one with the same target.
fn push_image(images: &mut Vec<ArchiveImage>, names: Vec<String>, target: Descriptor) {
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

fn add_names(names: &mut Vec<String>, new: impl IntoIterator<Item = String>) {
    for name in new {
        if !names.contains(&name) {
            names.push(name);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// docker save

/// One entry of a docker-save `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    /// Member name of the config, e.g. `<hex>.json` or `blobs/sha256/<hex>`.
    config: String,
    /// `null` for an image saved by ID.
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    /// Member names of the layer tars, base first.
    #[serde(default)]
    layers: Vec<String>,
}

/// The Docker schema 2 manifest synthesized for a docker-save image. Field order is fixed
/// by the struct, so the same archive always gives the same manifest digest.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SchemaTwoManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: SchemaTwoDescriptor<'a>,
    layers: Vec<SchemaTwoDescriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SchemaTwoDescriptor<'a> {
    media_type: &'a str,
    size: u64,
    digest: &'a str,
}

impl<'a> From<&'a Descriptor> for SchemaTwoDescriptor<'a> {
    fn from(d: &'a Descriptor) -> Self {
        SchemaTwoDescriptor {
            media_type: &d.media_type,
            size: d.size,
            digest: &d.digest,
        }
    }
}

impl Archive {
    fn load_docker(&mut self) -> Result<(), ArchiveError> {
        let entries: Vec<DockerSaveEntry> = self.read_member_json("manifest.json")?;
        let mut hasher = MemberHasher::new(self)?;
        for entry in entries {
            let target = self.synthesize_manifest(&entry, &mut hasher)?;
            push_image(
                &mut self.images,
                entry.repo_tags.unwrap_or_default(),
                target,
            );
        }
        Ok(())
    }

    fn synthesize_manifest(
        &mut self,
        entry: &DockerSaveEntry,
        hasher: &mut MemberHasher,
    ) -> Result<Descriptor, ArchiveError> {
        let config = self.docker_member(&entry.config, hasher, |_| DOCKER_CONFIG)?;
        let layers = entry
            .layers
            .iter()
            .map(|layer| self.docker_member(layer, hasher, layer_media_type))
            .collect::<Result<Vec<_>, _>>()?;
        let manifest = SchemaTwoManifest {
            schema_version: 2,
            media_type: DOCKER_MANIFEST,
            config: (&config).into(),
            layers: layers.iter().map(Into::into).collect(),
        };
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| self.invalid("synthesized manifest", e.to_string()))?;
        let descriptor = Descriptor {
            media_type: DOCKER_MANIFEST.into(),
            digest: sha256_digest(&bytes),
            size: bytes.len() as u64,
        };
        self.learn(&descriptor);
        let source = Source::Synthesized(bytes.into());
        self.blobs.insert(descriptor.digest.clone(), source);
        Ok(descriptor)
    }

    /// Hashes a member `manifest.json` names, and makes it servable by that digest.
    /// `media_type` picks the type from the member's first bytes.
    fn docker_member(
        &mut self,
        name: &str,
        hasher: &mut MemberHasher,
        media_type: fn(&[u8]) -> &'static str,
    ) -> Result<Descriptor, ArchiveError> {
        let span = self.required_member(name, "manifest.json")?;
        let hashed = hasher.hash(self, span, name)?;
        let descriptor = Descriptor {
            media_type: media_type(&hashed.head).into(),
            digest: hashed.digest,
            size: span.size,
        };
        self.learn(&descriptor);
        let source = Source::Member(name.to_owned());
        self.blobs.insert(descriptor.digest.clone(), source);
        Ok(descriptor)
    }
}

/// docker save writes plain tars; skopeo's docker-archive or hand-made archives may hold
/// compressed ones, which only their first bytes reveal.
fn layer_media_type(head: &[u8]) -> &'static str {
    if head.starts_with(GZIP_MAGIC) {
        DOCKER_LAYER_GZIP
    } else if head.starts_with(ZSTD_MAGIC) {
        OCI_LAYER_ZSTD
    } else {
        DOCKER_LAYER
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The result of hashing one member.
#[derive(Debug, Clone)]
struct Hashed {
    digest: String,
    /// Its first bytes (up to 4), to recognise compression.
    head: Vec<u8>,
}

/// Hashes members through one file handle, remembering results by offset so a layer that
/// several images or links share is read once.
struct MemberHasher {
    file: File,
    done: HashMap<u64, Hashed>,
    buffer: Vec<u8>,
}

impl MemberHasher {
    fn new(archive: &Archive) -> Result<MemberHasher, ArchiveError> {
        let file = File::open(&archive.path).map_err(|e| archive.io_error("cannot open", e))?;
        Ok(MemberHasher {
            file,
            done: HashMap::new(),
            buffer: vec![0; HASH_BUFFER],
        })
    }

    fn hash(&mut self, archive: &Archive, span: Span, name: &str) -> Result<Hashed, ArchiveError> {
        if let Some(hashed) = self.done.get(&span.offset) {
            return Ok(hashed.clone());
        }
        let hashed = self
            .stream(span)
            .map_err(|e| archive.io_error(format!("reading {name}"), e))?;
        self.done.insert(span.offset, hashed.clone());
        Ok(hashed)
    }

    fn stream(&mut self, span: Span) -> io::Result<Hashed> {
        self.file.seek(SeekFrom::Start(span.offset))?;
        let mut reader = Exact::new(&mut self.file, span.size);
        let mut hasher = Sha256::new();
        let mut head = Vec::with_capacity(ZSTD_MAGIC.len());
        loop {
            let n = reader.read(&mut self.buffer)?;
            if n == 0 {
                break;
            }
            let chunk = &self.buffer[..n];
            let wanted = (ZSTD_MAGIC.len() - head.len()).min(n);
            head.extend_from_slice(&chunk[..wanted]);
            hasher.update(chunk);
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        Ok(Hashed { digest, head })
    }
}

// ---------------------------------------------------------------------------------------------
// Members and JSON

impl Archive {
    /// The span of member `name`, following links; `None` if absent. Present but unusable
    /// (a directory, a link out of the archive...) is an error.
    fn member(&self, name: &str) -> Result<Option<Span>, ArchiveError> {
        self.tar
            .find(name)
            .map_err(|message| self.invalid(name, message))
    }

    fn required_member(&self, name: &str, referrer: &str) -> Result<Span, ArchiveError> {
        self.member(name)?.ok_or_else(|| {
            self.invalid(
                referrer,
                format!("names {name:?}, which is not in the archive"),
            )
        })
    }

    fn read_member_json<T: DeserializeOwned>(&self, name: &str) -> Result<T, ArchiveError> {
        let span = self
            .member(name)?
            .ok_or_else(|| self.invalid(name, "missing"))?;
        self.parse_json(span, name)
    }

    /// Reads a member of at most [`JSON_LIMIT`] bytes and parses it.
    fn parse_json<T: DeserializeOwned>(&self, span: Span, name: &str) -> Result<T, ArchiveError> {
        if span.size > JSON_LIMIT {
            return Err(self.invalid(
                name,
                format!(
                    "{} bytes is over the {JSON_LIMIT}-byte limit for JSON",
                    span.size
                ),
            ));
        }
        let mut bytes = Vec::new();
        self.open_span(span, name)?
            .read_to_end(&mut bytes)
            .map_err(|e| self.io_error(format!("reading {name}"), e))?;
        serde_json::from_slice(&bytes).map_err(|e| self.invalid(name, e.to_string()))
    }

    fn missing(&self, digest: &str) -> ArchiveError {
        ArchiveError::MissingBlob {
            path: self.path.clone(),
            digest: digest.into(),
        }
    }

    fn invalid(&self, what: impl Into<String>, message: impl Into<String>) -> ArchiveError {
        ArchiveError::Invalid {
            path: self.path.clone(),
            what: what.into(),
            message: message.into(),
        }
    }

    fn io_error(&self, what: impl Into<String>, source: io::Error) -> ArchiveError {
        io_error(&self.path, what, source)
    }
}

fn io_error(path: &Path, what: impl Into<String>, source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        path: path.to_owned(),
        what: what.into(),
        source,
    }
}

/// Reads exactly `left` bytes: ending early is an error, not a silently short blob (the file
/// may have been truncated or replaced since it was indexed).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R> Exact<R> {
    fn new(inner: R, left: u64) -> Self {
        Exact { inner, left }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.left).map_or(buf.len(), |left| left.min(buf.len()));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside this member",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// The tar index

/// Where a regular member's bytes lie in the tar file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    offset: u64,
    size: u64,
}

/// What the last tar entry with a given name was.
#[derive(Debug, Clone)]
enum Node {
    File(Span),
    /// A hard or symbolic link, with its target as a member name; `None` if it points outside
    /// the archive. docker save and skopeo's docker-archive link `<id>/layer.tar` to a layer
    /// stored elsewhere in the archive, so links must be followed.
    Link(Option<String>),
    /// A directory, device, sparse file...: never served.
    Other(&'static str),
}

#[derive(Debug, Default)]
struct TarIndex {
    /// By normalised name (see [`normalize`]).
    nodes: HashMap<String, Node>,
}

impl TarIndex {
    fn read(path: &Path) -> Result<TarIndex, ArchiveError> {
        let file = File::open(path).map_err(|e| io_error(path, "cannot open", e))?;
        let length = file
            .metadata()
            .map_err(|e| io_error(path, "cannot stat", e))?
            .len();
        let mut tar = tar::Archive::new(file);
        let entries = tar
            .entries_with_seek()
            .map_err(|e| io_error(path, "reading the tar", e))?;
        let mut index = TarIndex::default();
        for (count, entry) in entries.enumerate() {
            let entry = entry.map_err(|e| tar_error(path, count, e))?;
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
    fn add<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        archive_length: u64,
    ) -> Result<(), String> {
        let raw_name = entry.path_bytes();
        let Some(name) = std::str::from_utf8(&raw_name).ok().and_then(normalize) else {
            return Ok(());
        };
        if name.is_empty() {
            return Ok(());
        }
        let kind = entry.header().entry_type();
        let node = if kind.is_file() || kind.is_contiguous() {
            let span = Span {
                offset: entry.raw_file_position(),
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

    fn contains(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    /// The span of a regular member, following links. `Ok(None)`: no such member.
    /// `Err`: present but not usable as a file.
    fn find(&self, name: &str) -> Result<Option<Span>, String> {
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
fn link_target<R: Read>(name: &str, entry: &tar::Entry<'_, R>, symbolic: bool) -> Option<String> {
    let raw = entry.link_name_bytes()?;
    let target = std::str::from_utf8(&raw).ok()?;
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
fn normalize(name: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    use serde_json::{Value, json};
    use tempfile::NamedTempFile;

    const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    /// Builds test archives entry by entry. Names are written into the header raw, because
    /// `tar::Builder` would strip the `./` prefixes the tests need.
    struct TarMaker {
        builder: tar::Builder<Vec<u8>>,
    }

    impl TarMaker {
        fn new() -> Self {
            TarMaker {
                builder: tar::Builder::new(Vec::new()),
            }
        }

        fn entry(mut self, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Self {
            let mut header = tar::Header::new_gnu();
            let gnu = header.as_gnu_mut().expect("gnu header");
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            self.builder.append(&header, data).expect("append");
            self
        }

        fn file(self, name: &str, data: &[u8]) -> Self {
            self.entry(name, tar::EntryType::Regular, "", data)
        }

        fn symlink(self, name: &str, target: &str) -> Self {
            self.entry(name, tar::EntryType::Symlink, target, b"")
        }

        fn dir(self, name: &str) -> Self {
            self.entry(name, tar::EntryType::Directory, "", b"")
        }

        /// Puts a blob at `blobs/sha256/<hex>`, with a `./` prefix like GNU tar run in the
        /// layout directory writes.
        fn blob(self, data: &[u8]) -> Self {
            let name = format!("./blobs/sha256/{}", hex_of(data));
            self.file(&name, data)
        }

        fn oci_layout(self, index: &Value) -> Self {
            self.file("./oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
                .file("./index.json", &serde_json::to_vec(index).expect("json"))
        }

        fn bytes(self) -> Vec<u8> {
            self.builder.into_inner().expect("finish")
        }

        fn write(self) -> NamedTempFile {
            write_file(&self.bytes())
        }
    }

    fn write_file(bytes: &[u8]) -> NamedTempFile {
        let mut file = NamedTempFile::new().expect("tempfile");
        file.write_all(bytes).expect("write");
        file
    }

    fn hex_of(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn descriptor(media_type: &str, data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: sha256_digest(data),
            size: data.len() as u64,
        }
    }

    fn json_of(d: &Descriptor) -> Value {
        json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size})
    }

    /// A layer: a real tar holding one file.
    fn layer(path: &str, contents: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, path, contents)
            .expect("layer entry");
        builder.into_inner().expect("layer")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).expect("gzip");
        encoder.finish().expect("gzip")
    }

    fn config_for(layers: &[&[u8]]) -> Vec<u8> {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
        serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .expect("config")
    }

    /// An OCI image: config, one gzip and one plain layer, and its manifest.
    struct OciImage {
        blobs: Vec<Vec<u8>>,
        manifest: Vec<u8>,
    }

    impl OciImage {
        fn new(tag: &str) -> Self {
            let plain = layer("etc/hello", tag.as_bytes());
            let compressed = gzip(&layer("bin/tool", b"#!/bin/sh\n"));
            let config = config_for(&[&layer("bin/tool", b"#!/bin/sh\n"), &plain]);
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": json_of(&descriptor(OCI_CONFIG, &config)),
                "layers": [
                    json_of(&descriptor(OCI_LAYER_GZIP, &compressed)),
                    json_of(&descriptor(OCI_LAYER, &plain)),
                ],
            }))
            .expect("manifest");
            OciImage {
                blobs: vec![config, compressed, plain],
                manifest,
            }
        }

        fn descriptor(&self) -> Descriptor {
            descriptor(OCI_MANIFEST, &self.manifest)
        }

        fn add_to(&self, mut maker: TarMaker) -> TarMaker {
            for blob in &self.blobs {
                maker = maker.blob(blob);
            }
            maker.blob(&self.manifest)
        }
    }

    fn open(file: &NamedTempFile) -> Archive {
        Archive::open(file.path()).expect("open")
    }

    fn read_blob(archive: &Archive, digest: &str) -> (Descriptor, Vec<u8>) {
        let (descriptor, mut reader) = archive.blob(digest).expect("blob");
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).expect("read blob");
        (descriptor, bytes)
    }

    /// Fetches `target` and everything it references that the archive holds, checking each
    /// blob's bytes against its digest and size and the media types `blob()` reports.
    /// Returns how many blobs were checked.
    fn check_blobs(archive: &Archive, target: &Descriptor) -> usize {
        let (reported, bytes) = read_blob(archive, &target.digest);
        assert_eq!(&reported, target);
        assert_eq!(sha256_digest(&bytes), target.digest);
        assert_eq!(bytes.len() as u64, target.size);
        let document: Value = serde_json::from_slice(&bytes).expect("manifest json");
        let mut checked = 1;
        if let Some(manifests) = document["manifests"].as_array() {
            for child in manifests {
                let child = descriptor_from(child);
                if archive.blobs.contains_key(&child.digest) {
                    checked += check_blobs(archive, &child);
                }
            }
            return checked;
        }
        let layers = document["layers"].as_array().expect("layers").iter();
        for referenced in std::iter::once(&document["config"]).chain(layers) {
            let expected = descriptor_from(referenced);
            let (reported, bytes) = read_blob(archive, &expected.digest);
            assert_eq!(reported, expected);
            assert_eq!(sha256_digest(&bytes), expected.digest);
            assert_eq!(bytes.len() as u64, expected.size);
            checked += 1;
        }
        checked
    }

    fn descriptor_from(json: &Value) -> Descriptor {
        Descriptor {
            media_type: json["mediaType"].as_str().expect("mediaType").into(),
            digest: json["digest"].as_str().expect("digest").into(),
            size: json["size"].as_u64().expect("size"),
        }
    }

    fn manifest_of(archive: &Archive, digest: &str) -> Value {
        serde_json::from_slice(&read_blob(archive, digest).1).expect("manifest json")
    }

    #[test]
    fn oci_layout_with_one_manifest() {
        let image = OciImage::new("1.36");
        let mut entry = json_of(&image.descriptor());
        entry["annotations"] = json!({REF_NAME: "docker.io/library/busybox:1.36"});
        let index = json!({"schemaVersion": 2, "manifests": [entry]});
        let file = image
            .add_to(TarMaker::new().dir("./").dir("./blobs/"))
            .oci_layout(&index)
            .write();

        let archive = open(&file);
        let images = archive.images().expect("images");
        assert_eq!(
            images,
            vec![ArchiveImage {
                names: vec!["docker.io/library/busybox:1.36".into()],
                target: image.descriptor(),
            }]
        );
        assert_eq!(check_blobs(&archive, &image.descriptor()), 4);
    }

    #[test]
    fn oci_layout_with_an_index_and_a_missing_platform() {
        let image = OciImage::new("1.36");
        let mut amd64 = json_of(&image.descriptor());
        amd64["platform"] = json!({"architecture": "amd64", "os": "linux"});
        let arm64 =
            json!({"mediaType": OCI_MANIFEST, "digest": sha256_digest(b"absent"), "size": 6});
        let index_blob = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [amd64, arm64],
        }))
        .expect("index");
        let target = descriptor(OCI_INDEX, &index_blob);
        // What Docker 25+ and containerd write: a bare tag plus the full name.
        let mut entry = json_of(&target);
        entry["annotations"] =
            json!({REF_NAME: "1.36", CONTAINERD_NAME: "docker.io/library/busybox:1.36"});
        let index = json!({"schemaVersion": 2, "manifests": [entry]});
        let file = image
            .add_to(TarMaker::new())
            .blob(&index_blob)
            .oci_layout(&index)
            .write();

        let archive = open(&file);
        let images = archive.images().expect("images");
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].names, ["docker.io/library/busybox:1.36"]);
        assert_eq!(images[0].target, target);
        // The index, the amd64 manifest, its config and two layers.
        assert_eq!(check_blobs(&archive, &target), 5);
        assert!(matches!(
            archive.blob(&sha256_digest(b"absent")),
            Err(ArchiveError::MissingBlob { digest, .. }) if digest == sha256_digest(b"absent")
        ));
    }

    #[test]
    fn oci_names_follow_the_annotations() {
        let names = |pairs: &[(&str, &str)]| {
            let map = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            oci_name(&map)
        };
        assert_eq!(names(&[(REF_NAME, "x:1")]), ["x:1"]);
        assert_eq!(names(&[(REF_NAME, "1.36")]), ["1.36"]);
        assert_eq!(
            names(&[(REF_NAME, "1.36"), (CONTAINERD_NAME, "docker.io/a/b:1.36")]),
            ["docker.io/a/b:1.36"]
        );
        assert_eq!(
            names(&[
                (REF_NAME, "reg.io/a:1"),
                (CONTAINERD_NAME, "docker.io/a/b:1")
            ]),
            ["reg.io/a:1"]
        );
        assert_eq!(
            names(&[(CONTAINERD_NAME, "docker.io/a/b:1")]),
            ["docker.io/a/b:1"]
        );
        assert!(names(&[]).is_empty());
    }

    #[test]
    fn oci_entries_with_the_same_target_are_one_image() {
        let image = OciImage::new("1");
        let entry = |name: &str| {
            let mut entry = json_of(&image.descriptor());
            entry["annotations"] = json!({REF_NAME: name});
            entry
        };
        let index =
            json!({"schemaVersion": 2, "manifests": [entry("a:1"), entry("b:2"), entry("a:1")]});
        let file = image.add_to(TarMaker::new()).oci_layout(&index).write();
        let images = open(&file).images().expect("images");
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].names, ["a:1", "b:2"]);
    }

    /// A docker save archive in the pre-25 style: `<id>/layer.tar` and `<hex>.json`.
    fn docker_save(plain: &[u8], compressed: &[u8], config: &[u8]) -> TarMaker {
        let manifest = json!([{
            "Config": format!("{}.json", hex_of(config)),
            "RepoTags": ["busybox:latest", "busybox:1.36"],
            "Layers": ["aaa/layer.tar", "./bbb/layer.tar"],
        }]);
        TarMaker::new()
            .dir("aaa/")
            .file("aaa/VERSION", b"1.0")
            .file("aaa/layer.tar", plain)
            .dir("bbb/")
            .file("bbb/layer.tar", compressed)
            .file(&format!("{}.json", hex_of(config)), config)
            .file(
                "manifest.json",
                &serde_json::to_vec(&manifest).expect("json"),
            )
            .file("repositories", b"{}")
    }

    #[test]
    fn docker_save_archive_gets_a_synthesized_manifest() {
        let plain = layer("bin/sh", b"shell");
        let compressed = gzip(&layer("etc/motd", b"hi"));
        let config = config_for(&[&plain, &layer("etc/motd", b"hi")]);
        let file = docker_save(&plain, &compressed, &config).write();

        let archive = open(&file);
        let images = archive.images().expect("images");
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].names, ["busybox:latest", "busybox:1.36"]);
        let target = &images[0].target;
        assert_eq!(target.media_type, DOCKER_MANIFEST);

        let manifest = manifest_of(&archive, &target.digest);
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
        assert_eq!(
            descriptor_from(&manifest["config"]),
            descriptor(DOCKER_CONFIG, &config)
        );
        assert_eq!(
            [
                descriptor_from(&manifest["layers"][0]),
                descriptor_from(&manifest["layers"][1])
            ],
            [
                descriptor(DOCKER_LAYER, &plain),
                descriptor(DOCKER_LAYER_GZIP, &compressed)
            ]
        );
        assert_eq!(check_blobs(&archive, target), 4);

        // Deterministic: the same archive gives the same manifest digest.
        assert_eq!(open(&file).images().expect("images")[0].target, *target);
    }

    #[test]
    fn docker_save_layers_may_be_links_and_zstd() {
        // skopeo's docker-archive stores `<hex>.tar` and links `<id>/layer.tar` to it.
        let plain = layer("bin/sh", b"shell");
        let zstd = [ZSTD_MAGIC, b"not really zstd"].concat();
        let config = config_for(&[&plain]);
        let manifest = json!([{
            "Config": "cfg.json", "RepoTags": null,
            "Layers": ["one/layer.tar", "two/layer.tar", "three/layer.tar"],
        }]);
        let file = TarMaker::new()
            .file("p.tar", &plain)
            .file("z.tar", &zstd)
            .symlink("one/layer.tar", "../p.tar")
            .entry("two/layer.tar", tar::EntryType::Link, "./z.tar", b"")
            .symlink("three/layer.tar", "../one/layer.tar")
            .file("cfg.json", &config)
            .file(
                "manifest.json",
                &serde_json::to_vec(&manifest).expect("json"),
            )
            .write();

        let archive = open(&file);
        let images = archive.images().expect("images");
        assert!(images[0].names.is_empty());
        let manifest = manifest_of(&archive, &images[0].target.digest);
        let layers: Vec<Descriptor> = (0..3)
            .map(|i| descriptor_from(&manifest["layers"][i]))
            .collect();
        assert_eq!(
            layers,
            [
                descriptor(DOCKER_LAYER, &plain),
                descriptor(OCI_LAYER_ZSTD, &zstd),
                descriptor(DOCKER_LAYER, &plain),
            ]
        );
        assert_eq!(check_blobs(&archive, &images[0].target), 5);
    }

    #[test]
    fn docker_25_archive_prefers_the_oci_layout_and_borrows_names() {
        let image = OciImage::new("1");
        let config = &image.blobs[0];
        let docker_manifest = json!([{
            "Config": format!("blobs/sha256/{}", hex_of(config)),
            "RepoTags": ["busybox:latest"],
            "Layers": [],
        }]);
        let build = |annotations: Value| {
            let mut entry = json_of(&image.descriptor());
            entry["annotations"] = annotations;
            let index = json!({"schemaVersion": 2, "manifests": [entry]});
            image
                .add_to(TarMaker::new())
                .oci_layout(&index)
                .file(
                    "manifest.json",
                    &serde_json::to_vec(&docker_manifest).expect("json"),
                )
                .write()
        };

        let unnamed = open(&build(json!({})));
        let images = unnamed.images().expect("images");
        assert_eq!(images[0].names, ["busybox:latest"]);
        assert_eq!(images[0].target, image.descriptor());

        let named = open(&build(
            json!({CONTAINERD_NAME: "docker.io/library/busybox:latest", REF_NAME: "latest"}),
        ));
        assert_eq!(
            named.images().expect("images")[0].names,
            ["docker.io/library/busybox:latest"]
        );
    }

    #[test]
    fn missing_blob() {
        let image = OciImage::new("1");
        let index = json!({"schemaVersion": 2, "manifests": [json_of(&image.descriptor())]});
        let archive = open(&image.add_to(TarMaker::new()).oci_layout(&index).write());
        let absent = sha256_digest(b"nothing");
        match archive.blob(&absent) {
            Err(ArchiveError::MissingBlob { digest, .. }) => assert_eq!(digest, absent),
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("found a blob that is not there"),
        }
        assert!(matches!(
            archive.blob("not a digest"),
            Err(ArchiveError::MissingBlob { .. })
        ));
    }

    #[test]
    fn index_entry_whose_blob_is_absent_fails_open() {
        let index = json!({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha256_digest(b"x"), "size": 1}
        ]});
        let result = Archive::open(TarMaker::new().oci_layout(&index).write().path());
        assert!(
            matches!(result, Err(ArchiveError::MissingBlob { .. })),
            "{result:?}"
        );
    }

    fn open_error(bytes: &[u8]) -> ArchiveError {
        let file = write_file(bytes);
        let error = Archive::open(file.path()).expect_err("should not open");
        let message = error.to_string();
        assert!(
            message.contains(&file.path().display().to_string()),
            "{message}"
        );
        error
    }

    #[test]
    fn garbage_is_not_an_archive() {
        let garbage: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert!(matches!(
            open_error(&garbage),
            ArchiveError::NotAnArchive { .. }
        ));
        assert!(matches!(
            open_error(b"short"),
            ArchiveError::NotAnArchive { .. }
        ));
        assert!(matches!(open_error(b""), ArchiveError::NotAnArchive { .. }));
        let rootfs = TarMaker::new()
            .file("etc/passwd", b"root:x:0:0::/:/bin/sh\n")
            .bytes();
        assert!(matches!(
            open_error(&rootfs),
            ArchiveError::NotAnArchive { .. }
        ));
        let error = open_error(&gzip(&rootfs));
        assert!(error.to_string().contains("gzip-compressed"), "{error}");
    }

    #[test]
    fn damaged_archives_are_invalid() {
        let image = OciImage::new("1");
        let index = json!({"schemaVersion": 2, "manifests": [json_of(&image.descriptor())]});
        let whole = image.add_to(TarMaker::new()).oci_layout(&index).bytes();
        // Cut inside the last member (index.json): its data ends past the end of the file.
        let cut = whole.len() - 1024 - 512 + 10;
        let error = open_error(&whole[..cut]);
        assert!(
            matches!(&error, ArchiveError::Invalid { message, .. } if message.contains("cut short")),
            "{error}"
        );

        let mut second_header_garbage = TarMaker::new().file("manifest.json", b"[]").bytes();
        second_header_garbage.truncate(1024);
        second_header_garbage.extend([0xa5; 512]);
        let error = open_error(&second_header_garbage);
        assert!(
            matches!(&error, ArchiveError::Invalid { message, .. } if message.starts_with("after 1 entries")),
            "{error}"
        );

        let bad_json = TarMaker::new()
            .oci_layout(&json!({}))
            .file("./index.json", b"{nope")
            .bytes();
        assert!(
            matches!(open_error(&bad_json), ArchiveError::Invalid { what, .. } if what == "index.json")
        );

        let bad_digest =
            json!({"schemaVersion": 2, "manifests": [{"digest": "sha256:../../etc", "size": 1}]});
        let error = open_error(&TarMaker::new().oci_layout(&bad_digest).bytes());
        assert!(
            matches!(&error, ArchiveError::Invalid { message, .. } if message.contains("invalid digest")),
            "{error}"
        );

        let future = TarMaker::new()
            .oci_layout(&index)
            .file("oci-layout", br#"{"imageLayoutVersion":"2.0.0"}"#)
            .bytes();
        assert!(
            matches!(open_error(&future), ArchiveError::Invalid { what, .. } if what == "oci-layout")
        );
    }

    #[test]
    fn wrong_size_in_a_descriptor_is_invalid() {
        let image = OciImage::new("1");
        let mut entry = json_of(&image.descriptor());
        entry["size"] = json!(image.manifest.len() + 1);
        let index = json!({"schemaVersion": 2, "manifests": [entry]});
        let error = open_error(&image.add_to(TarMaker::new()).oci_layout(&index).bytes());
        assert!(
            matches!(&error, ArchiveError::Invalid { message, .. } if message.contains("descriptor says")),
            "{error}"
        );
    }

    #[test]
    fn json_over_the_limit_is_refused() {
        let mut huge = b"{\"manifests\":[]".to_vec();
        huge.resize(JSON_LIMIT as usize + 1, b' ');
        huge.push(b'}');
        let bytes = TarMaker::new()
            .oci_layout(&json!({}))
            .file("index.json", &huge)
            .bytes();
        let error = open_error(&bytes);
        assert!(
            matches!(&error, ArchiveError::Invalid { message, .. } if message.contains("limit")),
            "{error}"
        );
    }

    #[test]
    fn members_that_are_not_regular_files_are_refused() {
        let directory = TarMaker::new()
            .oci_layout(&json!({}))
            .dir("index.json")
            .bytes();
        let error = open_error(&directory);
        assert!(
            matches!(&error, ArchiveError::Invalid { message, .. } if message.contains("directory")),
            "{error}"
        );

        let docker = |layer_entry: TarMaker| {
            let manifest = json!([{"Config": "c.json", "Layers": ["l/layer.tar"]}]);
            layer_entry
                .file("c.json", b"{}")
                .file(
                    "manifest.json",
                    &serde_json::to_vec(&manifest).expect("json"),
                )
                .bytes()
        };
        for (maker, expected) in [
            (
                TarMaker::new().symlink("l/layer.tar", "../../etc/passwd"),
                "outside",
            ),
            (
                TarMaker::new().symlink("l/layer.tar", "/etc/passwd"),
                "outside",
            ),
            (
                TarMaker::new().symlink("l/layer.tar", "layer.tar"),
                "too many",
            ),
            (
                TarMaker::new().symlink("l/layer.tar", "gone.tar"),
                "not in the archive",
            ),
            (TarMaker::new(), "not in the archive"),
        ] {
            let error = open_error(&docker(maker));
            assert!(
                matches!(&error, ArchiveError::Invalid { message, .. } if message.contains(expected)),
                "{error}"
            );
        }
    }

    #[test]
    fn normalize_member_names() {
        assert_eq!(
            normalize("./blobs//sha256/./x").as_deref(),
            Some("blobs/sha256/x")
        );
        assert_eq!(normalize("/index.json").as_deref(), Some("index.json"));
        assert_eq!(normalize("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize("./").as_deref(), Some(""));
        assert_eq!(normalize("../x"), None);
    }

    #[test]
    fn blob_reader_reports_an_archive_shrunk_after_open() {
        let plain = layer("bin/sh", &[7; 3000]);
        let config = config_for(&[&plain]);
        let manifest = json!([{"Config": "c.json", "Layers": ["l.tar"]}]);
        let bytes = TarMaker::new()
            .file(
                "manifest.json",
                &serde_json::to_vec(&manifest).expect("json"),
            )
            .file("c.json", &config)
            .file("l.tar", &plain)
            .bytes();
        let file = write_file(&bytes);
        let archive = open(&file);
        file.as_file()
            .set_len(bytes.len() as u64 - 4096)
            .expect("truncate");
        let (_, mut reader) = archive.blob(&sha256_digest(&plain)).expect("blob");
        let error = reader.read_to_end(&mut Vec::new()).expect_err("short read");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// Archives written by skopeo itself, from an OCI layout directory built here (no
    /// registry or network needed). Skipped when skopeo is not installed.
    #[test]
    fn archives_written_by_skopeo() {
        if std::process::Command::new("skopeo")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipping archives_written_by_skopeo: skopeo is not installed");
            return;
        }
        let image = OciImage::new("1.36");
        let layout = tempfile::tempdir().expect("tempdir");
        let blobs = layout.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("mkdir");
        for blob in image.blobs.iter().chain([&image.manifest]) {
            std::fs::write(blobs.join(hex_of(blob)), blob).expect("write blob");
        }
        let mut entry = json_of(&image.descriptor());
        entry["annotations"] = json!({REF_NAME: "1.36"});
        let index = json!({"schemaVersion": 2, "manifests": [entry]});
        std::fs::write(layout.path().join("index.json"), index.to_string()).expect("index");
        std::fs::write(
            layout.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("layout");

        let out = tempfile::tempdir().expect("tempdir");
        let source = format!("oci:{}:1.36", layout.path().display());
        let oci = out.path().join("oci.tar");
        let docker = out.path().join("docker.tar");
        skopeo_copy(
            &source,
            &format!(
                "oci-archive:{}:docker.io/library/busybox:1.36",
                oci.display()
            ),
        );
        skopeo_copy(
            &source,
            &format!("docker-archive:{}:busybox:latest", docker.display()),
        );

        let archive = Archive::open(&oci).expect("open oci-archive");
        let images = archive.images().expect("images");
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].names, ["docker.io/library/busybox:1.36"]);
        check_blobs(&archive, &images[0].target);
        check_layers_match_config(&archive, &images[0].target);

        let archive = Archive::open(&docker).expect("open docker-archive");
        let images = archive.images().expect("images");
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].target.media_type, DOCKER_MANIFEST);
        // skopeo 1.9 writes the normalised name; any version writes some form of it.
        assert!(
            images[0]
                .names
                .iter()
                .any(|n| n.ends_with("busybox:latest")),
            "{:?}",
            images[0].names
        );
        assert_eq!(check_blobs(&archive, &images[0].target), 4);
        check_layers_match_config(&archive, &images[0].target);
    }

    fn skopeo_copy(from: &str, to: &str) {
        let output = std::process::Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--quiet", from, to])
            .output()
            .expect("run skopeo");
        assert!(
            output.status.success(),
            "skopeo copy {from} {to}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The layers, decompressed as their media type says, are the filesystem the config's
    /// diff_ids describe: the synthesized manifest describes the same image.
    fn check_layers_match_config(archive: &Archive, target: &Descriptor) {
        let manifest = manifest_of(archive, &target.digest);
        let config = manifest_of(
            archive,
            manifest["config"]["digest"].as_str().expect("config"),
        );
        let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
        let layers = manifest["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), diff_ids.len());
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            let layer = descriptor_from(layer);
            let (_, bytes) = read_blob(archive, &layer.digest);
            let tar = if layer.media_type.ends_with("gzip") {
                let mut tar = Vec::new();
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_end(&mut tar)
                    .expect("gunzip");
                tar
            } else {
                bytes
            };
            assert_eq!(
                sha256_digest(&tar),
                diff_id.as_str().expect("diff_id"),
                "{layer:?}"
            );
        }
    }
}
