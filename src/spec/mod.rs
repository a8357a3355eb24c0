//! OCI runtime spec (`config.json`) generation for a pod's infra container and for
//! each container, following containerd 1.7's CRI plugin so that workloads see what
//! they would see there.
//!
//! Generation reads only what it must: the image's /etc/passwd and /etc/group (to
//! resolve users and groups), a Localhost seccomp profile (`RuntimeDefault` is
//! berth's own, in `seccomp.rs`), and host devices through
//! the injected [`DeviceLookup`]. Everything else is the caller's, before it calls:
//! creating missing host directories of CRI mounts (containerd creates them, 0755),
//! resolving their symlinks, checking that Bidirectional / HostToContainer sources sit
//! on shared mounts, and writing the pod's hostname/hosts/resolv.conf files.
//!
//! AppArmor and SELinux labels follow the host's [`LsmFacts`] (`lsm.rs`); a pod's
//! user namespace is joined by path (`userns.rs`). Not generated: rlimits (runc's
//! defaults, as containerd leaves them).

pub mod annotations;
mod devices;
mod linux;
pub mod lsm;
mod mounts;
mod process;
mod seccomp;
mod user;
mod userns;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxResourcesBuilder, Process, ProcessBuilder, RootBuilder,
    Spec, SpecBuilder,
};

use crate::domain::ImageConfigView;
use crate::domain::config::{ContainerConfig, NamespaceMode, Resources, SandboxConfig};
use crate::error::Error;

pub use devices::{DeviceKind, DeviceLookup, HostDevice, HostDevices};
pub use linux::{check_profile_location, check_supported};
pub use lsm::LsmFacts;
pub use user::{UserFiles, user_files};
pub use userns::join_user_namespace;

/// containerd's score for infra containers: the last thing the OOM killer takes.
pub const SANDBOX_OOM_SCORE_ADJ: i32 = -998;
/// containerd's CPU shares for the infra container: it only sleeps.
const SANDBOX_CPU_SHARES: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The CRI or image config asks for something impossible; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// oci-spec refused a value berth built: a bug in berth.
    #[error("building the OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

impl From<SpecError> for Error {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::InvalidArgument(m) => Error::InvalidArgument(m),
            SpecError::Io { context, source } => Error::Io { context, source },
            SpecError::Build(e) => Error::Internal(format!("building the OCI spec: {e}")),
        }
    }
}

/// Host paths of the pod's shared files, bind-mounted into its containers. `None`
/// leaves the image's own file (or, for `shm`, a private tmpfs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFiles {
    pub hostname: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    /// The pod's /dev/shm mount; ignored with host IPC, where the host's is used.
    pub shm: Option<PathBuf>,
}

/// The host facts both specs depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// berthd's own oom_score_adj: without CAP_SYS_RESOURCE nothing can go below it.
    pub min_oom_score_adj: i32,
    /// cgroup v2 hosts give unprivileged containers their own cgroup namespace.
    pub cgroup_v2: bool,
    /// berthd's effective capabilities, a bit per capability number: the most a
    /// privileged container can get.
    pub capabilities: u64,
    /// The LSMs the host enforces: AppArmor profiles and SELinux labels apply only
    /// where they do.
    pub lsm: LsmFacts,
}

impl HostFacts {
    /// Reads them off this host. Without CAP_SYS_RESOURCE a process cannot lower
    /// an oom_score_adj below its own, so berthd's own score is the floor (as with
    /// containerd's `restrict_oom_score_adj`); with it, anything down to -1000 goes.
    pub fn of_this_host() -> HostFacts {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let capabilities = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|caps| u64::from_str_radix(caps.trim(), 16).ok())
            .unwrap_or(0);
        let may_lower = process::holds(capabilities, oci_spec::runtime::Capability::SysResource);
        let own = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let min_oom_score_adj = if may_lower { -1000 } else { own };
        HostFacts {
            min_oom_score_adj,
            cgroup_v2: Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            capabilities,
            lsm: LsmFacts::of_this_host(),
        }
    }
}

pub struct SandboxSpecInputs<'a> {
    pub id: &'a str,
    pub config: &'a SandboxConfig,
    /// The infra image's config; for the built-in pause, entrypoint `["/pause"]`.
    pub image: &'a ImageConfigView,
    pub image_name: &'a str,
    /// The rootfs, absolute or relative to the bundle.
    pub rootfs: &'a Path,
    pub user_files: &'a UserFiles,
    /// The pod's network namespace; `None` creates one (ignored with host network).
    pub netns_path: Option<&'a Path>,
    pub pod_files: &'a PodFiles,
    pub host: HostFacts,
}

pub struct ContainerSpecInputs<'a> {
    pub id: &'a str,
    pub sandbox_id: &'a str,
    pub config: &'a ContainerConfig,
    pub sandbox: &'a SandboxConfig,
    pub image: &'a ImageConfigView,
    /// The image's name for the annotation (the reference the kubelet used).
    pub image_name: &'a str,
    pub rootfs: &'a Path,
    pub user_files: &'a UserFiles,
    /// The infra container's pid, whose namespaces the container joins.
    pub sandbox_pid: u32,
    /// The pid of the `target_id` container, for PID namespace mode Target.
    pub target_pid: Option<u32>,
    pub pod_files: &'a PodFiles,
    /// For `HOSTNAME` when the pod sets no hostname (host network).
    pub node_hostname: &'a str,
    pub devices: &'a dyn DeviceLookup,
    pub host: HostFacts,
}

/// The infra ("pause") container: it holds the pod's namespaces and does nothing else.
pub fn sandbox_spec(inputs: &SandboxSpecInputs) -> Result<Spec, SpecError> {
    let config = inputs.config;
    let sc = &config.linux.security_context;
    let user = user::resolve_sandbox(sc, inputs.user_files)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(process::sandbox_args(inputs.image)?)
        .env(process::environment(&inputs.image.env, &[], None))
        .cwd(process::working_dir("", &inputs.image.working_dir))
        .capabilities(process::capabilities(
            &Default::default(),
            false,
            inputs.host.capabilities,
        )?)
        .no_new_privileges(true)
        .oom_score_adj(linux::clamp_oom(
            SANDBOX_OOM_SCORE_ADJ.into(),
            inputs.host.min_oom_score_adj,
        ))
        .build()?;
    let mut process = without_builder_defaults(process);
    let (process_label, mount_label) =
        lsm::selinux_labels(sc.selinux.as_ref(), None, false, inputs.host.lsm);
    process
        .set_apparmor_profile(lsm::apparmor_profile(&sc.apparmor, false, inputs.host.lsm))
        .set_selinux_label(process_label);
    let host_network = config.host_network();
    let mut linux = LinuxBuilder::default()
        .namespaces(linux::sandbox_namespaces(
            &sc.namespace_options,
            inputs.netns_path,
            inputs.host.cgroup_v2 && !sc.privileged,
        )?)
        .resources(
            LinuxResourcesBuilder::default()
                .devices(devices::device_rules(&[], false)?)
                .cpu(
                    LinuxCpuBuilder::default()
                        .shares(SANDBOX_CPU_SHARES)
                        .build()?,
                )
                .build()?,
        )
        .sysctl(
            config
                .linux
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        )
        .masked_paths(linux::masked_paths(&[], sc.privileged))
        .readonly_paths(linux::readonly_paths(&[], sc.privileged))
        .build()?;
    if let Some(path) = linux::cgroups_path(&config.linux.cgroup_parent, inputs.id) {
        linux.set_cgroups_path(Some(path));
    }
    linux.set_mount_label(mount_label);
    if !sc.privileged {
        linux.set_seccomp(linux::seccomp(&sc.seccomp, &bounding_set(&process))?);
    }
    let mut spec = SpecBuilder::default()
        .version(oci_spec::runtime::VERSION)
        .root(
            RootBuilder::default()
                .path(inputs.rootfs)
                .readonly(true)
                .build()?,
        )
        .process(process)
        .mounts(mounts::sandbox_mounts(
            inputs.pod_files,
            sc.namespace_options.ipc == NamespaceMode::Node,
        )?)
        .annotations(annotations::sandbox(inputs))
        .linux(linux)
        .build()?;
    // runc refuses a hostname without a UTS namespace of the container's own.
    let hostname = (!host_network && !config.hostname.is_empty()).then(|| config.hostname.clone());
    spec.set_hostname(hostname);
    Ok(spec)
}

/// The cgroup limits UpdateContainerResources applies to a running container: the
/// same mapping as at creation, without device rules (those never change).
pub fn resources_update(r: &Resources) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let mut resources = linux::resources(r, Vec::new())?;
    resources.set_devices(None);
    Ok(resources)
}

/// An application container of a pod, joining the infra container's namespaces.
pub fn container_spec(inputs: &ContainerSpecInputs) -> Result<Spec, SpecError> {
    let config = inputs.config;
    let sc = &config.linux.security_context;
    if sc.privileged && !inputs.sandbox.linux.security_context.privileged {
        return Err(SpecError::InvalidArgument(format!(
            "container {:?}: privileged, but its pod is not",
            config.name
        )));
    }
    let hostname = match inputs.sandbox.hostname.as_str() {
        "" => inputs.node_hostname,
        name => name,
    };
    let process = ProcessBuilder::default()
        .terminal(config.tty)
        .user(user::resolve_container(
            sc,
            inputs.image,
            inputs.user_files,
        )?)
        .args(process::container_args(config, inputs.image)?)
        .env(process::environment(
            &inputs.image.env,
            &config.envs,
            Some(hostname),
        ))
        .cwd(process::working_dir(
            &config.working_dir,
            &inputs.image.working_dir,
        ))
        .capabilities(process::capabilities(
            &sc.capabilities,
            sc.privileged,
            inputs.host.capabilities,
        )?)
        .no_new_privileges(sc.no_new_privs)
        .oom_score_adj(linux::clamp_oom(
            config.linux.resources.oom_score_adj,
            inputs.host.min_oom_score_adj,
        ))
        .build()?;
    let mut process = without_builder_defaults(process);
    let pod_sc = &inputs.sandbox.linux.security_context;
    let (process_label, mount_label) = lsm::selinux_labels(
        sc.selinux.as_ref(),
        pod_sc.selinux.as_ref(),
        sc.privileged,
        inputs.host.lsm,
    );
    process
        .set_apparmor_profile(lsm::apparmor_profile(
            &sc.apparmor,
            sc.privileged,
            inputs.host.lsm,
        ))
        .set_selinux_label(process_label);
    let (mounts, rootfs_propagation) = mounts::container_mounts(config, inputs.pod_files)?;
    let container_devices = devices::devices(config, inputs.devices)?;
    let mut linux = LinuxBuilder::default()
        .namespaces(linux::container_namespaces(
            &sc.namespace_options,
            inputs.sandbox_pid,
            inputs.target_pid,
            inputs.host.cgroup_v2 && !sc.privileged,
        )?)
        .resources(linux::resources(
            &config.linux.resources,
            devices::device_rules(&container_devices, sc.privileged)?,
        )?)
        .devices(
            container_devices
                .into_iter()
                .map(|d| d.device)
                .collect::<Vec<_>>(),
        )
        .masked_paths(linux::masked_paths(&sc.masked_paths, sc.privileged))
        .readonly_paths(linux::readonly_paths(&sc.readonly_paths, sc.privileged))
        .build()?;
    if let Some(path) = linux::cgroups_path(&inputs.sandbox.linux.cgroup_parent, inputs.id) {
        linux.set_cgroups_path(Some(path));
    }
    linux.set_mount_label(mount_label);
    if let Some(propagation) = rootfs_propagation {
        linux.set_rootfs_propagation(Some(propagation.into()));
    }
    // Privileged containers run unfiltered, as in containerd.
    if !sc.privileged {
        linux.set_seccomp(linux::seccomp(&sc.seccomp, &bounding_set(&process))?);
    }
    let mut spec = SpecBuilder::default()
        .version(oci_spec::runtime::VERSION)
        .root(
            RootBuilder::default()
                .path(inputs.rootfs)
                .readonly(sc.readonly_rootfs)
                .build()?,
        )
        .process(process)
        .mounts(mounts)
        .annotations(annotations::container(inputs))
        .linux(linux)
        .build()?;
    // The container shares the pod's UTS namespace, whose hostname the infra set;
    // oci-spec's builder would otherwise fill in a default of its own.
    spec.set_hostname(None);
    Ok(spec)
}

/// The capabilities a process may ever hold, by name ("CAP_SYS_ADMIN").
fn bounding_set(process: &Process) -> HashSet<String> {
    process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().as_ref())
        .map(|set| {
            set.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// oci-spec's builders start from its own defaults; drop the ones containerd does not
/// set, so runc's (and the shim's) apply: rlimits, and an AppArmor/SELinux label
/// (`lsm` sets those that are asked for).
fn without_builder_defaults(mut process: Process) -> Process {
    process
        .set_rlimits(None)
        .set_apparmor_profile(None)
        .set_selinux_label(None);
    process
}
