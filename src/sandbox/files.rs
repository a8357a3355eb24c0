//! The pod's own files under `<state>/pods/<id>/`: hostname, hosts, resolv.conf and
//! the shm tmpfs its containers share. Every function here blocks (file writes,
//! mount syscalls): call them from `spawn_blocking`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::domain::config::{DnsConfig, NamespaceMode, SandboxConfig};
use crate::error::{IoContext, Result};
use crate::spec::PodFiles;

/// The pod's /dev/shm: 64 MiB, as Docker and containerd size it.
const SHM_OPTIONS: &str = "mode=1777,size=65536k";
const HOST_HOSTS: &str = "/etc/hosts";
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The paths of a pod's files, whether or not they exist yet.
pub fn pod_files(bundle: &Path, shm_mounted: bool) -> PodFiles {
    PodFiles {
        hostname: Some(bundle.join("hostname")),
        hosts: Some(bundle.join("hosts")),
        resolv_conf: Some(bundle.join("resolv.conf")),
        shm: shm_mounted.then(|| shm_path(bundle)),
    }
}

pub fn shm_path(bundle: &Path) -> PathBuf {
    bundle.join("shm")
}

/// Creates the bundle directory and writes hostname, hosts and resolv.conf.
pub fn write(bundle: &Path, config: &SandboxConfig) -> Result<()> {
    fs::create_dir_all(bundle).context(|| format!("creating {}", bundle.display()))?;
    let hostname = if config.hostname.is_empty() {
        // The node's name, as the pod's UTS namespace would otherwise show it.
        fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    } else {
        config.hostname.clone()
    };
    write_file(&bundle.join("hostname"), &format!("{hostname}\n"))?;
    let hosts = fs::read_to_string(HOST_HOSTS).unwrap_or_default();
    write_file(&bundle.join("hosts"), &hosts)?;
    let resolv = if config.dns == DnsConfig::default() {
        fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default()
    } else {
        resolv_conf(&config.dns)
    };
    write_file(&bundle.join("resolv.conf"), &resolv)?;
    super::shim_log::create_fifo(bundle)
}

/// The files a pod's own root must own (its user namespace maps no one else's
/// ids to root): its hostname, hosts and resolv.conf.
pub fn owned_by_pod_root(bundle: &Path) -> [PathBuf; 3] {
    ["hostname", "hosts", "resolv.conf"].map(|name| bundle.join(name))
}

/// The pod's files are bound into every container, whichever user it runs as.
fn write_file(path: &Path, text: &str) -> Result<()> {
    crate::layout::write_shared_file(path, text.as_bytes())
}

/// resolv.conf from the pod's DNS config, as containerd writes it.
pub fn resolv_conf(dns: &DnsConfig) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// Whether the pod gets its own shm: not with the host's IPC namespace.
pub fn wants_shm(config: &SandboxConfig) -> bool {
    config.linux.security_context.namespace_options.ipc != NamespaceMode::Node
}

/// Mounts the pod's shm tmpfs at `<bundle>/shm`.
pub fn mount_shm(bundle: &Path) -> Result<()> {
    let path = shm_path(bundle);
    fs::create_dir_all(&path).context(|| format!("creating {}", path.display()))?;
    let flags = MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(Some("shm"), &path, Some("tmpfs"), flags, Some(SHM_OPTIONS))
        .map_err(io::Error::from)
        .context(|| format!("mounting the pod's shm at {}", path.display()))
}

/// Unmounts the pod's shm; one that is not mounted (any more) is fine.
pub fn unmount_shm(bundle: &Path) -> Result<()> {
    let path = shm_path(bundle);
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::from(e)).context(|| format!("unmounting {}", path.display())),
    }
}

/// Removes the bundle directory, after making sure nothing is mounted in it.
pub fn remove(bundle: &Path) -> Result<()> {
    unmount_shm(bundle)?;
    match fs::remove_dir_all(bundle) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(|| format!("removing {}", bundle.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "8.8.8.8".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\nnameserver 8.8.8.8\noptions ndots:5\n"
        );
    }

    #[test]
    fn files_are_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("pod");
        let config = SandboxConfig {
            hostname: "web-1".into(),
            dns: DnsConfig {
                servers: vec!["1.1.1.1".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        write(&bundle, &config).unwrap();
        assert_eq!(
            fs::read_to_string(bundle.join("hostname")).unwrap(),
            "web-1\n"
        );
        assert_eq!(
            fs::read_to_string(bundle.join("resolv.conf")).unwrap(),
            "nameserver 1.1.1.1\n"
        );
        let files = pod_files(&bundle, false);
        assert_eq!(files.shm, None);
        assert_eq!(files.hosts, Some(bundle.join("hosts")));
        remove(&bundle).unwrap();
        assert!(!bundle.exists());
        remove(&bundle).unwrap();
    }
}
