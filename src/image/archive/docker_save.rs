//! Reading a `docker save` archive: `manifest.json` entries, each made into a synthesized
//! Docker schema 2 manifest over its config and layer files, which are hashed once each.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::member::Exact;
use super::tar_index::Span;
use super::{
    Archive, ArchiveError, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_MANIFEST,
    Descriptor, GZIP_MAGIC, HASH_BUFFER, OCI_LAYER_ZSTD, Source, ZSTD_MAGIC, push_image,
};

/// One entry of a docker-save `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DockerSaveEntry {
    /// Member name of the config, e.g. `<hex>.json` or `blobs/sha256/<hex>`.
    pub(super) config: String,
    /// `null` for an image saved by ID.
    #[serde(default)]
    pub(super) repo_tags: Option<Vec<String>>,
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
    pub(super) fn load_docker(&mut self) -> Result<(), ArchiveError> {
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

pub(super) use crate::content::sha256_digest;

/// The result of hashing one member.
#[derive(Debug, Clone)]
pub(super) struct Hashed {
    pub(super) digest: String,
    /// Its first bytes (up to 4), to recognise compression.
    head: Vec<u8>,
}

/// Hashes members through one file handle, remembering results by offset so a layer that
/// several images or links share is read once.
pub(super) struct MemberHasher {
    file: File,
    done: HashMap<u64, Hashed>,
    buffer: Vec<u8>,
}

impl MemberHasher {
    pub(super) fn new(archive: &Archive) -> Result<MemberHasher, ArchiveError> {
        let file = File::open(&archive.path).map_err(|e| archive.io_error("cannot open", e))?;
        Ok(MemberHasher {
            file,
            done: HashMap::new(),
            buffer: vec![0; HASH_BUFFER],
        })
    }

    pub(super) fn hash(
        &mut self,
        archive: &Archive,
        span: Span,
        name: &str,
    ) -> Result<Hashed, ArchiveError> {
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
