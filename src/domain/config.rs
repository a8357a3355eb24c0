//! What berth needs from a CRI `ContainerConfig` and `PodSandboxConfig`, as plain domain
//! types. `cri::convert` fills them from the protobuf messages; the spec generator and
//! the store read them. Field names mirror CRI v1 (cri-api 1.32) so the mapping is
//! obvious; fields berth does not act on (SELinux, AppArmor, Windows, CDI, overhead)
//! are left out rather than carried unread.
//!
//! Everything here is persisted with the container or sandbox record, so every struct
//! takes `#[serde(default)]`: a record written before a field existed still loads.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A container as the kubelet asked for it (CRI `ContainerConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    /// `metadata.name`
    pub name: String,
    /// `metadata.attempt`
    pub attempt: u32,
    /// `image.image`: the image reference or id the kubelet resolved.
    pub image: String,
    /// `image.user_specified_image`: the image as the pod spec names it, which
    /// ContainerStatus reports back; empty when the kubelet sent none.
    pub user_specified_image: String,
    /// Fully qualified CDI device names (`vendor.com/class=name`), from `cdi_devices`
    /// and the `cdi.k8s.io/*` annotations, in request order without repeats.
    pub cdi_devices: Vec<String>,
    /// `image.runtime_handler`: the handler the image was pulled for, echoed
    /// in ContainerStatus as it was asked.
    pub image_runtime_handler: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    /// In the order given; a later entry with the same key wins.
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Relative to the sandbox's `log_directory`.
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub linux: LinuxContainerConfig,
}

/// A bind mount from the host, or an image volume (CRI `Mount`). SELinux
/// relabelling and id-mapped mounts are not supported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mount {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    /// Submounts read-only too (`rro`); needs `readonly` and private propagation.
    pub recursive_read_only: bool,
    pub propagation: MountPropagation,
    /// `image.image`: for an image volume, the image as the kubelet named it (id,
    /// digest or tag); `host_path` is then empty. Mounted read-only, noexec.
    pub image: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountPropagation {
    /// "rprivate": nothing propagates either way.
    #[default]
    Private,
    /// "rslave": host mounts appear in the container.
    HostToContainer,
    /// "rshared": both ways.
    Bidirectional,
}

/// A host device made visible in the container (CRI `Device`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Device {
    pub container_path: String,
    pub host_path: String,
    /// cgroup access: some of "r", "w", "m".
    pub permissions: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinuxContainerConfig {
    pub resources: Resources,
    pub security_context: SecurityContext,
}

/// CRI `LinuxContainerResources`. Zero means "not set", as in CRI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub cpu_period: i64,
    /// -1 means unlimited.
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub hugepage_limits: Vec<HugepageLimit>,
    /// cgroup v2 files to write, e.g. "memory.high".
    pub unified: BTreeMap<String, String>,
    pub memory_swap_limit_in_bytes: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HugepageLimit {
    /// "2MB", "1GB", ...
    pub page_size: String,
    pub limit: u64,
}

/// CRI `LinuxContainerSecurityContext`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityContext {
    pub capabilities: Capabilities,
    pub privileged: bool,
    pub namespace_options: NamespaceOptions,
    pub run_as_user: Option<i64>,
    /// Only meaningful with `run_as_user` or `run_as_username`.
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    pub supplemental_groups_policy: SupplementalGroupsPolicy,
    pub no_new_privs: bool,
    /// Empty means "the defaults" (see `spec`): protobuf cannot tell unset from empty.
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub seccomp: SeccompProfile,
    pub apparmor: AppArmorProfile,
    pub selinux: Option<SelinuxOptions>,
}

/// Which AppArmor profile to confine a process with (CRI `apparmor`, or the
/// deprecated `apparmor_profile` string).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppArmorProfile {
    /// Nothing asked: unconfined, as berth loads no default profile (containerd
    /// would apply its own here).
    #[default]
    Unset,
    RuntimeDefault,
    /// A profile loaded on the node, by name.
    Localhost(String),
    Unconfined,
}

/// CRI `SELinuxOption`: the parts of a label; empty parts take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SelinuxOptions {
    pub user: String,
    pub role: String,
    pub r#type: String,
    pub level: String,
}

/// Capability names as the kubelet sends them ("NET_ADMIN", "ALL"), without `CAP_`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub add_ambient_capabilities: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupplementalGroupsPolicy {
    /// The image's /etc/group memberships of the user, plus `supplemental_groups`.
    #[default]
    Merge,
    /// Only `supplemental_groups`.
    Strict,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamespaceOptions {
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
    /// The container whose PID namespace to join when `pid` is `Target`.
    pub target_id: String,
    /// The pod's own user namespace (CRI mode POD); `None` is the host's (NODE).
    pub userns: Option<crate::userns::UserNamespace>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceMode {
    /// Shared by the pod: the infra container's.
    #[default]
    Pod,
    /// The container's own.
    Container,
    /// The host's.
    Node,
    /// Another container's (`target_id`); PID only.
    Target,
}

/// Which seccomp filter to apply. CRI's default (no profile given) is unconfined.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    #[default]
    Unconfined,
    RuntimeDefault,
    /// A profile file on the node, by absolute path.
    Localhost(PathBuf),
}

/// A pod as the kubelet asked for it (CRI `PodSandboxConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxConfig {
    /// `metadata.name`
    pub name: String,
    /// `metadata.uid`
    pub uid: String,
    /// `metadata.namespace`
    pub namespace: String,
    /// `metadata.attempt`
    pub attempt: u32,
    pub hostname: String,
    pub log_directory: String,
    pub dns: DnsConfig,
    pub port_mappings: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub linux: LinuxSandboxConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: i32,
    pub host_port: i32,
    pub host_ip: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// CRI `LinuxPodSandboxConfig`; overhead and resources are informational for the
/// runtime and not kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinuxSandboxConfig {
    pub cgroup_parent: String,
    pub sysctls: BTreeMap<String, String>,
    pub security_context: SandboxSecurityContext,
}

/// CRI `LinuxSandboxSecurityContext`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxSecurityContext {
    pub namespace_options: NamespaceOptions,
    /// Allows privileged containers in the pod; the infra container itself keeps the
    /// default capabilities.
    pub privileged: bool,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    pub seccomp: SeccompProfile,
    pub apparmor: AppArmorProfile,
    pub selinux: Option<SelinuxOptions>,
}

impl SandboxConfig {
    /// Whether the pod uses the host's network namespace.
    pub fn host_network(&self) -> bool {
        self.linux.security_context.namespace_options.network == NamespaceMode::Node
    }
}
