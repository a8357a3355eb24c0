//! Mounting the rootfs that Create passes (overlay, bind) on `bundle/rootfs`.

use std::path::Path;

use containerd_shim_protos::api::Mount;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::error::{Context, Error, Result};

/// Splits mount options into kernel flags and the filesystem's data string.
fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "defaults" | "async" => (MsFlags::empty(), MsFlags::empty()),
            _ => {
                data.push(opt.as_str());
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    (flags, data.join(","))
}

/// Mounts each of `mounts` on `target` in order (later ones stack on earlier).
pub fn mount_rootfs(mounts: &[Mount], target: &Path) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(target).context(|| format!("create {}", target.display()))?;
    for (i, m) in mounts.iter().enumerate() {
        let (flags, data) = parse_options(&m.options);
        let fstype = if m.type_.is_empty() || flags.contains(MsFlags::MS_BIND) {
            None
        } else {
            Some(m.type_.as_str())
        };
        let data = (!data.is_empty()).then_some(data.as_str());
        let result = mount(Some(m.source.as_str()), target, fstype, flags, data);
        if let Err(e) = result {
            // Leave nothing half-mounted behind.
            if i > 0 {
                let _ = unmount_all(target);
            }
            return Err(Error::io(
                format!("mount {} ({}) on {}", m.source, m.type_, target.display()),
                e,
            ));
        }
        // A read-only bind needs a remount to take effect.
        if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
            let remount = flags | MsFlags::MS_REMOUNT;
            mount(None::<&str>, target, None::<&str>, remount, None::<&str>)
                .context(|| format!("remount {} read-only", target.display()))?;
        }
    }
    Ok(())
}

/// Unmounts everything stacked on `target`; not mounted is fine.
pub fn unmount_all(target: &Path) -> Result<()> {
    loop {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(Error::io(format!("unmount {}", target.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_flags_from_data() {
        let opts: Vec<String> = [
            "ro",
            "lowerdir=/a:/b",
            "upperdir=/u",
            "nosuid",
            "workdir=/w",
        ]
        .map(String::from)
        .to_vec();
        let (flags, data) = parse_options(&opts);
        assert_eq!(flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(data, "lowerdir=/a:/b,upperdir=/u,workdir=/w");
        let (flags, data) = parse_options(&["rbind".to_string(), "rw".to_string()]);
        assert_eq!(flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert!(data.is_empty());
    }
}
