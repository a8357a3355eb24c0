//! The built-in infra rootfs: a read-only directory holding only the pause binary
//! as `/pause` (plus the empty mount points runc would otherwise create in it), so
//! a pod starts with no image at all.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

const PAUSE_NAME: &str = "berth-pause";
/// Mount targets of the infra spec, made once so runc never writes into the rootfs.
const DIRS: &[&str] = &["proc", "dev", "sys", "etc"];
const FILES: &[&str] = &["etc/hostname", "etc/hosts", "etc/resolv.conf"];

/// The configured pause binary, or `berth-pause` next to the berthd executable.
pub fn pause_binary(configured: &Path) -> Result<PathBuf> {
    if !configured.as_os_str().is_empty() {
        return Ok(configured.to_path_buf());
    }
    beside_berthd(PAUSE_NAME).ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "pause_binary is not set and no {PAUSE_NAME} is installed next to berthd"
        ))
    })
}

/// A file named `name` in berthd's own directory, if there is one.
pub fn beside_berthd(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.join(name);
    path.is_file().then_some(path)
}

/// Makes `<root>/pause/rootfs` hold a copy of `binary` as `/pause`, replacing an
/// older copy. Blocks: run it at start-up or in `spawn_blocking`.
pub fn install(root: &Path, binary: &Path) -> Result<PathBuf> {
    let rootfs = root.join("pause/rootfs");
    let content =
        fs::read(binary).context(|| format!("reading the pause binary {}", binary.display()))?;
    if is_dynamic_elf(&content) {
        tracing::warn!(
            binary = %binary.display(),
            "the pause binary is dynamically linked and cannot run alone in its rootfs; \
             build a static one with shims/pause/build-static.sh"
        );
    }
    for dir in DIRS {
        let path = rootfs.join(dir);
        fs::create_dir_all(&path).context(|| format!("creating {}", path.display()))?;
    }
    // The infra container's `/`: its user (the pod's run_as_user) must traverse it.
    crate::layout::set_mode(&rootfs, crate::layout::SHARED_DIR)?;
    for file in FILES {
        let path = rootfs.join(file);
        if !path.exists() {
            fs::write(&path, "").context(|| format!("creating {}", path.display()))?;
        }
    }
    let target = rootfs.join("pause");
    let same = fs::File::open(&target)
        .and_then(|mut f| {
            let mut old = Vec::new();
            f.read_to_end(&mut old).map(|_| old == content)
        })
        .unwrap_or(false);
    if !same {
        let tmp = rootfs.join(".pause.tmp");
        fs::write(&tmp, &content).context(|| format!("writing {}", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .context(|| format!("setting the mode of {}", tmp.display()))?;
        fs::rename(&tmp, &target).context(|| format!("installing {}", target.display()))?;
        tracing::info!(from = %binary.display(), to = %target.display(), "pause binary installed");
    }
    Ok(rootfs)
}

/// Whether an ELF executable names a program interpreter (PT_INTERP): then it
/// needs a dynamic loader and libraries the pause rootfs does not have.
fn is_dynamic_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit little-endian ELF only; anything else is left to runc to judge.
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at) == Some(PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_holds_the_binary() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("pause-bin");
        fs::write(&binary, b"not really elf").unwrap();
        let rootfs = install(dir.path(), &binary).unwrap();
        assert_eq!(fs::read(rootfs.join("pause")).unwrap(), b"not really elf");
        let mode = fs::metadata(rootfs.join("pause"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(rootfs.join("proc").is_dir());
        // Again, with a new binary: replaced.
        fs::write(&binary, b"v2").unwrap();
        install(dir.path(), &binary).unwrap();
        assert_eq!(fs::read(rootfs.join("pause")).unwrap(), b"v2");
    }

    #[test]
    fn a_dynamic_executable_is_recognised() {
        let own = fs::read("/proc/self/exe").unwrap();
        // Test binaries are linked dynamically against glibc.
        assert!(is_dynamic_elf(&own));
        assert!(!is_dynamic_elf(b"#!/bin/sh\n"));
    }
}
