//! Reading an OCI image layout: `oci-layout`, `index.json`, and the manifests and indexes it
//! reaches, depth first; names from the `index.json` annotations (or, for Docker 25+
//! archives, from `manifest.json`).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::docker_save::{DockerSaveEntry, MemberHasher};
use super::{
    Archive, ArchiveError, CONTAINERD_NAME, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor,
    MAX_INDEX_DEPTH, OCI_INDEX, OCI_MANIFEST, REF_NAME, Source, add_names, push_image,
};

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
    pub(super) fn load_oci(&mut self, has_docker_manifest: bool) -> Result<(), ArchiveError> {
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
pub(super) fn oci_name(annotations: &HashMap<String, String>) -> Vec<String> {
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
