//! Images built in memory: layers (tar, any entry a test wants, including
//! malicious ones), configs, manifests and indexes in OCI or Docker schema 2
//! form, pushed to a [`Registry`] over the distribution API.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{Value, json};
use tar::{EntryType, Header};

use crate::registry::Registry;
use crate::sha256_digest;

/// Fixed mtime so that the same entries always give the same digests.
const MTIME: u64 = 1_700_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/vnd.oci.image.manifest.v1+json` / `…index.v1+json`
    Oci,
    /// `application/vnd.docker.distribution.manifest.v2+json` / `…manifest.list.v2+json`
    Docker,
}

/// A layer tarball under construction. Paths are relative (`etc/passwd`).
///
/// ```ignore
/// let layer = Layer::new()
///     .dir("etc")
///     .file("etc/hello", "hi")
///     .symlink("etc/link", "hello")
///     .gzip();
/// ```
pub struct Layer {
    tar: tar::Builder<Vec<u8>>,
}

/// A finished layer: the blob as pushed, and the digest of its tar (diff_id).
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub compression: Compression,
    pub data: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
}

/// gzip level of test layers: fast, since tests push many of them.
const GZIP_LEVEL_FAST: u32 = 1;
/// zstd level of test layers: zstd's own default.
const ZSTD_LEVEL: i32 = 3;

impl LayerBlob {
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// `tar` compressed as tests push layers (gzip at its fastest level).
    pub fn from_tar(tar: &[u8], compression: Compression) -> LayerBlob {
        match compression {
            Compression::Gzip => Self::gzip_at(tar, GZIP_LEVEL_FAST),
            Compression::None => Self::new(compression, tar.to_vec(), tar),
            Compression::Zstd => {
                Self::new(compression, zstd::encode_all(tar, ZSTD_LEVEL).unwrap(), tar)
            }
        }
    }

    /// `tar` gzipped at `level` (0-9): the benchmark uses gzip's default, 6,
    /// as image builders do, so its layers are the size registries serve.
    pub fn gzip_at(tar: &[u8], level: u32) -> LayerBlob {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(tar.len() / 2),
            flate2::Compression::new(level),
        );
        enc.write_all(tar).unwrap();
        Self::new(Compression::Gzip, enc.finish().unwrap(), tar)
    }

    fn new(compression: Compression, data: Vec<u8>, tar: &[u8]) -> LayerBlob {
        LayerBlob {
            compression,
            digest: sha256_digest(&data),
            diff_id: sha256_digest(tar),
            data,
        }
    }
}

fn header(kind: EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(MTIME);
    h
}

/// PAX extended header records: `"<len> <key>=<value>\n"`, len counting itself.
fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body_len = 1 + key.len() + 1 + value.len() + 1; // ' ' key '=' value '\n'
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    /// A regular file, mode 0644, owned by root.
    pub fn file(self, path: &str, content: impl AsRef<[u8]>) -> Layer {
        self.file_with(path, content, 0o644, 0, 0)
    }

    pub fn file_with(
        mut self,
        path: &str,
        content: impl AsRef<[u8]>,
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Layer {
        let content = content.as_ref();
        let mut h = header(EntryType::Regular, mode, uid, gid, content.len() as u64);
        self.tar.append_data(&mut h, path, content).unwrap();
        self
    }

    /// A regular file carrying extended attributes (PAX `SCHILY.xattr.<name>`).
    pub fn file_with_xattrs(
        mut self,
        path: &str,
        content: impl AsRef<[u8]>,
        xattrs: &[(&str, &[u8])],
    ) -> Layer {
        let records: Vec<(String, Vec<u8>)> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.to_vec()))
            .collect();
        self.pax(path, &records);
        self.file(path, content)
    }

    /// A PAX extended header ('x') applying to the next entry.
    fn pax(&mut self, path: &str, records: &[(String, Vec<u8>)]) {
        let data = pax_records(records);
        let mut h = header(EntryType::XHeader, 0o644, 0, 0, data.len() as u64);
        let name = format!("PaxHeaders.0/{}", path.rsplit('/').next().unwrap_or(path));
        self.tar.append_data(&mut h, name, data.as_slice()).unwrap();
    }

    pub fn dir(self, path: &str) -> Layer {
        self.dir_with(path, 0o755, 0, 0)
    }

    pub fn dir_with(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Layer {
        let mut h = header(EntryType::Directory, mode, uid, gid, 0);
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Layer {
        let mut h = header(EntryType::Symlink, 0o777, 0, 0, 0);
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    /// A hard link `path` to the earlier entry `target` (archive path).
    pub fn hardlink(self, path: &str, target: &str) -> Layer {
        self.hardlink_with(path, target, 0o644)
    }

    /// A hard link whose header says `mode`. Go's archive appliers (containerd,
    /// Docker) chmod the target to the link header's mode, so a link to an
    /// executable must say so or the executable stops being one there.
    pub fn hardlink_with(mut self, path: &str, target: &str, mode: u32) -> Layer {
        let mut h = header(EntryType::Link, mode, 0, 0, 0);
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    /// Deletes `path` (from a lower layer): entry `<dir>/.wh.<name>`.
    pub fn whiteout(self, path: &str) -> Layer {
        let wh = match path.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/.wh.{name}"),
            None => format!(".wh.{path}"),
        };
        self.file(&wh, "")
    }

    /// Hides everything lower layers have in `dir`: entry `<dir>/.wh..wh..opq`.
    pub fn opaque(self, dir: &str) -> Layer {
        self.file(&format!("{dir}/.wh..wh..opq"), "")
    }

    pub fn char_device(mut self, path: &str, major: u32, minor: u32) -> Layer {
        let mut h = header(EntryType::Char, 0o666, 0, 0, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }

    pub fn fifo(mut self, path: &str) -> Layer {
        let mut h = header(EntryType::Fifo, 0o644, 0, 0, 0);
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }

    /// An entry written byte for byte, without the path checks of
    /// `tar::Builder` (which refuses `..` and absolute names): for malicious
    /// layers. Names or link targets over 100 bytes go in a PAX header
    /// (`path` / `linkpath`), with a truncated copy in the tar header.
    pub fn raw(mut self, name: &str, kind: EntryType, link: Option<&str>, content: &[u8]) -> Layer {
        let mut long = Vec::new();
        if name.len() > 100 {
            long.push(("path".to_string(), name.as_bytes().to_vec()));
        }
        if let Some(link) = link.filter(|l| l.len() > 100) {
            long.push(("linkpath".to_string(), link.as_bytes().to_vec()));
        }
        if !long.is_empty() {
            self.pax(name, &long);
        }
        let mode = if kind == EntryType::Symlink {
            0o777
        } else {
            0o644
        };
        let mut h = header(kind, mode, 0, 0, content.len() as u64);
        let old = h.as_old_mut();
        let name = &name.as_bytes()[..name.len().min(100)];
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            let link = &link.as_bytes()[..link.len().min(100)];
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        self.tar.append(&h, content).unwrap();
        self
    }

    pub fn raw_file(self, name: &str, content: &[u8]) -> Layer {
        self.raw(name, EntryType::Regular, None, content)
    }

    pub fn raw_symlink(self, name: &str, target: &str) -> Layer {
        self.raw(name, EntryType::Symlink, Some(target), b"")
    }

    pub fn raw_hardlink(self, name: &str, target: &str) -> Layer {
        self.raw(name, EntryType::Link, Some(target), b"")
    }

    /// The uncompressed tarball.
    pub fn into_tar(self) -> Vec<u8> {
        self.tar.into_inner().unwrap()
    }

    pub fn build(self, compression: Compression) -> LayerBlob {
        LayerBlob::from_tar(&self.into_tar(), compression)
    }

    pub fn gzip(self) -> LayerBlob {
        self.build(Compression::Gzip)
    }

    pub fn zstd(self) -> LayerBlob {
        self.build(Compression::Zstd)
    }

    pub fn uncompressed(self) -> LayerBlob {
        self.build(Compression::None)
    }
}

/// A config, manifest or index: bytes plus digest and media type.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub data: Vec<u8>,
    pub digest: String,
}

impl Blob {
    fn json(media_type: &str, value: &Value) -> Blob {
        let data = serde_json::to_vec(value).unwrap();
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&data),
            data,
        }
    }

    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "size": self.size(), "digest": self.digest })
    }
}

fn layer_media_type(format: Format, compression: Compression) -> &'static str {
    match (format, compression) {
        (Format::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
        (Format::Oci, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (Format::Oci, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (Format::Docker, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
        (Format::Docker, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (Format::Docker, Compression::Zstd) => {
            panic!("Docker schema 2 has no zstd layer media type; use Format::Oci")
        }
    }
}

/// Host architecture in OCI terms (`amd64`, `arm64`).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An architecture that is not the host's.
pub fn foreign_arch() -> &'static str {
    if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

pub struct ImageBuilder {
    format: Format,
    arch: String,
    user: Option<String>,
    env: Vec<String>,
    cmd: Vec<String>,
    entrypoint: Vec<String>,
    layers: Vec<LayerBlob>,
    annotations: BTreeMap<String, String>,
    /// The config's `Volumes` keys, as written (odd forms included).
    volumes: Vec<String>,
}

impl ImageBuilder {
    /// A declared volume (`VOLUME` in a Dockerfile), written into the config as given.
    pub fn volume(mut self, path: &str) -> Self {
        self.volumes.push(path.to_string());
        self
    }

    pub fn layer(mut self, layer: LayerBlob) -> Self {
        self.layers.push(layer);
        self
    }

    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    pub fn env(mut self, var: &str) -> Self {
        self.env.push(var.to_string());
        self
    }

    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The image's Entrypoint (none by default); `cmd(&[])` leaves it alone.
    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn arch(mut self, arch: &str) -> Self {
        self.arch = arch.to_string();
        self
    }

    /// A manifest annotation (OCI only).
    pub fn annotation(mut self, key: &str, value: impl Into<String>) -> Self {
        assert_eq!(
            self.format,
            Format::Oci,
            "Docker schema 2 manifests have no annotations"
        );
        self.annotations.insert(key.to_string(), value.into());
        self
    }

    pub fn build(self) -> Image {
        let mut container_config = json!({ "Env": self.env, "Cmd": self.cmd });
        if !self.entrypoint.is_empty() {
            container_config["Entrypoint"] = json!(self.entrypoint);
        }
        if let Some(user) = &self.user {
            container_config["User"] = json!(user);
        }
        if !self.volumes.is_empty() {
            let volumes: serde_json::Map<String, Value> = self
                .volumes
                .iter()
                .map(|v| (v.clone(), json!({})))
                .collect();
            container_config["Volumes"] = Value::Object(volumes);
        }
        let diff_ids: Vec<&str> = self.layers.iter().map(|l| l.diff_id.as_str()).collect();
        let config_value = json!({
            "architecture": self.arch,
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": container_config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let (config_type, manifest_type) = match self.format {
            Format::Oci => (
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.manifest.v1+json",
            ),
            Format::Docker => (
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
            ),
        };
        let config = Blob::json(config_type, &config_value);
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| {
                json!({
                    "mediaType": layer_media_type(self.format, l.compression),
                    "size": l.size(),
                    "digest": l.digest,
                })
            })
            .collect();
        let mut manifest_value = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config.descriptor(),
            "layers": layers,
        });
        if !self.annotations.is_empty() {
            manifest_value["annotations"] = json!(self.annotations);
        }
        let manifest = Blob::json(manifest_type, &manifest_value);
        Image {
            format: self.format,
            arch: self.arch,
            layers: self.layers,
            config,
            manifest,
        }
    }
}

/// A single-platform image: layers, config and manifest, ready to push.
#[derive(Debug, Clone)]
pub struct Image {
    pub format: Format,
    pub arch: String,
    pub layers: Vec<LayerBlob>,
    pub config: Blob,
    pub manifest: Blob,
}

impl Image {
    fn builder(format: Format) -> ImageBuilder {
        ImageBuilder {
            format,
            arch: host_arch().to_string(),
            user: None,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cmd: vec!["/bin/sh".into()],
            entrypoint: Vec::new(),
            layers: Vec::new(),
            annotations: BTreeMap::new(),
            volumes: Vec::new(),
        }
    }

    pub fn oci() -> ImageBuilder {
        Self::builder(Format::Oci)
    }

    pub fn docker() -> ImageBuilder {
        Self::builder(Format::Docker)
    }

    /// The CRI image id: the config digest.
    pub fn id(&self) -> &str {
        &self.config.digest
    }

    /// The manifest digest (what `repo@digest` references name).
    pub fn digest(&self) -> &str {
        &self.manifest.digest
    }

    pub fn layer_digests(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.digest.as_str()).collect()
    }

    /// Layers and config named for messages: `("layer 0", digest)`, …, `("config", digest)`.
    pub fn named_blobs(&self) -> Vec<(String, &str)> {
        let mut named: Vec<(String, &str)> = (self.layers.iter().enumerate())
            .map(|(i, l)| (format!("layer {i}"), l.digest.as_str()))
            .collect();
        named.push(("config".to_string(), self.id()));
        named
    }

    /// Every blob of the image: layers, config, manifest.
    pub fn all_digests(&self) -> Vec<&str> {
        let mut all = self.layer_digests();
        all.push(self.id());
        all.push(self.digest());
        all
    }

    /// Pushes blobs and config, then the manifest under `tag`. Returns the
    /// manifest digest.
    pub async fn push(&self, registry: &Registry, repo: &str, tag: &str) -> String {
        self.push_blobs(registry, repo).await;
        push_manifest(registry, repo, tag, &self.manifest).await
    }

    async fn push_blobs(&self, registry: &Registry, repo: &str) {
        for layer in &self.layers {
            push_blob(registry, repo, &layer.digest, &layer.data).await;
        }
        push_blob(registry, repo, &self.config.digest, &self.config.data).await;
    }

    fn platform(&self) -> Value {
        json!({ "architecture": self.arch, "os": "linux" })
    }
}

/// A multi-platform image: an OCI index or a Docker manifest list.
#[derive(Debug, Clone)]
pub struct Index {
    pub manifest: Blob,
    pub images: Vec<Image>,
}

impl Index {
    pub fn new(format: Format, images: Vec<Image>) -> Index {
        let media_type = match format {
            Format::Oci => "application/vnd.oci.image.index.v1+json",
            Format::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
        };
        let manifests: Vec<Value> = images
            .iter()
            .map(|image| {
                assert_eq!(image.format, format, "index and image formats differ");
                let mut descriptor = image.manifest.descriptor();
                descriptor["platform"] = image.platform();
                descriptor
            })
            .collect();
        let value = json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": manifests });
        Index {
            manifest: Blob::json(media_type, &value),
            images,
        }
    }

    pub fn digest(&self) -> &str {
        &self.manifest.digest
    }

    /// The image for `arch`.
    pub fn image(&self, arch: &str) -> &Image {
        self.images
            .iter()
            .find(|i| i.arch == arch)
            .expect("no image for that arch")
    }

    /// Pushes every image (manifests by digest), then the index under `tag`.
    /// Returns the index digest.
    pub async fn push(&self, registry: &Registry, repo: &str, tag: &str) -> String {
        for image in &self.images {
            image.push_blobs(registry, repo).await;
            push_manifest(registry, repo, &image.manifest.digest, &image.manifest).await;
        }
        push_manifest(registry, repo, tag, &self.manifest).await
    }
}

fn with_auth(registry: &Registry, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match registry.credentials() {
        Some((user, password)) => request.basic_auth(user, Some(password)),
        None => request,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Uploads a blob (monolithic upload: `POST …/blobs/uploads/`, then
/// `PUT <Location>&digest=…`). Uploading a blob the registry has is harmless;
/// not asking first keeps 404s out of the registry's log.
pub async fn push_blob(registry: &Registry, repo: &str, digest: &str, data: &[u8]) {
    assert_eq!(
        sha256_digest(data),
        digest,
        "blob data does not match its digest"
    );
    let http = client();
    let base = registry.url();
    let start = with_auth(
        registry,
        http.post(format!("{base}/v2/{repo}/blobs/uploads/")),
    )
    .send()
    .await
    .expect("POST blob upload");
    assert_eq!(
        start.status(),
        202,
        "starting upload of {digest}: {:?}",
        start.text().await
    );
    let location = start
        .headers()
        .get("location")
        .expect("upload Location")
        .to_str()
        .unwrap()
        .to_string();
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let put = with_auth(
        registry,
        http.put(format!("{location}{separator}digest={digest}")),
    )
    .header("content-type", "application/octet-stream")
    .body(data.to_vec())
    .send()
    .await
    .expect("PUT blob");
    let status = put.status();
    assert_eq!(status, 201, "uploading {digest}: {:?}", put.text().await);
}

/// Puts a manifest (or index) under `reference` (a tag or its digest).
/// Returns the digest the registry computed, checked against ours.
pub async fn push_manifest(
    registry: &Registry,
    repo: &str,
    reference: &str,
    manifest: &Blob,
) -> String {
    let url = format!("{}/v2/{repo}/manifests/{reference}", registry.url());
    let resp = with_auth(registry, client().put(url))
        .header("content-type", &manifest.media_type)
        .body(manifest.data.clone())
        .send()
        .await
        .expect("PUT manifest");
    let status = resp.status();
    let digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(
        status,
        201,
        "pushing manifest {repo}:{reference}: {:?}",
        resp.text().await
    );
    assert_eq!(
        digest.as_deref(),
        Some(manifest.digest.as_str()),
        "registry digest differs"
    );
    manifest.digest.clone()
}

/// Whether the registry serves `repo:reference` right now (for sanity checks).
pub async fn manifest_exists(registry: &Registry, repo: &str, reference: &str) -> bool {
    let url = format!("{}/v2/{repo}/manifests/{reference}", registry.url());
    with_auth(registry, client().head(url))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}
