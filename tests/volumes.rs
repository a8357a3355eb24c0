//! Volumes berthd makes itself, against a real berthd, runc, CNI and registry: the
//! volumes an image declares (copy-up, read-write on a read-only rootfs, gone with
//! the container, off by config, odd paths normalised) and image volumes (CRI
//! `Mount.image`: the image's files, read-only, noexec, the image held against
//! RemoveImage until the container goes, a missing image named).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::image::{Image, Layer};
use common::world::{GROUP, PASSWD, World, busybox_layer};
use common::{assert_error, pod};
use k8s_cri::v1 as cri;

/// Applets the checks run, beyond the world's usual ones.
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "ls", "touch", "stat", "true", "mkdir",
];

/// busybox, plus content at /data, declaring volumes in the odd forms Docker
/// records: duplicates, a trailing slash, `//`, a relative path, `/`, a `..`, and
/// one a CRI mount covers; and one whose path is a link climbing out of the image.
fn image_declaring_volumes() -> Image {
    let content = Layer::new()
        .dir_with("data", 0o750, 1000, 1000)
        .file_with("data/seed.txt", "seeded\n", 0o640, 1000, 1000)
        .dir("data/sub")
        .file("data/sub/deep.txt", "deep\n")
        .symlink("data/link", "/etc/passwd")
        .file_with_xattrs("data/attr.txt", "x", &[("user.note", b"kept")])
        // A volume path that climbs out of the image: nothing of the host's is copied.
        .symlink("up", "../../../../../tmp")
        .dir("cache")
        .file("cache/from-image", "image\n");
    Image::oci()
        .layer(busybox_layer(APPLETS, PASSWD, GROUP).gzip())
        .layer(content.gzip())
        .env("PATH=/bin")
        .volume("/data/")
        .volume("//data")
        .volume("logs")
        .volume("/")
        .volume("/a/../etc")
        .volume("/cache")
        .volume("/up")
        .build()
}

fn sleeper(w: &World, name: &str, readonly_rootfs: bool) -> cri::ContainerConfig {
    let mut config = w.container_config(name, "exec sleep 3600");
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            readonly_rootfs,
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// Runs `script` in container `id`: (exit code, stdout + stderr).
async fn sh(w: &World, id: &str, script: &str) -> (i32, String) {
    let out = w
        .exec(id, &["sh", "-c", script], 20)
        .await
        .expect("ExecSync");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.exit_code, text)
}

fn bundle(w: &World, id: &str) -> PathBuf {
    w.env.state.join("containers").join(id)
}

/// The container's directory under the root, holding its image-declared volumes.
fn data_dir(w: &World, id: &str) -> PathBuf {
    w.env.root.join("containers").join(id)
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: NUL-terminated strings and a buffer of the given size.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn image_declared_volumes_are_the_containers_own_copies() {
    let Some(w) = World::start_with(&[], image_declaring_volumes()).await else {
        return;
    };
    let pod = w.run_pod("declared").await;
    let cache = w.env.outside.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("from-host"), "host\n").unwrap();
    let mut config = sleeper(&w, "app", true);
    config.mounts = vec![cri::Mount {
        container_path: "/cache".into(),
        host_path: cache.display().to_string(),
        ..Default::default()
    }];
    let id = w.create(&pod, config).await.expect("CreateContainer");
    w.start_container(&id).await;

    // The image's files, owners and modes, seen in the volume.
    assert_eq!(
        sh(&w, &id, "cat /data/seed.txt /data/sub/deep.txt").await,
        (0, "seeded\ndeep\n".into())
    );
    let (code, out) = sh(&w, &id, "stat -c '%u:%g %a' /data/seed.txt /data /logs").await;
    assert_eq!(
        (code, out.as_str()),
        (0, "1000:1000 640\n1000:1000 750\n0:0 755\n")
    );
    // Writable on a read-only rootfs; the rootfs itself is not.
    let (code, out) = sh(
        &w,
        &id,
        "echo new > /data/new && echo l > /logs/l && cat /data/new /logs/l",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "new\nl\n"));
    let (code, _) = sh(&w, &id, "touch /rootfile").await;
    assert_ne!(code, 0, "the rootfs stays read-only");
    // The CRI mount covers /cache: the host's directory, not a volume.
    assert_eq!(sh(&w, &id, "ls /cache").await, (0, "from-host\n".into()));

    // On the host: one directory per normalised path, private, under the root.
    let volumes = data_dir(&w, &id).join("volumes");
    for private in [&volumes, &data_dir(&w, &id)] {
        let mode = std::fs::metadata(private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", private.display());
    }
    let mut entries: Vec<String> = std::fs::read_dir(&volumes)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["0", "1", "2"],
        "/data once, /logs, /up; not /, .., or /cache"
    );
    let up: Vec<_> = std::fs::read_dir(volumes.join("2")).unwrap().collect();
    assert!(up.is_empty(), "the host's /tmp is not copied: {up:?}");
    let data = volumes.join("0");
    assert_eq!(std::fs::read_to_string(data.join("new")).unwrap(), "new\n");
    assert_eq!(
        std::fs::read_link(data.join("link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::metadata(data.join("seed.txt")).unwrap().uid(),
        1000
    );
    let layer_has_xattr = w
        .env
        .snapshot_fs_dirs()
        .iter()
        .any(|d| xattr(&d.join("data/attr.txt"), "user.note").is_some());
    if layer_has_xattr {
        assert_eq!(
            xattr(&data.join("attr.txt"), "user.note").as_deref(),
            Some(&b"kept"[..])
        );
    }
    let log = w.berthd.log();
    assert!(
        log.contains("ignoring an image volume"),
        "the refused paths are logged"
    );

    // Another container of the image starts from the image's content, not this one's.
    let other = w
        .create(&pod, sleeper(&w, "other", true))
        .await
        .expect("CreateContainer");
    w.start_container(&other).await;
    assert_eq!(
        sh(&w, &other, "ls /data").await,
        (0, "attr.txt\nlink\nseed.txt\nsub\n".into())
    );

    w.stop(&id, 0).await;
    w.remove(&id).await.expect("RemoveContainer");
    assert!(
        !data_dir(&w, &id).exists(),
        "the volumes go with the container"
    );
    assert!(!bundle(&w, &id).exists());
    w.stop(&other, 0).await;
    w.remove(&other).await.expect("RemoveContainer");
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ignore_image_defined_volumes_turns_them_off() {
    let Some(mut w) = World::start_with(&[], image_declaring_volumes()).await else {
        return;
    };
    let config = std::fs::read_to_string(&w.env.config).unwrap();
    std::fs::write(
        &w.env.config,
        format!("ignore_image_defined_volumes = true\n{config}"),
    )
    .unwrap();
    w.berthd.restart().await;
    w.cri = w.berthd.cri().await;
    let pod = w.run_pod("ignored").await;
    let id = w
        .create(&pod, sleeper(&w, "app", true))
        .await
        .expect("CreateContainer");
    w.start_container(&id).await;
    assert_eq!(
        sh(&w, &id, "cat /data/seed.txt").await,
        (0, "seeded\n".into())
    );
    let (code, _) = sh(&w, &id, "touch /data/new").await;
    assert_ne!(code, 0, "/data is the read-only rootfs's");
    assert!(!data_dir(&w, &id).join("volumes").exists());
    w.stop(&id, 0).await;
    w.remove(&id).await.expect("RemoveContainer");
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}

/// Two layers: a file and a script, then a second file.
fn artifact() -> Image {
    Image::oci()
        .layer(
            Layer::new()
                .dir("content")
                .file("content/hello.txt", "hello from the volume image\n")
                .file_with("content/run.sh", "#!/bin/sh\necho ran\n", 0o755, 0, 0)
                .gzip(),
        )
        .layer(Layer::new().file("second.txt", "second layer\n").gzip())
        .build()
}

fn image_mount(path: &str, image: &str) -> cri::Mount {
    cri::Mount {
        container_path: path.into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mountinfo_line(text: &str, mountpoint: &str) -> String {
    text.lines()
        .find(|l| l.split(' ').nth(4) == Some(mountpoint))
        .unwrap_or_else(|| panic!("no mount at {mountpoint} in\n{text}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volumes_are_read_only_noexec_and_hold_their_image() {
    let Some(mut w) = World::start().await else {
        return;
    };
    let artifact_ref = w.add_image(&artifact(), "artifact").await;
    let pod = w.run_pod("imagevol").await;
    let mut config = sleeper(&w, "app", false);
    // A two-layer image, and a one-layer one (busybox itself).
    config.mounts = vec![
        image_mount("/vol", &artifact_ref),
        image_mount("/bb", &w.image),
    ];
    let id = w.create(&pod, config).await.expect("CreateContainer");
    w.start_container(&id).await;

    assert_eq!(
        sh(&w, &id, "cat /vol/content/hello.txt /vol/second.txt").await,
        (0, "hello from the volume image\nsecond layer\n".into())
    );
    let (code, out) = sh(&w, &id, "echo x > /vol/x").await;
    assert!(code != 0 && out.contains("Read-only"), "{code} {out}");
    let (code, out) = sh(&w, &id, "/vol/content/run.sh").await;
    assert!(code != 0 && out.contains("denied"), "noexec: {code} {out}");
    let (code, _) = sh(&w, &id, "/bb/bin/busybox true").await;
    assert_ne!(code, 0, "noexec on a one-layer image too");
    let (_, mounts) = sh(&w, &id, "cat /proc/self/mountinfo").await;
    for point in ["/vol", "/bb"] {
        let line = mountinfo_line(&mounts, point);
        let options = line.split(' ').nth(5).unwrap();
        for want in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(options.split(',').any(|o| o == want), "{want} in {line}");
        }
    }
    let status = w.status(&id).await;
    assert_eq!(
        status.mounts[0].image.as_ref().map(|i| i.image.as_str()),
        Some(artifact_ref.as_str())
    );

    // Held: by tag and by id, and again after berthd crashes and restarts.
    let image_id = artifact().id().to_string();
    for name in [&artifact_ref, &image_id] {
        let err = w
            .cri
            .remove(name)
            .await
            .expect_err("RemoveImage of a mounted image");
        assert_error(&err, tonic::Code::FailedPrecondition, &[&id]);
    }
    w.berthd.kill9();
    w.berthd.restart().await;
    w.cri = w.berthd.cri().await;
    let err = w
        .cri
        .remove(&artifact_ref)
        .await
        .expect_err("held after a crash");
    assert_error(&err, tonic::Code::FailedPrecondition, &[&id]);
    assert!(w.cri.image(&artifact_ref).await.is_some(), "still listed");

    w.stop(&id, 0).await;
    w.remove(&id).await.expect("RemoveContainer");
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(&bundle(&w, &id).display().to_string()),
        "the image volumes are unmounted"
    );
    assert!(!bundle(&w, &id).exists());
    w.cri
        .remove(&artifact_ref)
        .await
        .expect("RemoveImage once the container is gone");
    assert!(w.cri.image(&artifact_ref).await.is_none());
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volume_errors_name_the_mount() {
    let Some(w) = World::start().await else {
        return;
    };
    let pod = w.run_pod("badvol").await;
    let missing = w.registry.reference("test/never-pulled", "1");
    let mut config = sleeper(&w, "app", false);
    config.mounts = vec![image_mount("/vol", &missing)];
    let err = w.create(&pod, config).await.expect_err("a missing image");
    assert_error(
        &err,
        tonic::Code::NotFound,
        &["mounts[0].image.image", "never-pulled"],
    );

    let mut config = sleeper(&w, "app", false);
    let mut both = image_mount("/vol", &w.image);
    both.host_path = "/srv".into();
    config.mounts = vec![both];
    let err = w
        .create(&pod, config)
        .await
        .expect_err("host path and image");
    assert_error(&err, tonic::Code::InvalidArgument, &["mounts[0].host_path"]);
    // Nothing is left behind: no container, no bundle.
    assert!(w.list(cri::ContainerFilter::default()).await.is_empty());
    let bundles = std::fs::read_dir(w.env.state.join("containers"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(bundles, 0);
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}
