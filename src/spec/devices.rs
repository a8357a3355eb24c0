//! Host devices for containers: CRI `devices` and, for privileged containers, all of
//! the host's /dev. Looking devices up touches the host, so it goes through
//! [`DeviceLookup`]; tests give a fake.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

use super::SpecError;
use crate::domain::config::ContainerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
    Fifo,
}

/// A device node as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    pub path: PathBuf,
    pub kind: DeviceKind,
    pub major: i64,
    pub minor: i64,
    /// Permission bits only.
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Finds device nodes on the host.
pub trait DeviceLookup {
    /// The device at `host_path` (symlinks followed), or every device below it when
    /// it is a directory. Anything else is an error.
    fn lookup(&self, host_path: &Path) -> io::Result<Vec<HostDevice>>;
    /// Every device of the host's /dev, for privileged containers.
    fn host_devices(&self) -> io::Result<Vec<HostDevice>>;
}

/// The real host, through stat(2).
pub struct HostDevices;

/// Directories of /dev that hold no devices a container should get, as containerd.
const SKIPPED_DIRS: [&str; 6] = ["pts", "shm", "fd", "mqueue", ".lxc", ".udev"];

impl DeviceLookup for HostDevices {
    fn lookup(&self, host_path: &Path) -> io::Result<Vec<HostDevice>> {
        let meta = std::fs::metadata(host_path)?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(host_path, &mut found)?;
            return Ok(found);
        }
        device_of(host_path, &meta)
            .map(|d| vec![d])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a device node"))
    }

    fn host_devices(&self) -> io::Result<Vec<HostDevice>> {
        let mut found = Vec::new();
        walk(Path::new("/dev"), &mut found)?;
        Ok(found)
    }
}

fn walk(dir: &Path, found: &mut Vec<HostDevice>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        let path = entry.path();
        if file_type.is_dir() {
            let name = entry.file_name();
            if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                walk(&path, found)?;
            }
        } else if !file_type.is_symlink() && entry.file_name() != "console" {
            // Devices vanish under us (hotplug); a missing one is simply not there.
            if let Ok(meta) = entry.metadata()
                && let Some(device) = device_of(&path, &meta)
            {
                found.push(device);
            }
        }
    }
    Ok(())
}

fn device_of(path: &Path, meta: &std::fs::Metadata) -> Option<HostDevice> {
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        DeviceKind::Char
    } else if ft.is_block_device() {
        DeviceKind::Block
    } else if ft.is_fifo() {
        DeviceKind::Fifo
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(HostDevice {
        path: path.to_path_buf(),
        kind,
        major: i64::from(libc::major(rdev)),
        minor: i64::from(libc::minor(rdev)),
        file_mode: meta.permissions().mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// A device for the spec, with the cgroup access CRI asked for.
pub(super) struct ContainerDevice {
    pub device: LinuxDevice,
    pub access: String,
}

/// The CRI devices (a directory brings every device below it, under the container
/// path), then for privileged containers the host's, skipping paths already given.
pub(super) fn devices(
    config: &ContainerConfig,
    lookup: &dyn DeviceLookup,
) -> Result<Vec<ContainerDevice>, SpecError> {
    let mut out: Vec<ContainerDevice> = Vec::new();
    for d in &config.devices {
        let host_root = Path::new(&d.host_path);
        let found = lookup
            .lookup(host_root)
            .map_err(|e| SpecError::InvalidArgument(format!("device {:?}: {e}", d.host_path)))?;
        for host in found {
            let below = host.path.strip_prefix(host_root).unwrap_or(Path::new(""));
            let path = if below.as_os_str().is_empty() {
                PathBuf::from(&d.container_path)
            } else {
                Path::new(&d.container_path).join(below)
            };
            out.push(ContainerDevice {
                device: linux_device(&host, path)?,
                access: d.permissions.clone(),
            });
        }
    }
    if config.linux.security_context.privileged {
        let host = lookup.host_devices().map_err(|source| SpecError::Io {
            context: "listing the host's devices".into(),
            source,
        })?;
        for h in host {
            if !out.iter().any(|d| d.device.path() == &h.path) {
                let path = h.path.clone();
                out.push(ContainerDevice {
                    device: linux_device(&h, path)?,
                    access: "rwm".into(),
                });
            }
        }
    }
    Ok(out)
}

fn linux_device(host: &HostDevice, path: PathBuf) -> Result<LinuxDevice, SpecError> {
    Ok(LinuxDeviceBuilder::default()
        .path(path)
        .typ(match host.kind {
            DeviceKind::Char => LinuxDeviceType::C,
            DeviceKind::Block => LinuxDeviceType::B,
            DeviceKind::Fifo => LinuxDeviceType::P,
        })
        .major(host.major)
        .minor(host.minor)
        .file_mode(host.file_mode)
        .uid(host.uid)
        .gid(host.gid)
        .build()?)
}

/// The device cgroup: deny everything, then allow each device (runc appends its own
/// allowances for /dev/null and friends); privileged containers may use any device.
pub(super) fn device_rules(
    devices: &[ContainerDevice],
    privileged: bool,
) -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    let rule = |allow: bool, access: &str| {
        LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access(access.to_string())
    };
    if privileged {
        return Ok(vec![rule(true, "rwm").build()?]);
    }
    let mut rules = vec![rule(false, "rwm").build()?];
    for d in devices {
        rules.push(
            rule(true, &d.access)
                .typ(d.device.typ())
                .major(d.device.major())
                .minor(d.device.minor())
                .build()?,
        );
    }
    Ok(rules)
}
