use super::docker_save::sha256_digest;
use super::oci_layout::oci_name;
use super::tar_index::normalize;
use super::*;
use std::io::Write as _;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
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
    let arm64 = json!({"mediaType": OCI_MANIFEST, "digest": sha256_digest(b"absent"), "size": 6});
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

#[test]
fn oversized_extension_headers_are_refused_without_reading_them() {
    // A GNU long name declaring 64 MiB, all of it there (zeros in a sparse file): the tar
    // crate's iterator read such a body whole into memory.
    const DECLARED: u64 = 64 << 20;
    let mut bytes = TarMaker::new().file("oci-layout", b"{}").bytes();
    bytes.truncate(1024);
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(DECLARED);
    header.set_mode(0o644);
    header.set_cksum();
    bytes.extend_from_slice(header.as_bytes());
    let file = write_file(&bytes);
    file.as_file()
        .set_len(bytes.len() as u64 + DECLARED + 1024)
        .expect("extend");

    let (result, peak) = crate::snapshot::apply::fuzz::peak_heap(|| Archive::open(file.path()));
    let error = result.expect_err("a 64 MiB long name");
    assert!(
        matches!(&error, ArchiveError::Invalid { message, .. }
            if message.contains("GNU long name of 67108864 bytes is over the limit")),
        "{error}"
    );
    assert!(peak < 1 << 20, "{peak} bytes of heap");
}

#[test]
fn mutated_archives_are_answered_not_panicked_on() {
    use crate::snapshot::apply::fuzz::{Rng, header_offsets, mutate_tar, no_panic, peak_heap};
    /// Mutated archives per seed.
    const CASES_PER_SEED: usize = 400;
    /// What reading an archive may hold at once: its largest JSON document and buffers.
    const HEAP_BOUND: usize = 2 * JSON_LIMIT as usize + (1 << 20);

    let image = OciImage::new("1");
    let index = json!({"schemaVersion": 2, "manifests": [json_of(&image.descriptor())]});
    let plain = layer("bin/sh", b"shell");
    let compressed = gzip(&layer("etc/motd", b"hi"));
    let config = config_for(&[&plain, &layer("etc/motd", b"hi")]);
    let seeds = [
        image.add_to(TarMaker::new()).oci_layout(&index).bytes(),
        docker_save(&plain, &compressed, &config).bytes(),
    ];
    let mut rng = Rng::new(0x0061_7263_6869_7665);
    let (mut opened, mut refused) = (0, 0);
    for seed in &seeds {
        open(&write_file(seed));
        let headers = header_offsets(seed);
        for case in 0..CASES_PER_SEED {
            let input = mutate_tar(&mut rng, seed, &headers);
            let file = write_file(&input);
            let (outcome, peak) = no_panic("archive", case, &input, || {
                peak_heap(|| Archive::open(file.path()).map(|archive| read_all_blobs(&archive)))
            });
            assert!(peak <= HEAP_BOUND, "case {case}: {peak} bytes of heap");
            match outcome {
                Ok(()) => opened += 1,
                Err(e) => {
                    assert!(
                        e.to_string().contains(&*file.path().to_string_lossy()),
                        "case {case}: {e} does not name the archive"
                    );
                    refused += 1;
                }
            }
        }
    }
    let total = opened + refused;
    assert!(
        opened > total / 20 && refused > total / 20,
        "{opened} opened, {refused} refused"
    );
}

/// Reads every image's blobs as an import would; errors are fine, panics are not.
fn read_all_blobs(archive: &Archive) {
    let images = archive.images().expect("images");
    let mut digests: Vec<&String> = archive.blobs.keys().collect();
    digests.sort();
    for digest in digests.into_iter().take(16) {
        if let Ok((_, reader)) = archive.blob(digest) {
            let _ = reader.take(JSON_LIMIT).read_to_end(&mut Vec::new());
        }
    }
    drop(images);
}
