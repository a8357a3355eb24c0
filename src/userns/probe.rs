//! Whether this host can run pods in user namespaces the way berthd makes them:
//! a user namespace pinned on a file, an id-mapped bind mount through it, and an
//! overlay whose lower layer is that view (Linux 5.19+). Probed once, for real,
//! and cached: Status advertises the feature only where this worked.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::mount::{MsFlags, mount};

use super::mapping::{IdMapping, UserNamespace};
use super::{idmap, ns};

/// A host id far from any the kubelet hands out (multiples of 65536 from 65536
/// up), so the probe's namespace shares no id with a pod's.
const PROBE_HOST_ID: u32 = 0x7fff_0000;

static SUPPORTED: OnceLock<bool> = OnceLock::new();

/// The cached answer; `probe` must have run (berthd runs it at start), else false.
pub fn supported() -> bool {
    SUPPORTED.get().copied().unwrap_or(false)
}

/// Runs the probe once and caches the answer: the layer in a scratch directory
/// under `root` (the snapshots' filesystem must allow id-mapping), the mounts
/// under `state`. Blocks: call it from `spawn_blocking`.
pub fn probe(root: &Path, state: &Path) -> bool {
    *SUPPORTED.get_or_init(|| {
        let scratch = Scratch {
            layers: root.join("u-probe"),
            mounts: state.join("u-probe"),
        };
        let result = traversable(state).and_then(|()| {
            let tried = try_idmapped_overlay(&scratch);
            scratch.cleanup();
            tried
        });
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(error = %e, "no user namespaces for pods: id-mapped overlay layers do not work here");
                false
            }
        }
    })
}

/// A pod's root reaches its rootfs and files under the state directory only if
/// every directory above it lets others through, as /run does.
fn traversable(state: &Path) -> io::Result<()> {
    for dir in state.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)?.mode();
        if mode & 0o001 == 0 {
            return Err(io::Error::other(format!(
                "{} (above the state directory) is mode {:o}: a pod's root could not reach its files",
                dir.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// Where the probe works: the layer dirs, and the namespace and mount points.
struct Scratch {
    layers: PathBuf,
    mounts: PathBuf,
}

fn try_idmapped_overlay(scratch: &Scratch) -> io::Result<()> {
    scratch.cleanup();
    let (layers, mounts) = (&scratch.layers, &scratch.mounts);
    for dir in [
        layers.join("lower"),
        layers.join("upper"),
        layers.join("work"),
    ] {
        std::fs::create_dir_all(dir)?;
    }
    for dir in [mounts.join("view"), mounts.join("merged")] {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(layers.join("lower/file"), b"")?;
    let range = vec![IdMapping {
        container_id: 0,
        host_id: PROBE_HOST_ID,
        length: 1,
    }];
    let userns = UserNamespace {
        uids: range.clone(),
        gids: range,
    };
    let ns_path = mounts.join("ns");
    ns::create(&userns, &ns_path, None)?;
    idmap::bind(
        &layers.join("lower"),
        &mounts.join("view"),
        &ns::open(&ns_path)?,
    )?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        mounts.join("view").display(),
        layers.join("upper").display(),
        layers.join("work").display()
    );
    mount(
        Some("overlay"),
        &mounts.join("merged"),
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("overlay on an id-mapped layer: {e}"),
        )
    })?;
    let uid = std::fs::metadata(mounts.join("merged/file"))?.uid();
    if uid != PROBE_HOST_ID {
        return Err(io::Error::other(format!(
            "the overlay shows the mapped file as uid {uid}, not {PROBE_HOST_ID}"
        )));
    }
    Ok(())
}

impl Scratch {
    fn cleanup(&self) {
        let unmounted = ["merged", "view"]
            .iter()
            .all(|m| idmap::unmount(&self.mounts.join(m)).is_ok());
        let _ = ns::remove(&self.mounts.join("ns"));
        // Only with nothing mounted in them is a recursive delete safe.
        if unmounted {
            let _ = std::fs::remove_dir_all(&self.mounts);
            let _ = std::fs::remove_dir_all(&self.layers);
        }
    }
}
