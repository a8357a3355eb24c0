//! The `linux` section: namespaces, cgroup resources and path, OOM score, seccomp,
//! masked and read-only /proc paths.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroup, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources,
    LinuxResourcesBuilder, LinuxSeccomp,
};

use super::SpecError;
use crate::domain::config::{NamespaceMode, NamespaceOptions, Resources, SeccompProfile};

/// Paths hidden from unprivileged containers unless CRI lists its own.
pub(super) const DEFAULT_MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// Paths read-only for unprivileged containers unless CRI lists its own.
pub(super) const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> Result<LinuxNamespace, SpecError> {
    let builder = LinuxNamespaceBuilder::default().typ(typ);
    Ok(match path {
        Some(path) => builder.path(path).build()?,
        None => builder.build()?,
    })
}

/// The infra container creates the pod's namespaces; a host ("Node") namespace is
/// simply left out. The network namespace is the one CNI set up, when given.
pub(super) fn sandbox_namespaces(
    options: &NamespaceOptions,
    netns_path: Option<&Path>,
    cgroup_ns: bool,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    use LinuxNamespaceType::*;
    let mut out = vec![namespace(Mount, None)?];
    if options.network != NamespaceMode::Node {
        out.push(namespace(Network, netns_path.map(Path::to_path_buf))?);
        // A pod on the host network keeps the host's hostname too.
        out.push(namespace(Uts, None)?);
    }
    if options.ipc != NamespaceMode::Node {
        out.push(namespace(Ipc, None)?);
    }
    if options.pid != NamespaceMode::Node {
        out.push(namespace(Pid, None)?);
    }
    if cgroup_ns {
        out.push(namespace(Cgroup, None)?);
    }
    Ok(out)
}

/// A container joins the infra container's network, IPC and UTS namespaces through
/// /proc/<pid>/ns; its PID namespace follows its mode.
pub(super) fn container_namespaces(
    options: &NamespaceOptions,
    sandbox_pid: u32,
    target_pid: Option<u32>,
    cgroup_ns: bool,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    use LinuxNamespaceType::*;
    let of = |pid: u32, ns: &str| Some(PathBuf::from(format!("/proc/{pid}/ns/{ns}")));
    let mut out = vec![namespace(Mount, None)?];
    if options.network != NamespaceMode::Node {
        out.push(namespace(Network, of(sandbox_pid, "net"))?);
        out.push(namespace(Uts, of(sandbox_pid, "uts"))?);
    }
    if options.ipc != NamespaceMode::Node {
        out.push(namespace(Ipc, of(sandbox_pid, "ipc"))?);
    }
    match options.pid {
        NamespaceMode::Pod => out.push(namespace(Pid, of(sandbox_pid, "pid"))?),
        NamespaceMode::Container => out.push(namespace(Pid, None)?),
        NamespaceMode::Node => {}
        NamespaceMode::Target => {
            let pid = target_pid.ok_or_else(|| {
                SpecError::InvalidArgument(format!(
                    "pid namespace target {:?} has no running process",
                    options.target_id
                ))
            })?;
            out.push(namespace(Pid, of(pid, "pid"))?);
        }
    }
    if cgroup_ns {
        out.push(namespace(Cgroup, None)?);
    }
    Ok(out)
}

/// CRI resources to cgroup settings; zero means unset. Without a swap limit the
/// swap limit equals the memory limit, so a container does not swap by default.
pub(super) fn resources(
    r: &Resources,
    devices: Vec<LinuxDeviceCgroup>,
) -> Result<LinuxResources, SpecError> {
    let mut builder = LinuxResourcesBuilder::default().devices(devices);
    let mut cpu = LinuxCpuBuilder::default();
    let mut cpu_set = false;
    if r.cpu_period > 0 {
        cpu = cpu.period(r.cpu_period as u64);
        cpu_set = true;
    }
    if r.cpu_quota != 0 {
        cpu = cpu.quota(r.cpu_quota);
        cpu_set = true;
    }
    if r.cpu_shares > 0 {
        cpu = cpu.shares(r.cpu_shares as u64);
        cpu_set = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
        cpu_set = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
        cpu_set = true;
    }
    if cpu_set {
        builder = builder.cpu(cpu.build()?);
    }
    let swap = match (r.memory_limit_in_bytes, r.memory_swap_limit_in_bytes) {
        (_, 0) if r.memory_limit_in_bytes > 0 => Some(r.memory_limit_in_bytes),
        (_, 0) => None,
        (_, swap) => Some(swap),
    };
    if r.memory_limit_in_bytes > 0 || swap.is_some() {
        let mut memory = LinuxMemoryBuilder::default();
        if r.memory_limit_in_bytes > 0 {
            memory = memory.limit(r.memory_limit_in_bytes);
        }
        if let Some(swap) = swap {
            memory = memory.swap(swap);
        }
        builder = builder.memory(memory.build()?);
    }
    if !r.hugepage_limits.is_empty() {
        let limits = r
            .hugepage_limits
            .iter()
            .map(|h| {
                let limit = i64::try_from(h.limit).map_err(|_| {
                    SpecError::InvalidArgument(format!(
                        "hugepage limit {} for {} is too large",
                        h.limit, h.page_size
                    ))
                })?;
                Ok(LinuxHugepageLimitBuilder::default()
                    .page_size(h.page_size.clone())
                    .limit(limit)
                    .build()?)
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        builder = builder.hugepage_limits(limits);
    }
    if !r.unified.is_empty() {
        builder = builder.unified(r.unified.clone().into_iter().collect::<HashMap<_, _>>());
    }
    Ok(builder.build()?)
}

/// containerd's restrict_oom_score_adj: without CAP_SYS_RESOURCE a process cannot
/// lower its score below its parent's, so ask for no less than berthd's own.
pub(super) fn clamp_oom(requested: i64, min_allowed: i32) -> i32 {
    // In range after the clamp, so the cast cannot truncate.
    requested.clamp(-1000, 1000).max(i64::from(min_allowed)) as i32
}

/// containerd's layout: `<parent>/<id>` under cgroupfs, `<slice>:berth:<id>` for
/// the systemd driver. No parent leaves the choice to runc.
pub(super) fn cgroups_path(parent: &str, id: &str) -> Option<PathBuf> {
    if parent.is_empty() {
        None
    } else if parent.ends_with(".slice") {
        Some(PathBuf::from(format!("{parent}:berth:{id}")))
    } else {
        Some(Path::new(parent).join(id))
    }
}

/// The seccomp filter for a profile, for a process with these capabilities.
pub(super) fn seccomp(
    profile: &SeccompProfile,
    capabilities: &HashSet<String>,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    let path = match profile {
        SeccompProfile::Unconfined => return Ok(None),
        SeccompProfile::RuntimeDefault => {
            return super::seccomp::runtime_default(capabilities).map(Some);
        }
        SeccompProfile::Localhost(path) => path,
    };
    let invalid = |e: &dyn std::fmt::Display| {
        SpecError::InvalidArgument(format!("seccomp profile {}: {e}", path.display()))
    };
    let bytes = read_profile(path).map_err(|e| invalid(&e))?;
    // A Docker-style profile parses too; its archMap, includes and excludes are ignored.
    let filter: LinuxSeccomp = serde_json::from_slice(&bytes).map_err(|e| invalid(&e))?;
    Ok(Some(filter))
}

pub(super) fn masked_paths(given: &[String], privileged: bool) -> Vec<String> {
    paths(given, &DEFAULT_MASKED_PATHS, privileged)
}

pub(super) fn readonly_paths(given: &[String], privileged: bool) -> Vec<String> {
    paths(given, &DEFAULT_READONLY_PATHS, privileged)
}

fn paths(given: &[String], defaults: &[&str], privileged: bool) -> Vec<String> {
    if privileged {
        Vec::new()
    } else if given.is_empty() {
        defaults.iter().map(|p| p.to_string()).collect()
    } else {
        given.to_vec()
    }
}

/// The most of a Localhost seccomp profile read: real ones are tens of KiB.
pub const MAX_SECCOMP_PROFILE: u64 = 1 << 20;

/// A profile file's bytes: a regular file (never a device or fifo, which could
/// feed berthd without end or block it) of at most [`MAX_SECCOMP_PROFILE`].
fn read_profile(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let too_big = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!("larger than {MAX_SECCOMP_PROFILE} bytes"),
        )
    };
    if meta.len() > MAX_SECCOMP_PROFILE {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECCOMP_PROFILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SECCOMP_PROFILE {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Refuses a Localhost profile outside `roots` (links followed first), so a request
/// cannot make berthd read an arbitrary host file as a profile.
pub fn check_profile_location(
    profile: &SeccompProfile,
    roots: &[PathBuf],
    field: &str,
) -> Result<(), SpecError> {
    let SeccompProfile::Localhost(path) = profile else {
        return Ok(());
    };
    let refuse = |why: String| {
        SpecError::InvalidArgument(format!(
            "{field}: seccomp profile {}: {why}",
            crate::error::quote(&path.display().to_string())
        ))
    };
    let real = std::fs::canonicalize(path).map_err(|e| refuse(e.to_string()))?;
    let inside = roots.iter().any(|root| {
        std::fs::canonicalize(root).is_ok_and(|root| real.starts_with(&root) && real != root)
    });
    if !inside {
        return Err(refuse(format!(
            "not under the seccomp profile roots ({})",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// Refuses limits this node's kernel cannot apply, before the runtime tries:
/// `unified` keys on a cgroup v1 node, hugepage sizes the node does not have.
pub fn check_supported(r: &Resources, host: &super::HostFacts) -> Result<(), SpecError> {
    if !r.unified.is_empty() && !host.cgroup_v2 {
        return Err(SpecError::InvalidArgument(
            "linux.resources.unified: cgroup v2 settings, and this node runs cgroup v1".into(),
        ));
    }
    if !r.hugepage_limits.is_empty() && !hugetlb_controller(host.cgroup_v2) {
        return Err(SpecError::InvalidArgument(
            "linux.resources.hugepage_limits: this node's cgroups have no hugetlb controller"
                .into(),
        ));
    }
    for (i, h) in r.hugepage_limits.iter().enumerate() {
        if !hugepage_size_exists(&h.page_size) {
            return Err(SpecError::InvalidArgument(format!(
                "linux.resources.hugepage_limits[{i}].page_size: this node has no {} hugepages",
                crate::error::quote(&h.page_size)
            )));
        }
    }
    Ok(())
}

/// Whether the hierarchy the runtime uses has the hugetlb controller (a hybrid
/// node may have it only on its v2 hierarchy, which runc does not use there).
fn hugetlb_controller(cgroup_v2: bool) -> bool {
    if cgroup_v2 {
        std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "hugetlb"))
    } else {
        Path::new("/sys/fs/cgroup/hugetlb").is_dir()
    }
}

/// Whether `/sys/kernel/mm/hugepages` lists pages of `size` ("2MB", "1GB").
fn hugepage_size_exists(size: &str) -> bool {
    let kib = |digits: &str, unit: u64| digits.parse::<u64>().ok().map(|n| n * unit);
    let in_kib = match size.len().checked_sub(2).map(|n| size.split_at(n)) {
        Some((n, "KB")) => kib(n, 1),
        Some((n, "MB")) => kib(n, 1 << 10),
        Some((n, "GB")) => kib(n, 1 << 20),
        _ => None,
    };
    in_kib.is_some_and(|k| Path::new(&format!("/sys/kernel/mm/hugepages/hugepages-{k}kB")).is_dir())
}
