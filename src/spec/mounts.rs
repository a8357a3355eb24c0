//! The mounts of a container: the standard kernel filesystems, the pod's shared files
//! (/etc/hostname, /etc/hosts, /etc/resolv.conf, /dev/shm) and the CRI bind mounts.
//!
//! A CRI mount replaces a default or pod-file mount with the same destination, and a
//! CRI mount of /dev replaces everything under /dev. Host paths are used as given:
//! creating missing directories and resolving symlinks is the caller's work.

use std::path::{Component, Path};

use oci_spec::runtime::{Mount as OciMount, MountBuilder};

use super::{PodFiles, SpecError};
use crate::domain::config::{ContainerConfig, Mount, MountPropagation, NamespaceMode};

const ETC_HOSTNAME: &str = "/etc/hostname";
const ETC_HOSTS: &str = "/etc/hosts";
const RESOLV_CONF: &str = "/etc/resolv.conf";
const DEV_SHM: &str = "/dev/shm";

/// containerd's default set, without its /run tmpfs. `writable_sys` (privileged)
/// makes /sys and /sys/fs/cgroup read-write.
fn defaults(writable_sys: bool) -> Result<Vec<OciMount>, SpecError> {
    let sys = if writable_sys { "rw" } else { "ro" };
    [
        ("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"][..]),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        (
            DEV_SHM,
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        (
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys],
        ),
        (
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys],
        ),
    ]
    .into_iter()
    .map(|(destination, typ, source, options)| {
        Ok(MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()?)
    })
    .collect()
}

fn bind(source: &Path, destination: &str, options: &[&str]) -> Result<OciMount, SpecError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// The infra container's mounts: the defaults, the pod's /dev/shm and resolv.conf,
/// both read-only (containerd does the same; the pause process never writes).
pub(super) fn sandbox_mounts(files: &PodFiles, host_ipc: bool) -> Result<Vec<OciMount>, SpecError> {
    let ro = ["rbind", "ro", "nosuid", "nodev", "noexec"];
    let shm = if host_ipc {
        Some(Path::new(DEV_SHM))
    } else {
        files.shm.as_deref()
    };
    let mut supplied = Vec::new();
    if let Some(shm) = shm {
        supplied.push(bind(shm, DEV_SHM, &ro)?);
    }
    if let Some(resolv) = &files.resolv_conf {
        supplied.push(bind(resolv, RESOLV_CONF, &ro)?);
    }
    Ok(merge(defaults(false)?, supplied))
}

/// An application container's mounts, and the rootfs propagation its CRI mounts
/// need ("rslave" or "rshared"; `None` leaves runc's rprivate).
pub(super) fn container_mounts(
    config: &ContainerConfig,
    files: &PodFiles,
) -> Result<(Vec<OciMount>, Option<&'static str>), SpecError> {
    let sc = &config.linux.security_context;
    let user_mounted = |path: &str| {
        config
            .mounts
            .iter()
            .any(|m| Path::new(&m.container_path) == Path::new(path))
    };
    // The pod files follow the rootfs: read-only rootfs, read-only files.
    let pod_file_options = if sc.readonly_rootfs {
        ["rbind", "rprivate", "ro"]
    } else {
        ["rbind", "rprivate", "rw"]
    };
    let mut supplied = Vec::new();
    for (destination, source) in [
        (ETC_HOSTNAME, &files.hostname),
        (ETC_HOSTS, &files.hosts),
        (RESOLV_CONF, &files.resolv_conf),
    ] {
        if let Some(source) = source
            && !user_mounted(destination)
        {
            supplied.push(bind(source, destination, &pod_file_options)?);
        }
    }
    let shm = if sc.namespace_options.ipc == NamespaceMode::Node {
        Some(Path::new(DEV_SHM))
    } else {
        files.shm.as_deref()
    };
    if let Some(shm) = shm
        && !user_mounted(DEV_SHM)
    {
        supplied.push(bind(shm, DEV_SHM, &["rbind", "rprivate", "rw"])?);
    }
    let mut propagation = None;
    for m in &config.mounts {
        supplied.push(cri_mount(m)?);
        propagation = match (propagation, m.propagation) {
            (_, MountPropagation::Bidirectional) | (Some("rshared"), _) => Some("rshared"),
            (_, MountPropagation::HostToContainer) => Some("rslave"),
            (current, MountPropagation::Private) => current,
        };
    }
    Ok((merge(defaults(sc.privileged)?, supplied), propagation))
}

fn cri_mount(m: &Mount) -> Result<OciMount, SpecError> {
    let propagation = match m.propagation {
        MountPropagation::Private => "rprivate",
        MountPropagation::HostToContainer => "rslave",
        MountPropagation::Bidirectional => "rshared",
    };
    // A read-only rootfs does not make bind mounts read-only: each says for itself.
    let mode = if m.readonly || !m.image.is_empty() {
        "ro"
    } else {
        "rw"
    };
    let mut options = vec!["rbind", propagation, mode];
    if !m.image.is_empty() {
        // An image volume is data, as containerd mounts it: nothing runs from it.
        options.extend(["nosuid", "nodev", "noexec"]);
    }
    if m.recursive_read_only {
        options.push("rro");
    }
    bind(Path::new(&m.host_path), &m.container_path, &options)
}

/// The defaults not overridden by a supplied mount, then the supplied ones, parents
/// before children so that a mount at /a/b is not hidden by a later one at /a.
fn merge(defaults: Vec<OciMount>, mut supplied: Vec<OciMount>) -> Vec<OciMount> {
    let replaces_dev = supplied
        .iter()
        .any(|m| m.destination() == Path::new("/dev"));
    let overridden = |dest: &Path| supplied.iter().any(|s| s.destination() == dest);
    let under_replaced_dev =
        |dest: &Path| replaces_dev && dest.starts_with("/dev") && dest != Path::new("/dev");
    let mut mounts: Vec<OciMount> = defaults
        .into_iter()
        .filter(|d| !(overridden(d.destination()) || under_replaced_dev(d.destination())))
        .collect();
    // Stable: equal depths keep their order.
    supplied.sort_by_key(|m| depth(m.destination()));
    mounts.extend(supplied);
    mounts
}

fn depth(path: &Path) -> usize {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}
