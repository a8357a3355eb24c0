//! Image service integration tests: berthd against a real docker-registry.
//!
//! Each test gets its own registry, root and berthd (see `common::TestBed`).
//! They need root, docker-registry, htpasswd and skopeo; without them they
//! print why and pass, except under CI, where they fail.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use k8s_cri::v1::AuthConfig;
use tonic::Code;

use common::image::{foreign_arch, host_arch};
use common::registry::free_port;
use common::*;

/// A small layer whose only job is to be recognisable on disk.
fn marker_layer(marker: &str) -> Layer {
    Layer::new().file(&format!("{marker}.marker"), marker)
}

fn single_layer_image(marker: &str) -> Image {
    Image::oci().layer(marker_layer(marker).gzip()).build()
}

/// The content of `<marker>.marker` in the snapshot that has it.
fn marker_content(env: &TestEnv, marker: &str) -> String {
    let fs = env.snapshot_with(&format!("{marker}.marker"));
    std::fs::read_to_string(fs.join(format!("{marker}.marker"))).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

// ---------------------------------------------------------------------------
// Pulling and describing images
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_tag_shows_in_list_and_status() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let image = Image::oci()
        .layer(marker_layer("base").file("etc/hostname", "berth\n").gzip())
        .layer(Layer::new().file("app/data", noise(32 * 1024, 1)).gzip())
        .user("1000")
        .build();
    let reference = bed.push(&image, "test/base", "v1").await;
    let repo_digest = bed.registry.digest_reference("test/base", image.digest());

    let image_ref = bed.cri.pull(&reference).await.expect("pull by tag");
    assert_eq!(image_ref, image.id(), "PullImage returns the image id");

    let listed = bed.cri.list_images().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let got = &listed[0];
    assert_eq!(got.id, image.id());
    assert_eq!(got.repo_tags, [reference.as_str()]);
    assert_eq!(got.repo_digests, [repo_digest.as_str()]);
    let layer_bytes: u64 = image.layers.iter().map(|l| l.size()).sum();
    assert!(
        got.size >= layer_bytes,
        "size {} < layer blobs {layer_bytes}",
        got.size
    );
    assert_eq!(got.uid.as_ref().map(|u| u.value), Some(1000));
    assert_eq!(got.username, "");

    // ImageStatus finds it by tag, by id and by repo digest.
    for name in [reference.as_str(), image.id(), repo_digest.as_str()] {
        let status = bed
            .cri
            .image(name)
            .await
            .unwrap_or_else(|| panic!("no status for {name}"));
        assert_eq!(status.id, image.id(), "ImageStatus({name})");
        assert_eq!(status.repo_tags, [reference.as_str()]);
        assert_eq!(status.size, got.size);
    }
    let verbose = bed.cri.image_status(&reference, true).await;
    assert!(verbose.image.is_some());
    assert!(!verbose.info.is_empty(), "verbose ImageStatus has no info");

    // Unknown images are not an error: OK with no image.
    assert!(
        bed.cri
            .image(&bed.registry.reference("test/base", "nope"))
            .await
            .is_none()
    );

    // A named user gives a username and no uid.
    let nobody = Image::oci()
        .layer(marker_layer("nobody").gzip())
        .user("nobody")
        .build();
    let nobody_ref = bed.push(&nobody, "test/nobody", "v1").await;
    bed.cri.pull(&nobody_ref).await.expect("pull nobody image");
    let status = bed
        .cri
        .image(&nobody_ref)
        .await
        .expect("status of nobody image");
    assert_eq!(status.username, "nobody");
    assert_eq!(status.uid, None);
    assert_eq!(bed.cri.list_images().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_digest_and_by_tag_plus_digest() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let image = single_layer_image("digest");
    bed.push(&image, "test/pinned", "v1").await;
    let by_digest = bed.registry.digest_reference("test/pinned", image.digest());

    assert_eq!(
        bed.cri.pull(&by_digest).await.expect("pull by digest"),
        image.id()
    );
    let status = bed.cri.image(&by_digest).await.expect("status by digest");
    assert_eq!(status.id, image.id());
    assert!(status.repo_digests.contains(&by_digest), "{status:?}");
    assert_eq!(marker_content(&bed.env, "digest"), "digest");

    let tag_and_digest = format!(
        "{}@{}",
        bed.registry.reference("test/pinned", "v1"),
        image.digest()
    );
    assert_eq!(
        bed.cri
            .pull(&tag_and_digest)
            .await
            .expect("pull name:tag@digest"),
        image.id()
    );
    let images = bed.cri.list_images().await;
    assert_eq!(images.len(), 1, "still one image: {images:?}");
    assert_eq!(images[0].id, image.id());

    let missing = bed
        .registry
        .digest_reference("test/pinned", &format!("sha256:{}", "0".repeat(64)));
    bed.cri
        .pull(&missing)
        .await
        .expect_err("pulling a digest the registry lacks");
}

#[tokio::test(flavor = "multi_thread")]
async fn layers_are_unpacked_with_whiteouts_links_modes_and_xattrs() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let lower = Layer::new()
        .file("l1.marker", "1")
        .dir("etc")
        .file("etc/removed.txt", "soon gone")
        .dir("opq")
        .file("opq/old.txt", "hidden by layer 2");
    let middle = Layer::new()
        .file("l2.marker", "2")
        .dir("etc")
        .whiteout("etc/removed.txt")
        .dir("opq")
        .opaque("opq")
        .file("opq/new.txt", "visible");
    let upper = Layer::new()
        .file("l3.marker", "3")
        .dir("bin")
        .file_with("bin/tool", "#!/bin/sh\n", 0o4755, 1000, 1000)
        .hardlink("bin/tool-link", "bin/tool")
        .dir("lib")
        .symlink("lib/current", "v1")
        .dir("data")
        .file_with_xattrs("data/attr.txt", "x", &[("user.k", b"v")]);
    let image = Image::oci()
        .layer(lower.gzip())
        .layer(middle.gzip())
        .layer(upper.gzip())
        .build();
    let reference = bed.push(&image, "test/layers", "v1").await;
    bed.cri.pull(&reference).await.expect("pull");

    let l1 = bed.env.snapshot_with("l1.marker");
    let l2 = bed.env.snapshot_with("l2.marker");
    let l3 = bed.env.snapshot_with("l3.marker");
    assert!(l1 != l2 && l2 != l3 && l1 != l3, "one snapshot per layer");

    // Layer 1 as it was.
    assert_eq!(
        std::fs::read_to_string(l1.join("etc/removed.txt")).unwrap(),
        "soon gone"
    );
    assert!(l1.join("opq/old.txt").is_file());

    // Layer 2: the whiteout became a 0:0 char device, the opaque marker an xattr.
    let whiteout = std::fs::symlink_metadata(l2.join("etc/removed.txt")).expect("whiteout device");
    assert!(
        whiteout.file_type().is_char_device(),
        "whiteout is not a char device"
    );
    assert_eq!(whiteout.rdev(), 0, "whiteout device is not 0:0");
    assert!(
        !l2.join("etc/.wh.removed.txt").exists(),
        ".wh. file left in the snapshot"
    );
    let opaque = xattr::get(l2.join("opq"), "trusted.overlay.opaque").unwrap();
    assert_eq!(
        opaque.as_deref(),
        Some(&b"y"[..]),
        "opq is not marked opaque"
    );
    assert!(
        !l2.join("opq/.wh..wh..opq").exists(),
        "opaque marker file left in the snapshot"
    );
    assert!(!l2.join("opq/old.txt").exists());
    assert_eq!(
        std::fs::read_to_string(l2.join("opq/new.txt")).unwrap(),
        "visible"
    );

    // Layer 3: setuid + owner, hard link, symlink, xattr.
    let tool = std::fs::metadata(l3.join("bin/tool")).unwrap();
    assert_eq!(mode(&l3.join("bin/tool")), 0o4755, "setuid mode lost");
    assert_eq!((tool.uid(), tool.gid()), (1000, 1000));
    let link = std::fs::metadata(l3.join("bin/tool-link")).unwrap();
    assert_eq!(link.ino(), tool.ino(), "hard link is not the same inode");
    assert_eq!(tool.nlink(), 2);
    assert_eq!(
        std::fs::read_link(l3.join("lib/current")).unwrap(),
        Path::new("v1")
    );
    let attr = xattr::get(l3.join("data/attr.txt"), "user.k").unwrap();
    assert_eq!(attr.as_deref(), Some(&b"v"[..]), "xattr user.k lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_zstd_and_plain_layers_in_oci_and_docker_images() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let oci = Image::oci()
        .layer(marker_layer("gzip").gzip())
        .layer(marker_layer("zstd").zstd())
        .layer(marker_layer("plain").uncompressed())
        .build();
    let oci_ref = bed.push(&oci, "test/oci", "v1").await;
    let docker = Image::docker()
        .layer(marker_layer("docker-gzip").gzip())
        .layer(marker_layer("docker-plain").uncompressed())
        .build();
    let docker_ref = bed.push(&docker, "test/docker", "v1").await;

    assert_eq!(
        bed.cri.pull(&oci_ref).await.expect("pull OCI image"),
        oci.id()
    );
    assert_eq!(
        bed.cri.pull(&docker_ref).await.expect("pull Docker image"),
        docker.id()
    );

    for marker in ["gzip", "zstd", "plain", "docker-gzip", "docker-plain"] {
        assert_eq!(marker_content(&bed.env, marker), marker);
    }
    let docker_status = bed
        .cri
        .image(&docker_ref)
        .await
        .expect("Docker image status");
    assert_eq!(
        docker_status.repo_digests,
        [bed.registry
            .digest_reference("test/docker", docker.digest())]
    );
}

fn platform_marker(repo: &str, arch: &str) -> String {
    format!("{}-{arch}", repo.replace('/', "-"))
}

#[tokio::test(flavor = "multi_thread")]
async fn index_pulls_only_the_host_platform() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    for (format, repo) in [
        (Format::Oci, "test/oci-index"),
        (Format::Docker, "test/docker-list"),
    ] {
        let platform_image = |arch: &str| {
            let builder = if format == Format::Oci {
                Image::oci()
            } else {
                Image::docker()
            };
            builder
                .arch(arch)
                .layer(marker_layer(&platform_marker(repo, arch)).gzip())
                .build()
        };
        let index = Index::new(
            format,
            vec![platform_image(foreign_arch()), platform_image(host_arch())],
        );
        index.push(&bed.registry, repo, "multi").await;
        let reference = bed.registry.reference(repo, "multi");
        let host = index.image(host_arch());
        let foreign = index.image(foreign_arch());

        assert_eq!(
            bed.cri.pull(&reference).await.expect("pull index"),
            host.id(),
            "{repo}"
        );
        let status = bed.cri.image(&reference).await.expect("status");
        assert_eq!(status.id, host.id());
        assert!(
            status
                .repo_digests
                .contains(&bed.registry.digest_reference(repo, index.digest())),
            "repo digest should be the index digest: {status:?}"
        );
        assert_eq!(
            marker_content(&bed.env, &platform_marker(repo, host_arch())),
            platform_marker(repo, host_arch())
        );
        let foreign_marker = format!("{}.marker", platform_marker(repo, foreign_arch()));
        assert!(
            bed.env.find_snapshot(&foreign_marker).is_none(),
            "{repo}: foreign platform unpacked"
        );
        for digest in [foreign.layer_digests()[0], foreign.id()] {
            assert_eq!(
                bed.registry.blob_gets(digest).await,
                0,
                "{repo}: fetched foreign blob {digest}"
            );
        }
        assert_eq!(bed.registry.blob_gets(host.layer_digests()[0]).await, 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrors_are_tried_and_fall_back_to_upstream() {
    let Some(bed) = TestBed::start().await else {
        return;
    };

    // Upstream is a name that never resolves; its mirror is the registry.
    let unreachable = "registry.invalid:5000";
    bed.env.write_hosts_toml(
        unreachable,
        &format!("http://{unreachable}"),
        &[&bed.registry.url()],
    );
    let mirrored = single_layer_image("mirrored");
    mirrored.push(&bed.registry, "test/mirrored", "v1").await;
    let reference = format!("{unreachable}/test/mirrored:v1");
    assert_eq!(
        bed.cri.pull(&reference).await.expect("pull via mirror"),
        mirrored.id()
    );
    let status = bed.cri.image(&reference).await.expect("status");
    assert_eq!(status.repo_tags, [reference.as_str()]);
    assert_eq!(bed.registry.blob_gets(mirrored.layer_digests()[0]).await, 1);

    // The mirror is down (nothing listens there); upstream answers.
    let dead_mirror = format!("http://127.0.0.1:{}", free_port());
    bed.env
        .write_hosts_toml(&bed.registry.host(), &bed.registry.url(), &[&dead_mirror]);
    let direct = single_layer_image("direct");
    let reference = bed.push(&direct, "test/direct", "v1").await;
    assert_eq!(
        bed.cri
            .pull(&reference)
            .await
            .expect("pull past a dead mirror"),
        direct.id()
    );
    assert_eq!(marker_content(&bed.env, "direct"), "direct");
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_with_username_password_or_auth_string() {
    let (user, password) = ("alice", "s3cret");
    let Some(bed) = TestBed::start_with(RegistryOpts {
        htpasswd: Some((user, password)),
    })
    .await
    else {
        return;
    };
    let first = single_layer_image("private-a");
    let first_ref = bed.push(&first, "test/private-a", "v1").await;
    let second = single_layer_image("private-b");
    let second_ref = bed.push(&second, "test/private-b", "v1").await;

    let error = bed
        .cri
        .pull(&first_ref)
        .await
        .expect_err("pull without credentials");
    assert_mentions_any(&error, &["unauthorized", "authentication"]);

    let wrong = AuthConfig {
        username: user.into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let error = bed
        .cri
        .pull_with_auth(&first_ref, Some(wrong))
        .await
        .expect_err("wrong password");
    assert!(
        matches!(
            error.code(),
            Code::Unknown | Code::Unauthenticated | Code::PermissionDenied
        ),
        "{error:?}"
    );
    assert_mentions_any(&error, &["unauthorized", "authentication"]);
    assert!(bed.cri.list_images().await.is_empty());

    let right = AuthConfig {
        username: user.into(),
        password: password.into(),
        ..Default::default()
    };
    assert_eq!(
        bed.cri
            .pull_with_auth(&first_ref, Some(right))
            .await
            .expect("right password"),
        first.id()
    );

    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let auth = AuthConfig {
        auth: encoded,
        ..Default::default()
    };
    assert_eq!(
        bed.cri
            .pull_with_auth(&second_ref, Some(auth))
            .await
            .expect("auth string"),
        second.id()
    );
    assert_eq!(bed.cri.list_images().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_references_are_invalid_arguments() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    // Not "UPPER/case": like distribution, berth reads an upper-case first
    // component as a host name, so that one is valid.
    for reference in [
        "UPPERCASE",
        "example.com/UPPER/case",
        "a:b:c",
        "",
        "test/x@sha256:123",
    ] {
        let error = bed.cri.pull(reference).await.expect_err(reference);
        let needles: &[&str] = if reference.is_empty() {
            &[]
        } else {
            &[reference]
        };
        assert_error(&error, Code::InvalidArgument, needles);
    }
    assert!(bed.cri.list_images().await.is_empty());
}

// ---------------------------------------------------------------------------
// Removing images and garbage collection
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn remove_image_untags_then_collects_unshared_content() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let base = marker_layer("shared-base").gzip();
    let first = Image::oci()
        .layer(base.clone())
        .layer(marker_layer("only-first").gzip())
        .build();
    let second = Image::oci()
        .layer(base.clone())
        .layer(marker_layer("only-second").gzip())
        .build();
    let tag_one = bed.push(&first, "test/first", "one").await;
    let tag_two = bed.push(&first, "test/first", "two").await;
    let second_ref = bed.push(&second, "test/second", "v1").await;
    for reference in [&tag_one, &tag_two, &second_ref] {
        bed.cri.pull(reference).await.expect("pull");
    }
    let status = bed.cri.image(&tag_one).await.expect("first image");
    assert_eq!(status.repo_tags, [tag_one.as_str(), tag_two.as_str()]);

    // Removing one of two tags only untags.
    bed.cri.remove(&tag_one).await.expect("remove first tag");
    assert!(
        bed.cri.image(&tag_one).await.is_none(),
        "tag one still resolves"
    );
    let status = bed
        .cri
        .image(&tag_two)
        .await
        .expect("image kept under tag two");
    assert_eq!(status.repo_tags, [tag_two.as_str()]);
    assert!(bed.env.blob_path(first.layer_digests()[1]).exists());

    // Removing the last tag removes the image and collects what only it used.
    bed.cri.remove(&tag_two).await.expect("remove last tag");
    assert!(bed.cri.image(&tag_two).await.is_none());
    assert!(bed.cri.image(first.id()).await.is_none());
    let env = &bed.env;
    common::wait_until(
        "first image's blobs and snapshot collected",
        Duration::from_secs(10),
        || {
            [first.layer_digests()[1], first.id(), first.digest()]
                .iter()
                .all(|d| !env.blob_path(d).exists())
                && env.find_snapshot("only-first.marker").is_none()
        },
    )
    .await;
    // What the second image shares is kept.
    assert!(
        env.blob_path(&base.digest).exists(),
        "shared base blob collected"
    );
    assert!(
        env.find_snapshot("shared-base.marker").is_some(),
        "shared base snapshot collected"
    );
    assert!(env.find_snapshot("only-second.marker").is_some());
    for digest in second.all_digests() {
        assert!(
            env.blob_path(digest).exists(),
            "second image lost blob {digest}"
        );
    }

    // Removing something unknown is fine.
    bed.cri
        .remove(&tag_one)
        .await
        .expect("remove unknown image");

    // By id.
    bed.cri.remove(second.id()).await.expect("remove by id");
    assert!(bed.cri.image(&second_ref).await.is_none());
    assert!(bed.cri.list_images().await.is_empty());

    // By repo digest.
    bed.cri.pull(&tag_one).await.expect("pull again");
    let by_digest = bed.registry.digest_reference("test/first", first.digest());
    bed.cri.remove(&by_digest).await.expect("remove by digest");
    assert!(
        bed.cri.image(first.id()).await.is_none(),
        "image still there after remove by digest"
    );
}

/// (used bytes, used inodes) of the first image filesystem.
fn usage(info: &k8s_cri::v1::ImageFsInfoResponse) -> (u64, u64) {
    let fs = info.image_filesystems.first().expect("an image filesystem");
    let value = |v: &Option<k8s_cri::v1::UInt64Value>| v.as_ref().map(|v| v.value).unwrap_or(0);
    (value(&fs.used_bytes), value(&fs.inodes_used))
}

#[tokio::test(flavor = "multi_thread")]
async fn image_fs_info_reports_usage_under_the_root() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let payload = 256 * 1024;
    let image = Image::oci()
        .layer(Layer::new().file("big", noise(payload, 5)).gzip())
        .build();
    let reference = bed.push(&image, "test/fs", "v1").await;
    let (used_before, inodes_before) = usage(&bed.cri.image_fs_info().await);
    bed.cri.pull(&reference).await.expect("pull");

    let info = bed.cri.image_fs_info().await;
    let (used, inodes) = usage(&info);
    let fs = &info.image_filesystems[0];
    // The blob (incompressible, so ~payload) and the unpacked file both count.
    assert!(
        used >= used_before + 2 * payload as u64,
        "used_bytes went from {used_before} to {used} after pulling 2 x {payload} bytes"
    );
    assert!(
        inodes > inodes_before,
        "inodes_used did not grow: {inodes_before} -> {inodes}"
    );
    let mountpoint = fs
        .fs_id
        .as_ref()
        .map(|f| f.mountpoint.clone())
        .unwrap_or_default();
    assert!(
        Path::new(&mountpoint).starts_with(&bed.env.root),
        "mountpoint {mountpoint:?} is not under {}",
        bed.env.root.display()
    );
    assert!(fs.timestamp > 0);
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

/// What a malicious layer writes wherever it manages to write.
const PWNED: &[u8] = b"berth-test: written outside the snapshot";

struct MaliciousCase {
    name: &'static str,
    layer: Layer,
    /// Text the error must contain: the offending entry.
    entry: &'static str,
}

fn malicious_cases(outside: &Path) -> Vec<MaliciousCase> {
    let outside = outside.to_str().unwrap();
    // Enough `..` to climb from any snapshot dir to `/`, then into `outside`.
    let climb = "../".repeat(outside.matches('/').count() + 16);
    vec![
        MaliciousCase {
            name: "dotdot",
            layer: Layer::new().raw_file(&format!("{climb}{}/escaped", &outside[1..]), PWNED),
            entry: "escaped",
        },
        MaliciousCase {
            name: "symlink-out",
            layer: Layer::new()
                .raw_symlink("out", outside)
                .raw_file("out/through-symlink", PWNED),
            entry: "through-symlink",
        },
        MaliciousCase {
            name: "hardlink-out",
            layer: Layer::new().raw_hardlink("passwd-link", "../../etc/passwd"),
            entry: "passwd-link",
        },
        MaliciousCase {
            name: "symlink-parent",
            layer: Layer::new()
                .raw_symlink("evil", "..")
                .raw_file("evil/x", PWNED),
            entry: "evil/x",
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn malicious_layers_are_refused_without_writing_outside() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let passwd = Path::new("/etc/passwd");
    let passwd_before = (
        std::fs::read(passwd).unwrap(),
        std::fs::metadata(passwd).unwrap().nlink(),
    );

    for case in malicious_cases(&bed.env.outside) {
        let image = Image::oci().layer(case.layer.gzip()).build();
        let reference = bed.push(&image, &format!("test/{}", case.name), "v1").await;
        let error = bed.cri.pull(&reference).await.expect_err(case.name);
        assert_mentions(&error, &[case.entry]);

        let written = files_with_content(bed.env.path(), PWNED);
        assert!(written.is_empty(), "{}: layer wrote {written:?}", case.name);
        assert!(
            common::dir_entries(&bed.env.outside).is_empty(),
            "{}: wrote into outside/",
            case.name
        );
        assert!(
            bed.cri.list_images().await.is_empty(),
            "{}: image recorded",
            case.name
        );
        assert!(bed.cri.image(&reference).await.is_none());
        let snapshots = common::dir_entries(&bed.env.snapshots_dir());
        assert!(
            snapshots.is_empty(),
            "{}: snapshots left: {snapshots:?}",
            case.name
        );
    }
    let links = hard_links_to(bed.env.path(), Path::new("/etc/passwd"));
    assert!(links.is_empty(), "hard links to /etc/passwd: {links:?}");
    let passwd_after = (
        std::fs::read(passwd).unwrap(),
        std::fs::metadata(passwd).unwrap().nlink(),
    );
    assert!(passwd_after == passwd_before, "/etc/passwd changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_blob_is_rejected_by_digest() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let image = Image::oci()
        .layer(Layer::new().file("payload", noise(64 * 1024, 9)).gzip())
        .build();
    let reference = bed.push(&image, "test/tampered", "v1").await;
    let digest = image.layer_digests()[0];
    let data = bed.registry.blob_data_path(digest);
    let length = std::fs::metadata(&data).unwrap().len() as usize;
    std::fs::write(&data, noise(length, 10)).unwrap();

    let error = bed
        .cri
        .pull(&reference)
        .await
        .expect_err("pull of a tampered blob");
    assert_mentions(&error, &[hex_of(digest)]);
    assert!(
        !bed.env.blob_path(digest).exists(),
        "tampered blob committed"
    );
    assert!(bed.cri.list_images().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_manifest_is_refused() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    // docker-registry will not serve a manifest over 4 MiB, so a static server does.
    let image = Image::oci()
        .layer(marker_layer("never").gzip())
        .annotation("padding", "x".repeat(4 * 1024 * 1024 + 64 * 1024))
        .build();
    assert!(image.manifest.size() > 4 * 1024 * 1024);
    let server = StaticRegistry::start(&[("test/huge", "v1", &image.manifest)]).await;

    let error = bed
        .cri
        .pull(&server.reference("test/huge", "v1"))
        .await
        .expect_err("huge manifest");
    assert_mentions_any(
        &error,
        &["too large", "exceeds", "limit", "4194304", "4 mib"],
    );
    assert!(bed.cri.list_images().await.is_empty());
    assert!(!bed.env.blob_path(image.digest()).exists());
}

// ---------------------------------------------------------------------------
// Concurrency and crashes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_one_image_fetch_each_blob_once() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let image = Image::oci()
        .layer(Layer::new().file("one", noise(512 * 1024, 21)).gzip())
        .layer(Layer::new().file("two", noise(512 * 1024, 22)).gzip())
        .layer(marker_layer("three").gzip())
        .build();
    bed.push(&image, "test/concurrent", "v1").await;
    // Through a slow mirror, so that the two pulls really overlap.
    let proxy = ThrottleProxy::start(bed.registry.addr(), 4 << 20).await;
    bed.env
        .write_hosts_toml(&bed.registry.host(), &bed.registry.url(), &[&proxy.url()]);
    let reference = bed.registry.reference("test/concurrent", "v1");

    let (a, b) = tokio::join!(bed.cri.pull(&reference), bed.cri.pull(&reference));
    assert_eq!(a.expect("first pull"), image.id());
    assert_eq!(b.expect("second pull"), image.id());
    for digest in image.layer_digests() {
        assert_eq!(
            bed.registry.blob_gets(digest).await,
            1,
            "layer {digest} fetched more than once"
        );
    }
    assert_eq!(bed.cri.list_images().await.len(), 1);
}

/// Every GET of blob `digest` in the registry log, complete or not, any status.
async fn big_blob_gets(registry: &Registry, digest: &str) -> Vec<common::registry::AccessLogEntry> {
    registry
        .blob_requests(digest)
        .await
        .into_iter()
        .filter(|e| e.method == "GET")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_resumes_after_kill_9() {
    let Some(mut bed) = TestBed::start().await else {
        return;
    };
    let big_size = 8 << 20;
    let image = Image::oci()
        .layer(marker_layer("before-big").gzip())
        .layer(Layer::new().file("big", noise(big_size, 31)).uncompressed())
        .layer(marker_layer("after-big").gzip())
        .build();
    let big = image.layer_digests()[1].to_string();
    bed.push(&image, "test/crash", "v1").await;
    let reference = bed.registry.reference("test/crash", "v1");

    // First pull through a 2 MiB/s mirror; kill -9 once part of the big blob is in.
    let proxy = ThrottleProxy::start(bed.registry.addr(), 2 << 20).await;
    bed.env
        .write_hosts_toml(&bed.registry.host(), &bed.registry.url(), &[&proxy.url()]);
    let cri = bed.cri.clone();
    let slow_pull = {
        let reference = reference.clone();
        tokio::spawn(async move { cri.pull(&reference).await })
    };
    let ingest = bed.env.ingest_dir();
    let partial_in_ingest = || {
        common::walk(&ingest).iter().any(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.len() >= 512 * 1024)
                .unwrap_or(false)
        })
    };
    common::wait_until(
        "a partial download in content/ingest",
        Duration::from_secs(20),
        || partial_in_ingest() || slow_pull.is_finished(),
    )
    .await;
    if slow_pull.is_finished() {
        panic!(
            "the throttled pull ended before it could be killed: {:?}",
            slow_pull.await.unwrap()
        );
    }
    bed.berthd.kill9();
    assert!(slow_pull.await.unwrap().is_err(), "pull survived kill -9");
    drop(proxy);
    assert!(
        !bed.env.blob_path(&big).exists(),
        "big blob complete before the kill"
    );
    // The blobs complete at the kill, with how often each had been fetched.
    let mut committed = Vec::new();
    for (what, digest) in image.named_blobs() {
        if bed.env.blob_path(digest).exists() {
            committed.push((what, digest, bed.registry.blob_gets(digest).await));
        }
    }
    // The interrupted GET is logged once the registry notices the client is gone.
    let big_gets_before = common::wait_for(
        "the interrupted GET of the big blob in the log",
        Duration::from_secs(10),
        || async {
            let gets = big_blob_gets(&bed.registry, &big).await;
            (!gets.is_empty()).then_some(gets.len())
        },
    )
    .await;

    // Restart on the same root (the stale socket must be replaced) and pull directly.
    bed.env.remove_hosts_toml(&bed.registry.host());
    bed.restart_berthd().await;
    assert_eq!(
        bed.cri.pull(&reference).await.expect("pull after restart"),
        image.id()
    );

    assert!(
        common::walk(&bed.env.ingest_dir())
            .iter()
            .all(|p| p.is_dir()),
        "content/ingest not empty"
    );
    for (what, digest, gets_before) in committed {
        assert_eq!(
            bed.registry.blob_gets(digest).await,
            gets_before,
            "{what} ({digest}) was complete before the kill but was fetched again \
             after the restart (collected at start-up?)"
        );
    }
    let big_gets = big_blob_gets(&bed.registry, &big).await;
    let resumed = &big_gets[big_gets_before..];
    assert_eq!(resumed.len(), 1, "big blob GETs after restart: {resumed:?}");
    assert_eq!(
        resumed[0].status, 206,
        "big blob was downloaded again from the start, not resumed"
    );
    assert!(resumed[0].bytes < image.layers[1].size(), "{resumed:?}");
    assert_eq!(marker_content(&bed.env, "after-big"), "after-big");
    let unpacked = bed.env.snapshot_with("big").join("big");
    assert_eq!(std::fs::metadata(unpacked).unwrap().len(), big_size as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn images_survive_restart_and_kill_9() {
    let Some(mut bed) = TestBed::start().await else {
        return;
    };
    for name in ["keep-a", "keep-b"] {
        let reference = bed
            .push(&single_layer_image(name), &format!("test/{name}"), "v1")
            .await;
        bed.cri.pull(&reference).await.expect("pull");
    }
    let before = bed.cri.list_images().await;
    assert_eq!(before.len(), 2);

    let status = bed.berthd.stop().await;
    assert!(status.success(), "berthd exited with {status} on SIGTERM");
    bed.restart_berthd().await;
    assert_eq!(
        bed.cri.list_images().await,
        before,
        "images changed across SIGTERM + start"
    );

    bed.berthd.kill9();
    assert!(
        bed.env.socket.exists(),
        "kill -9 should leave the socket file behind"
    );
    bed.restart_berthd().await;
    assert_eq!(
        bed.cri.list_images().await,
        before,
        "images changed across kill -9 + start"
    );
    assert_eq!(marker_content(&bed.env, "keep-a"), "keep-a");
}

#[tokio::test(flavor = "multi_thread")]
async fn second_berthd_on_a_live_socket_is_refused() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let other = TestEnv::new();
    let mut second = other
        .berthd_command_on(&bed.env.socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(other.path().join("second.log")).unwrap())
        .spawn()
        .unwrap();
    let mut exit = None;
    common::wait_until("the second berthd to exit", Duration::from_secs(10), || {
        exit = second.try_wait().unwrap();
        exit.is_some()
    })
    .await;
    let stderr = std::fs::read_to_string(other.path().join("second.log")).unwrap();
    assert!(!exit.unwrap().success(), "second berthd exited 0: {stderr}");
    assert!(
        stderr.contains(&bed.env.socket.display().to_string()),
        "error should name the socket: {stderr}"
    );
    bed.cri.version().await;
}

// ---------------------------------------------------------------------------
// Admin CLI
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn cli_imports_lists_removes_and_reports_usage() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let from_oci = single_layer_image("oci-archive");
    let from_docker = single_layer_image("docker-archive");
    let pulled = single_layer_image("cli-pulled");
    let oci_src = bed.push(&from_oci, "test/for-oci-archive", "v1").await;
    let docker_src = bed
        .push(&from_docker, "test/for-docker-archive", "v1")
        .await;
    let pulled_ref = bed.push(&pulled, "test/cli-pulled", "v1").await;

    let dir = bed.env.path();
    let oci_tar = dir.join("oci.tar");
    let docker_tar = dir.join("docker.tar");
    let (oci_name, docker_name) = ("import.local/test/oci:v1", "import.local/test/docker:v1");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{oci_src}"),
        &format!("oci-archive:{}:{oci_name}", oci_tar.display()),
    ]);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{docker_src}"),
        &format!("docker-archive:{}:{docker_name}", docker_tar.display()),
    ]);

    bed.berthd
        .cli(&["image", "import", oci_tar.to_str().unwrap()])
        .await
        .success();
    bed.berthd
        .cli(&["image", "import", docker_tar.to_str().unwrap()])
        .await
        .success();
    bed.berthd
        .cli(&["image", "pull", &pulled_ref])
        .await
        .success();
    for (name, image) in [
        (oci_name, &from_oci),
        (docker_name, &from_docker),
        (pulled_ref.as_str(), &pulled),
    ] {
        let status = bed
            .cri
            .image(name)
            .await
            .unwrap_or_else(|| panic!("{name} not imported"));
        assert_eq!(status.id, image.id(), "{name}");
        assert!(status.repo_tags.contains(&name.to_string()), "{status:?}");
    }
    assert_eq!(marker_content(&bed.env, "docker-archive"), "docker-archive");

    let listing = bed.berthd.cli(&["image", "ls"]).await;
    for (repo, image) in [
        ("import.local/test/oci", &from_oci),
        ("import.local/test/docker", &from_docker),
        ("test/cli-pulled", &pulled),
    ] {
        let short_id = &hex_of(image.id())[..12];
        assert!(
            listing
                .success()
                .lines()
                .any(|l| l.contains(repo) && l.contains(short_id)),
            "`image ls` has no line with {repo} and {short_id}:\n{}",
            listing.stdout
        );
    }
    let du = bed.berthd.cli(&["du"]).await;
    assert!(
        du.success().contains("test/cli-pulled"),
        "`du` does not mention the image:\n{}",
        du.stdout
    );

    bed.berthd.cli(&["image", "rm", oci_name]).await.success();
    assert!(
        bed.cri.image(oci_name).await.is_none(),
        "`image rm` left the image"
    );
    let listing = bed.berthd.cli(&["image", "ls"]).await;
    assert!(
        !listing.success().contains("import.local/test/oci"),
        "removed image still listed"
    );
}

// ---------------------------------------------------------------------------
// Hostile layers that aim at berthd's memory, threads and overlay metadata
// ---------------------------------------------------------------------------

/// A kilobyte-number of a zstd frame expanding to a tar whose first entry is a GNU long
/// name declaring (and really holding) 4 GiB: 32768 run-length blocks of 128 KiB each.
fn long_name_bomb() -> common::image::LayerBlob {
    const DECLARED: u64 = 4 << 30;
    const RLE_BLOCK: u64 = 128 << 10;
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(DECLARED);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();

    // Frame header: no content size, no checksum, a 128 KiB window (exponent 7).
    let mut zstd = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];
    let block = |zstd: &mut Vec<u8>, size: u64, kind: u64, last: bool| {
        let word = (size << 3) | (kind << 1) | u64::from(last);
        zstd.extend_from_slice(&word.to_le_bytes()[..3]);
    };
    block(&mut zstd, 512, 0, false); // raw: the tar header
    zstd.extend_from_slice(header.as_bytes());
    for _ in 0..DECLARED / RLE_BLOCK {
        block(&mut zstd, RLE_BLOCK, 1, false); // RLE: 128 KiB of 'a'
        zstd.push(b'a');
    }
    block(&mut zstd, 1024, 0, true); // raw: the end-of-archive blocks
    zstd.extend_from_slice(&[0; 1024]);
    common::image::LayerBlob {
        compression: common::image::Compression::Zstd,
        digest: sha256_digest(&zstd),
        data: zstd,
        // Never reached: the layer is refused before its diff ID is known.
        diff_id: format!("sha256:{}", "0".repeat(64)),
    }
}

/// A field of /proc/<pid>/status, in its unit (kB for memory, a count for threads).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[tokio::test(flavor = "multi_thread")]
async fn long_name_bomb_is_refused_without_growing_berthd() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let bomb = long_name_bomb();
    assert!(bomb.size() < 256 << 10, "the bomb is {} bytes", bomb.size());
    let image = Image::oci().layer(bomb).build();
    let reference = bed.push(&image, "test/long-name-bomb", "v1").await;
    let pid = bed.berthd.pid();
    let peak_before = proc_status(pid, "VmHWM");

    let error = bed.cri.pull(&reference).await.expect_err("the bomb");
    // Before the fix: refused too, after reading the 4 GiB name into memory.
    let grown_kib = proc_status(pid, "VmHWM").saturating_sub(peak_before);
    assert!(
        grown_kib < 64 << 10,
        "berthd's peak RSS grew by {grown_kib} KiB"
    );
    assert_error(
        &error,
        Code::InvalidArgument,
        &[
            hex_of(&image.layers[0].digest),
            "gnu long name",
            "4294967296",
            "over the limit of 1048576",
        ],
    );
    assert!(bed.cri.list_images().await.is_empty());
    assert!(common::dir_entries(&bed.env.snapshots_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn xattrs_an_image_may_not_set_are_not_written() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let layer = Layer::new()
        .file("xattrs.marker", "x")
        .dir("d")
        .file_with_xattrs(
            "d/f",
            "f",
            &[
                ("trusted.overlay.opaque", b"y"),
                ("trusted.overlay.redirect", b"/etc"),
                ("security.selinux", b"system_u:object_r:shadow_t:s0"),
                ("user.kept", b"1"),
            ],
        );
    let image = Image::oci().layer(layer.zstd()).build();
    let reference = bed.push(&image, "test/xattrs", "v1").await;
    bed.cri.pull(&reference).await.expect("pull");

    let f = bed.env.snapshot_with("xattrs.marker").join("d/f");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "f");
    assert_eq!(
        xattr::get(&f, "user.kept").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    let names: Vec<String> = xattr::list(&f)
        .unwrap()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("trusted.") && n != "security.selinux"),
        "the layer set {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_blob_listed_many_times_unpacks_one_at_a_time() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let blob = Layer::new()
        .file("repeated.marker", "r")
        .file("payload", noise(512 << 10, 41))
        .gzip();

    // Past what overlayfs can stack: refused before anything is fetched.
    let too_deep = repeated_layer_image(&blob, 501);
    let reference = push_once_each(&bed, &too_deep, "test/too-deep").await;
    let error = bed.cri.pull(&reference).await.expect_err("501 layers");
    assert_error(
        &error,
        Code::InvalidArgument,
        &["501 layers", "limit of 500"],
    );
    assert!(!bed.env.blob_path(&blob.digest).exists());

    let image = repeated_layer_image(&blob, 50);
    let reference = push_once_each(&bed, &image, "test/repeated").await;
    let pid = bed.berthd.pid();
    let threads_before = proc_status(pid, "Threads");
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::task::spawn_blocking(move || {
            let mut most = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(proc_status(pid, "Threads"));
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };
    let pulled = bed.cri.pull(&reference).await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    // Idle blocking threads linger for seconds, so the count after the pull is a peak too.
    let most_threads = sampler.await.unwrap().max(proc_status(pid, "Threads"));
    assert_eq!(pulled.expect("pull"), image.id());

    assert_eq!(
        bed.env.snapshot_fs_dirs().len(),
        50,
        "one snapshot per listed layer"
    );
    let added = most_threads.saturating_sub(threads_before);
    assert!(
        added < 16,
        "berthd went from {threads_before} to {most_threads} threads unpacking one blob 50 times"
    );
}

fn repeated_layer_image(blob: &common::image::LayerBlob, times: usize) -> Image {
    let mut image = Image::oci();
    for _ in 0..times {
        image = image.layer(blob.clone());
    }
    image.build()
}

/// Pushes an image whose layers are all one blob: that blob once, not once per layer.
async fn push_once_each(bed: &TestBed, image: &Image, repo: &str) -> String {
    use common::image::{push_blob, push_manifest};
    let layer = &image.layers[0];
    push_blob(&bed.registry, repo, &layer.digest, &layer.data).await;
    push_blob(&bed.registry, repo, image.id(), &image.config.data).await;
    push_manifest(&bed.registry, repo, "v1", &image.manifest).await;
    bed.registry.reference(repo, "v1")
}
