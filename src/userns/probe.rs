//! Whether this host can run pods in user namespaces the way berthd makes them:
//! a user namespace pinned on a file, an id-mapped bind mount through it, and an
//! overlay whose lower layer is that view (Linux 5.19+). Probed once, for real,
//! and cached: Status advertises the feature only where this worked.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
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

/// Runs the probe in a scratch directory under `state` once and caches the
/// answer. Blocks: call it from `spawn_blocking`.
pub fn probe(state: &Path) -> bool {
    *SUPPORTED.get_or_init(|| {
        let dir = state.join("u-probe");
        let result = traversable(state).and_then(|()| {
            let tried = try_idmapped_overlay(&dir);
            cleanup(&dir);
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

fn try_idmapped_overlay(dir: &Path) -> io::Result<()> {
    cleanup(dir);
    for sub in ["lower", "upper", "work", "view", "merged"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(dir.join("lower/file"), b"")?;
    let range = vec![IdMapping {
        container_id: 0,
        host_id: PROBE_HOST_ID,
        length: 1,
    }];
    let userns = UserNamespace {
        uids: range.clone(),
        gids: range,
    };
    ns::create(&userns, &dir.join("ns"), None)?;
    idmap::bind(
        &dir.join("lower"),
        &dir.join("view"),
        &ns::open(&dir.join("ns"))?,
    )?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.join("view").display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    mount(
        Some("overlay"),
        &dir.join("merged"),
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
    let uid = std::fs::metadata(dir.join("merged/file"))?.uid();
    if uid != PROBE_HOST_ID {
        return Err(io::Error::other(format!(
            "the overlay shows the mapped file as uid {uid}, not {PROBE_HOST_ID}"
        )));
    }
    Ok(())
}

fn cleanup(dir: &Path) {
    let unmounted = ["merged", "view"]
        .iter()
        .all(|m| idmap::unmount(&dir.join(m)).is_ok());
    let _ = ns::remove(&dir.join("ns"));
    // Only with nothing mounted in it is a recursive delete safe.
    if unmounted {
        let _ = std::fs::remove_dir_all(dir);
    }
}
