//! Full disks, against a real berthd, shim and runc: a container whose log
//! directory sits on a small tmpfs that its output fills keeps running and printing,
//! ReopenContainerLog still works while the disk is full, and the log takes new
//! entries again once space frees; a pull that fills berth's root (a small
//! loop-mounted ext4) fails with a clear error, leaves a store that reloads and
//! holds no half image, and the next pull after space frees succeeds; a log disk
//! that fails while berthd is down does not stop the container once it is back.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::TestBed;
use common::daemon::{Berthd, TestEnv};
use common::image::{Image, Layer};
use common::pod;
use common::world::{RUNNING, World};
use k8s_cri::v1 as cri;

/// Lines of the container's first burst: at ~110 bytes each, several times the
/// room the log disk has plus the 64 KiB a fifo holds, so a copier that stopped
/// at the first failed write would leave the container blocked in `write`.
const FILL_LINES: usize = 4000;
/// Pads each burst line so the burst is a few hundred KiB.
const PAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
/// berthd's one warning per episode of failed log writes, and its note when
/// writes resume (src/logs).
const DROPPING: &str = "container log unwritable";
const RESUMED: &str = "container log writable again";

/// A tmpfs mounted for the test, detached on drop (berthd may still hold a log
/// open in it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    fn available(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.0).unwrap();
        st.blocks_available() as u64 * st.fragment_size() as u64
    }
}

/// A small ext4 on a loop device, mounted for the test and detached on drop.
struct LoopFs(PathBuf);

impl LoopFs {
    fn mount(image: &Path, dir: &Path, size: u64) -> LoopFs {
        std::fs::File::create(image).unwrap().set_len(size).unwrap();
        // No blocks reserved for root: berthd runs as root and would get them.
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(image)
            .status()
            .expect("run mkfs.ext4");
        assert!(mkfs.success(), "mkfs.ext4 {}", image.display());
        std::fs::create_dir_all(dir).unwrap();
        let mount = Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(mount.success(), "mount -o loop on {}", dir.display());
        LoopFs(dir.to_path_buf())
    }

    fn available(&self) -> u64 {
        available(&self.0)
    }

    /// Writes a filler file that leaves about `free` bytes on the filesystem
    /// (ext4 reserves delayed-allocation blocks at write time, so no sync).
    fn leave_free(&self, filler: &Path, free: u64) {
        let _ = std::fs::remove_file(filler);
        let size = self.available().saturating_sub(free);
        std::fs::write(filler, vec![0u8; size as usize]).unwrap();
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // A loop mount frees its device once the last user has gone.
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// berthd's root on a 32 MiB filesystem of its own.
fn small_root(env: &TestEnv) -> LoopFs {
    LoopFs::mount(&env.path().join("root.img"), &env.root, 32 * MIB)
}

fn available(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    st.blocks_available() as u64 * st.fragment_size() as u64
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// berthd's warnings of dropped log output and its notes that writes resumed,
/// so far. An episode is one warning, ended by one note: a few bytes free in the
/// file's last page may end one early, so a test counts episodes, not warnings.
fn episodes(berthd: &Berthd) -> (usize, usize) {
    let log = berthd.log();
    (log.matches(DROPPING).count(), log.matches(RESUMED).count())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_log_disk_never_stops_a_container() {
    let Some(w) = World::start().await else {
        return;
    };
    let disk = Tmpfs::mount(&w.logs.join("full"), "256k");
    // The filler leaves the log 64 KiB; deleting it is what frees space later.
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 192 * 1024]).unwrap();
    let pod = w.run_pod("full").await;

    // A burst on both streams, a mark in the container's own rootfs once all of
    // it is written, then a tick every 50 ms.
    let script = format!(
        "i=0; while [ $i -lt {FILL_LINES} ]; do echo \"fill $i {PAD}\"; echo \"err $i\" >&2; \
         i=$((i+1)); done; echo $i > /tmp/filled; \
         while :; do echo \"tick $i\"; i=$((i+1)); sleep 0.05; done"
    );
    let id = w.run(&pod, "chatty", &script).await;
    common::wait_for(
        "the container to get its whole burst out onto a full log disk",
        Duration::from_secs(30),
        || async {
            let out = w.exec(&id, &["cat", "/tmp/filled"], 5).await.ok()?;
            (out.stdout == format!("{FILL_LINES}\n").as_bytes()).then_some(())
        },
    )
    .await;
    assert!(disk.available() < 8 * 1024, "the log disk is full");
    assert_eq!(w.status(&id).await.state, RUNNING);

    // What did reach the log is whole entries: a write the disk cut short is
    // taken back, never left as a torn line.
    let log = disk.0.join("chatty.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.ends_with('\n'),
        "torn last entry: {:?}",
        &text[text.len().saturating_sub(200)..]
    );
    let entries = w.log_entries("full", "chatty");
    assert!(!entries.is_empty(), "the log took entries before it filled");
    for (stream, tag, content) in &entries {
        assert_eq!(tag, "F", "{content:?}");
        let n: usize = match (stream.as_str(), content.split_once(' ')) {
            ("stdout", Some(("fill", rest))) => {
                let (n, pad) = rest.split_once(' ').expect("fill <n> <pad>");
                assert_eq!(pad, PAD, "a cut stdout entry: {content:?}");
                n.parse().unwrap()
            }
            ("stderr", Some(("err", n))) => n.parse().unwrap(),
            // A tick that fitted the slack of the file's last page.
            ("stdout", Some(("tick", _))) => continue,
            _ => panic!("unexpected entry {stream} {content:?}"),
        };
        assert!(n < FILL_LINES, "{content:?}");
    }
    // Thousands of dropped lines, one warning for each episode, and one episode
    // under way.
    common::wait_until(
        "berthd's warning of dropped output",
        Duration::from_secs(5),
        || {
            let (warnings, resumes) = episodes(&w.berthd);
            warnings == resumes + 1
        },
    )
    .await;
    let (warnings, _) = episodes(&w.berthd);
    assert!(warnings <= 5, "{warnings} warnings: one per line?");

    // The kubelet's rotation while the disk is full: rename, then reopen.
    std::fs::rename(&log, disk.0.join("chatty.log.1")).unwrap();
    w.cri
        .runtime_client()
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .expect("ReopenContainerLog on a full log disk");
    assert!(log.exists(), "the reopened log is there");

    // Space frees: the ticks reach the new log again, and berthd says how much
    // was dropped.
    std::fs::remove_file(&filler).unwrap();
    let tick = common::wait_for(
        "a tick in the log after space freed",
        Duration::from_secs(10),
        || async {
            w.log_entries("full", "chatty")
                .into_iter()
                .find(|(stream, _, content)| stream == "stdout" && content.starts_with("tick "))
        },
    )
    .await;
    let first: usize = tick.2["tick ".len()..].parse().unwrap();
    assert!(first > FILL_LINES, "{tick:?}");
    common::wait_until(
        "the episode to end with a note",
        Duration::from_secs(5),
        || {
            let (warnings, resumes) = episodes(&w.berthd);
            warnings == resumes
        },
    )
    .await;

    // A new episode gets its own warning.
    let (warnings, _) = episodes(&w.berthd);
    let _ = std::fs::write(&filler, vec![0u8; 256 * 1024]);
    common::wait_until("a new warning", Duration::from_secs(10), || {
        episodes(&w.berthd).0 > warnings
    })
    .await;
    let (warnings, resumes) = episodes(&w.berthd);
    assert!(
        warnings - resumes <= 1 && warnings <= 10,
        "{warnings} warnings, {resumes} notes"
    );
    assert_eq!(w.status(&id).await.state, RUNNING);

    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}

/// Lines the container writes after berthd restarted onto a read-only log
/// disk: at ~1 KiB each, several times what a fifo holds, so they only get out
/// if berthd drains the fifo without a log to write.
const AFTER_RESTART_LINES: u64 = 300;

#[tokio::test(flavor = "multi_thread")]
async fn a_log_disk_gone_read_only_across_a_restart_never_stops_a_container() {
    let Some(mut w) = World::start().await else {
        return;
    };
    let disk = Tmpfs::mount(&w.logs.join("ro"), "1m");
    let pod = w.run_pod("ro").await;
    let line = "y".repeat(1000);
    let script = format!(
        "i=0; while :; do echo \"tick $i {line}\"; i=$((i+1)); echo $i > /tmp/count; \
         sleep 0.01; done"
    );
    let id = w.run(&pod, "steady", &script).await;
    // None while the shell rewrites the file.
    let count = async |w: &World| -> Option<u64> {
        let out = w.exec(&id, &["cat", "/tmp/count"], 5).await.ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    common::wait_for(
        "a first tick in the log",
        Duration::from_secs(10),
        || async { w.log_entries("ro", "steady").into_iter().next() },
    )
    .await;

    // berthd dies; the log disk fails (remounted read-only, as ext4 does on
    // errors) before it is back, so it cannot reopen the container's log.
    w.berthd.kill9();
    let status = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&disk.0)
        .status()
        .unwrap();
    assert!(status.success(), "remount the log disk read-only");
    w.berthd.restart().await;
    w.cri = w.berthd.cri().await;
    assert_eq!(w.status(&id).await.state, RUNNING);

    let start = common::wait_for("the count", Duration::from_secs(10), || count(&w)).await;
    common::wait_for(
        "the container to keep printing with no log to write",
        Duration::from_secs(30),
        || async {
            count(&w)
                .await
                .filter(|&n| n >= start + AFTER_RESTART_LINES)
        },
    )
    .await;
    assert!(
        w.berthd.log().contains(DROPPING),
        "berthd warns of the lost log"
    );

    // The disk comes back: the log is opened again and takes new ticks.
    let status = Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(&disk.0)
        .status()
        .unwrap();
    assert!(status.success(), "remount the log disk read-write");
    let back = common::wait_for("the count", Duration::from_secs(10), || count(&w)).await;
    common::wait_for(
        "ticks in the log again",
        Duration::from_secs(10),
        || async {
            w.log_entries("ro", "steady")
                .into_iter()
                .filter_map(|(_, _, c)| c.split(' ').nth(1)?.parse::<u64>().ok())
                .find(|&n| n >= back)
        },
    )
    .await;

    // Its exit waiter is back too: a stop is recorded.
    w.stop(&id, 1).await;
    assert_ne!(w.status(&id).await.state, RUNNING);
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}

const MIB: u64 = 1024 * 1024;
/// The one layer of the image pulled onto a full root: incompressible, stored
/// uncompressed, so the blob and its unpacked file take this much each.
const LAYER: usize = 6 * MIB as usize;

/// Every committed blob still matches its digest: a failed pull never leaves a
/// partial or wrong blob where a verified one belongs.
fn assert_blobs_verified(env: &TestEnv) {
    let blobs = env.root.join("content/blobs/sha256");
    for name in common::dir_entries(&blobs) {
        let data = std::fs::read(blobs.join(&name)).unwrap();
        assert_eq!(common::sha256_digest(&data), format!("sha256:{name}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_that_fills_berths_disk_fails_clearly_and_the_next_succeeds() {
    let Some(mut bed) = TestBed::start_holding(small_root).await else {
        return;
    };
    let (disk, cri, env, registry) = (bed.held::<LoopFs>(), &bed.cri, &bed.env, &bed.registry);
    let content = common::noise(LAYER, 7);
    let image = Image::oci()
        .layer(Layer::new().file("big", &content).uncompressed())
        .build();
    image.push(registry, "test/big", "1").await;
    let reference = registry.reference("test/big", "1");
    let filler = env.root.join("filler");

    // Too little room for the blob, then room for the blob but not its unpacking.
    for free in [2 * MIB, LAYER as u64 + 2 * MIB] {
        disk.leave_free(&filler, free);
        let err = cri
            .pull(&reference)
            .await
            .expect_err("a pull onto a full disk fails");
        // The node's condition, not a bad image (InvalidArgument) nor a bug (Internal).
        common::assert_error(
            &err,
            tonic::Code::ResourceExhausted,
            &["No space left on device"],
        );
        assert!(
            cri.image(&reference).await.is_none(),
            "no half image recorded"
        );
        assert_eq!(
            env.snapshot_fs_dirs(),
            Vec::<PathBuf>::new(),
            "no half-unpacked snapshot left ({free} bytes free)"
        );
        assert_blobs_verified(env);
    }

    // The store reloads as it was left.
    bed.restart_berthd().await;
    let (cri, env) = (&bed.cri, &bed.env);
    assert!(cri.image(&reference).await.is_none());
    assert!(cri.list_images().await.is_empty());

    // Space frees: the same pull succeeds, and the layer is whole.
    std::fs::remove_file(&filler).unwrap();
    cri.pull(&reference)
        .await
        .expect("the pull after space freed");
    assert!(cri.image(&reference).await.is_some());
    let unpacked = std::fs::read(env.snapshot_with("big").join("big")).unwrap();
    assert!(unpacked == content, "the unpacked layer is the pushed one");
    assert_blobs_verified(env);
}

/// Directories the second image's layer makes implicitly (parents of its files,
/// one 4 KiB block each): far more than the room its first file leaves.
const IMPLICIT_DIRS: usize = 4000;

#[tokio::test(flavor = "multi_thread")]
async fn an_unpack_that_runs_out_of_room_making_directories_is_resource_exhausted() {
    let Some(bed) = TestBed::start_holding(small_root).await else {
        return;
    };
    let (disk, cri, env, registry) = (bed.held::<LoopFs>(), &bed.cri, &bed.env, &bed.registry);
    // A file that takes nearly all the room, then files whose parent directories
    // are not in the layer: the disk fills while the unpacker creates a parent, a
    // failure it reports with what it was doing around the kernel's ENOSPC.
    let first = LAYER / 2;
    let mut layer = Layer::new().file("a", common::noise(first, 11));
    for i in 0..IMPLICIT_DIRS {
        layer = layer.raw_file(&format!("p{i:04}/f"), b"");
    }
    let image = Image::oci().layer(layer.uncompressed()).build();
    image.push(registry, "test/dirs", "1").await;
    let reference = registry.reference("test/dirs", "1");
    let blob = first as u64 + (IMPLICIT_DIRS as u64 + 2) * 512;
    disk.leave_free(&env.root.join("filler"), blob + first as u64 + MIB);

    let err = cri
        .pull(&reference)
        .await
        .expect_err("an unpack onto a full disk fails");
    // The node's condition, not a bad image.
    common::assert_error(
        &err,
        tonic::Code::ResourceExhausted,
        &["No space left on device", "creating parent"],
    );
    assert!(cri.image(&reference).await.is_none(), "no half image");
    assert_eq!(env.snapshot_fs_dirs(), Vec::<PathBuf>::new());
}
