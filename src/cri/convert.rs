//! CRI v1 container and sandbox configs -> berth's domain configs. The one place these
//! protobuf messages are read field by field; every value the kubelet could get wrong
//! is checked here and refused with InvalidArgument naming the field.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_cri::v1 as cri;

use crate::domain::config::{
    Capabilities, ContainerConfig, Device, DnsConfig, HugepageLimit, LinuxContainerConfig,
    LinuxSandboxConfig, Mount, MountPropagation, NamespaceMode, NamespaceOptions, PortMapping,
    Protocol, Resources, SandboxConfig, SandboxSecurityContext, SeccompProfile, SecurityContext,
    SupplementalGroupsPolicy,
};
use crate::error::{Error, quote};

mod fields;
mod lsm;

fn invalid(field: &str, problem: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{field}: {problem}"))
}

impl TryFrom<&cri::ContainerConfig> for ContainerConfig {
    type Error = Error;

    fn try_from(c: &cri::ContainerConfig) -> Result<Self, Error> {
        let metadata = c
            .metadata
            .as_ref()
            .ok_or_else(|| invalid("metadata", "missing"))?;
        fields::name("metadata.name", &metadata.name)?;
        let linux = c.linux.clone().unwrap_or_default();
        fields::log_path("log_path", &c.log_path)?;
        for (i, arg) in c.command.iter().enumerate() {
            fields::text(&format!("command[{i}]"), arg)?;
        }
        for (i, arg) in c.args.iter().enumerate() {
            fields::text(&format!("args[{i}]"), arg)?;
        }
        for (i, kv) in c.envs.iter().enumerate() {
            fields::env(&format!("envs[{i}]"), &kv.key, &kv.value)?;
        }
        if !c.working_dir.is_empty() {
            fields::container_path("working_dir", &c.working_dir)?;
        }
        let annotations: BTreeMap<String, String> = c.annotations.clone().into_iter().collect();
        let cdi_names: Vec<String> = c.cdi_devices.iter().map(|d| d.name.clone()).collect();
        let cdi_devices = crate::container::cdi::names::requested(&cdi_names, &annotations)
            .map_err(|(field, problem)| invalid(&field, problem))?;
        let image = c.image.clone().unwrap_or_default();
        Ok(ContainerConfig {
            name: metadata.name.clone(),
            attempt: metadata.attempt,
            image: image.image,
            user_specified_image: image.user_specified_image,
            image_runtime_handler: image.runtime_handler,
            cdi_devices,
            command: c.command.clone(),
            args: c.args.clone(),
            working_dir: c.working_dir.clone(),
            envs: c
                .envs
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect(),
            mounts: c
                .mounts
                .iter()
                .enumerate()
                .map(|(i, m)| mount(i, m))
                .collect::<Result<_, _>>()?,
            devices: c
                .devices
                .iter()
                .enumerate()
                .map(|(i, d)| device(i, d))
                .collect::<Result<_, _>>()?,
            labels: c.labels.clone().into_iter().collect(),
            annotations,
            log_path: c.log_path.clone(),
            stdin: c.stdin,
            stdin_once: c.stdin_once,
            tty: c.tty,
            linux: LinuxContainerConfig {
                resources: resources(&linux.resources.unwrap_or_default())?,
                security_context: security_context(&linux.security_context.unwrap_or_default())?,
            },
        })
    }
}

impl TryFrom<&cri::PodSandboxConfig> for SandboxConfig {
    type Error = Error;

    fn try_from(c: &cri::PodSandboxConfig) -> Result<Self, Error> {
        let metadata = c
            .metadata
            .as_ref()
            .ok_or_else(|| invalid("metadata", "missing"))?;
        for (field, value) in [
            ("metadata.name", &metadata.name),
            ("metadata.namespace", &metadata.namespace),
            ("metadata.uid", &metadata.uid),
        ] {
            fields::name(field, value)?;
        }
        fields::hostname("hostname", &c.hostname)?;
        let dns = c.dns_config.clone().unwrap_or_default();
        for (list, entries) in [
            ("dns_config.servers", &dns.servers),
            ("dns_config.searches", &dns.searches),
            ("dns_config.options", &dns.options),
        ] {
            for (i, entry) in entries.iter().enumerate() {
                fields::dns_word(&format!("{list}[{i}]"), entry)?;
            }
        }
        let linux = c.linux.clone().unwrap_or_default();
        fields::log_directory("log_directory", &c.log_directory)?;
        fields::cgroup_parent("linux.cgroup_parent", &linux.cgroup_parent)?;
        let sc = linux.security_context.unwrap_or_default();
        let field = "linux.security_context";
        let namespaces = namespace_options(field, sc.namespace_options.as_ref())?;
        sysctls(&linux.sysctls, &namespaces)?;
        host_network_hostname(&c.hostname, &namespaces)?;
        Ok(SandboxConfig {
            name: metadata.name.clone(),
            uid: metadata.uid.clone(),
            namespace: metadata.namespace.clone(),
            attempt: metadata.attempt,
            hostname: c.hostname.clone(),
            log_directory: c.log_directory.clone(),
            dns: DnsConfig {
                servers: dns.servers,
                searches: dns.searches,
                options: dns.options,
            },
            port_mappings: c
                .port_mappings
                .iter()
                .enumerate()
                .map(|(i, p)| port_mapping(i, p))
                .collect::<Result<_, _>>()?,
            labels: c.labels.clone().into_iter().collect(),
            annotations: c.annotations.clone().into_iter().collect(),
            linux: LinuxSandboxConfig {
                cgroup_parent: linux.cgroup_parent,
                sysctls: linux.sysctls.into_iter().collect(),
                security_context: SandboxSecurityContext {
                    namespace_options: namespaces,
                    privileged: sc.privileged,
                    run_as_user: sc.run_as_user.map(|v| v.value),
                    run_as_group: sc.run_as_group.map(|v| v.value),
                    readonly_rootfs: sc.readonly_rootfs,
                    supplemental_groups: sc.supplemental_groups,
                    #[allow(deprecated)] // the kubelet still fills the old field
                    seccomp: seccomp(field, sc.seccomp.as_ref(), &sc.seccomp_profile_path)?,
                    apparmor: lsm::apparmor(field, sc.apparmor.as_ref(), "")?,
                    selinux: lsm::selinux(field, sc.selinux_options.as_ref())?,
                },
            },
        })
    }
}

/// A pod on the host's network shares the host's UTS namespace too: a hostname
/// of its own would be written to its /etc/hostname while `hostname` says the
/// node's, two names for one pod. (runc refuses it as well, "unable to set
/// hostname without a new UTS namespace", which containerd passes on.)
fn host_network_hostname(hostname: &str, namespaces: &NamespaceOptions) -> Result<(), Error> {
    if namespaces.network == NamespaceMode::Node && !hostname.is_empty() {
        return Err(invalid(
            "hostname",
            format!(
                "{} cannot be set for a pod on the host's network \
                 (linux.security_context.namespace_options.network is NODE): \
                 it shares the node's hostname",
                quote(hostname)
            ),
        ));
    }
    Ok(())
}

/// A pod's sysctls: kernel names, namespaced, and only in namespaces the pod does
/// not share with the node (runc's rule, checked before runc sees them).
fn sysctls(
    sysctls: &std::collections::HashMap<String, String>,
    namespaces: &NamespaceOptions,
) -> Result<(), Error> {
    for (key, value) in sysctls {
        fields::kernel_key("linux.sysctls", key, value)?;
        let field = format!("linux.sysctls[{}]", quote(key));
        let shared = match fields::sysctl_namespace(&field, key)? {
            fields::SysctlNamespace::Ipc => namespaces.ipc == NamespaceMode::Node,
            // A pod on the node's network has the node's UTS namespace too.
            fields::SysctlNamespace::Network | fields::SysctlNamespace::Uts => {
                namespaces.network == NamespaceMode::Node
            }
        };
        if shared {
            return Err(invalid(
                &field,
                "the pod shares that namespace with the node; setting it would change the node",
            ));
        }
    }
    Ok(())
}

fn mount(i: usize, m: &cri::Mount) -> Result<Mount, Error> {
    let field = |f: &str| format!("mounts[{i}].{f}");
    if m.container_path.is_empty() {
        return Err(invalid(&field("container_path"), "empty"));
    }
    if !m.container_path.starts_with('/') {
        return Err(invalid(
            &field("container_path"),
            format!("{} is not absolute", quote(&m.container_path)),
        ));
    }
    fields::host_path(&field("container_path"), &m.container_path)?;
    if std::path::Path::new(&m.container_path).components().count() == 1 {
        return Err(invalid(
            &field("container_path"),
            "a mount over the container's root filesystem",
        ));
    }
    let image = m.image.as_ref().map_or("", |i| i.image.as_str());
    if image.is_empty() {
        fields::host_path(&field("host_path"), &m.host_path)?;
    } else if !m.host_path.is_empty() {
        return Err(invalid(
            &field("host_path"),
            "set together with image: a mount is a host path or an image volume",
        ));
    } else {
        fields::text(&field("image.image"), image)?;
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(invalid(
            &field("uidMappings"),
            "id-mapped mounts are not supported",
        ));
    }
    let propagation = match cri::MountPropagation::try_from(m.propagation) {
        Ok(cri::MountPropagation::PropagationPrivate) => MountPropagation::Private,
        Ok(cri::MountPropagation::PropagationHostToContainer) => MountPropagation::HostToContainer,
        Ok(cri::MountPropagation::PropagationBidirectional) => MountPropagation::Bidirectional,
        Err(_) => return Err(invalid(&field("propagation"), m.propagation)),
    };
    if m.recursive_read_only && !m.readonly {
        return Err(invalid(
            &field("recursive_read_only"),
            "needs readonly: a recursive read-only mount cannot be writable",
        ));
    }
    if m.recursive_read_only && propagation != MountPropagation::Private {
        return Err(invalid(
            &field("recursive_read_only"),
            "needs private propagation: submounts arriving later could not be made read-only",
        ));
    }
    Ok(Mount {
        container_path: m.container_path.clone(),
        host_path: m.host_path.clone(),
        readonly: m.readonly,
        recursive_read_only: m.recursive_read_only,
        propagation,
        image: image.to_string(),
    })
}

fn device(i: usize, d: &cri::Device) -> Result<Device, Error> {
    let field = |f: &str| format!("devices[{i}].{f}");
    fields::host_path(&field("host_path"), &d.host_path)?;
    if !d.container_path.is_empty() {
        fields::host_path(&field("container_path"), &d.container_path)?;
    }
    if !d.permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(invalid(
            &field("permissions"),
            format!("{} is not a subset of \"rwm\"", quote(&d.permissions)),
        ));
    }
    Ok(Device {
        // The kubelet may leave the container path empty to mean "same as on the host".
        container_path: if d.container_path.is_empty() {
            d.host_path.clone()
        } else {
            d.container_path.clone()
        },
        host_path: d.host_path.clone(),
        permissions: if d.permissions.is_empty() {
            "rwm".into()
        } else {
            d.permissions.clone()
        },
    })
}

pub(super) fn resources(r: &cri::LinuxContainerResources) -> Result<Resources, Error> {
    let field = |f: &str| format!("linux.resources.{f}");
    for (name, value) in [
        ("cpu_period", r.cpu_period),
        ("cpu_shares", r.cpu_shares),
        ("memory_limit_in_bytes", r.memory_limit_in_bytes),
    ] {
        if value < 0 {
            return Err(invalid(&field(name), format!("{value} is negative")));
        }
    }
    // -1 is "no limit" for both; anything lower is a mistake.
    if r.cpu_quota < -1 {
        return Err(invalid(&field("cpu_quota"), r.cpu_quota));
    }
    fields::cpu_and_memory(&field, r)?;
    if r.memory_swap_limit_in_bytes < -1 {
        return Err(invalid(
            &field("memory_swap_limit_in_bytes"),
            r.memory_swap_limit_in_bytes,
        ));
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(invalid(
            &field("oom_score_adj"),
            format!("{} is outside [-1000, 1000]", r.oom_score_adj),
        ));
    }
    fields::cpuset(&field("cpuset_cpus"), &r.cpuset_cpus)?;
    fields::cpuset(&field("cpuset_mems"), &r.cpuset_mems)?;
    for (key, value) in &r.unified {
        fields::kernel_key(&field("unified"), key, value)?;
    }
    let hugepage_limits = r
        .hugepage_limits
        .iter()
        .enumerate()
        .map(|(i, h)| {
            fields::page_size(
                &field(&format!("hugepage_limits[{i}].page_size")),
                &h.page_size,
            )?;
            Ok::<_, Error>(HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits,
        unified: r.unified.clone().into_iter().collect(),
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
    })
}

fn security_context(s: &cri::LinuxContainerSecurityContext) -> Result<SecurityContext, Error> {
    let field = "linux.security_context";
    let caps = s.capabilities.clone().unwrap_or_default();
    let supplemental_groups_policy =
        match cri::SupplementalGroupsPolicy::try_from(s.supplemental_groups_policy) {
            Ok(cri::SupplementalGroupsPolicy::Merge) => SupplementalGroupsPolicy::Merge,
            Ok(cri::SupplementalGroupsPolicy::Strict) => SupplementalGroupsPolicy::Strict,
            Err(_) => {
                return Err(invalid(
                    &format!("{field}.supplemental_groups_policy"),
                    s.supplemental_groups_policy,
                ));
            }
        };
    if !s.run_as_username.is_empty() {
        fields::name(&format!("{field}.run_as_username"), &s.run_as_username)?;
    }
    for (list, paths) in [
        ("masked_paths", &s.masked_paths),
        ("readonly_paths", &s.readonly_paths),
    ] {
        for (i, path) in paths.iter().enumerate() {
            fields::container_path(&format!("{field}.{list}[{i}]"), path)?;
        }
    }
    if s.run_as_group.is_some() && s.run_as_user.is_none() && s.run_as_username.is_empty() {
        return Err(invalid(
            &format!("{field}.run_as_group"),
            "set without run_as_user or run_as_username",
        ));
    }
    Ok(SecurityContext {
        capabilities: Capabilities {
            add_capabilities: caps.add_capabilities,
            drop_capabilities: caps.drop_capabilities,
            add_ambient_capabilities: caps.add_ambient_capabilities,
        },
        privileged: s.privileged,
        namespace_options: namespace_options(field, s.namespace_options.as_ref())?,
        run_as_user: s.run_as_user.as_ref().map(|v| v.value),
        run_as_group: s.run_as_group.as_ref().map(|v| v.value),
        run_as_username: s.run_as_username.clone(),
        readonly_rootfs: s.readonly_rootfs,
        supplemental_groups: s.supplemental_groups.clone(),
        supplemental_groups_policy,
        no_new_privs: s.no_new_privs,
        masked_paths: s.masked_paths.clone(),
        readonly_paths: s.readonly_paths.clone(),
        #[allow(deprecated)] // the kubelet still fills the old field
        seccomp: seccomp(field, s.seccomp.as_ref(), &s.seccomp_profile_path)?,
        #[allow(deprecated)] // the kubelet still fills the old field
        apparmor: lsm::apparmor(field, s.apparmor.as_ref(), &s.apparmor_profile)?,
        selinux: lsm::selinux(field, s.selinux_options.as_ref())?,
    })
}

fn namespace_options(
    parent: &str,
    n: Option<&cri::NamespaceOption>,
) -> Result<NamespaceOptions, Error> {
    let Some(n) = n else {
        return Ok(NamespaceOptions::default());
    };
    let field = |f: &str| format!("{parent}.namespace_options.{f}");
    let options = NamespaceOptions {
        network: namespace_mode(&field("network"), n.network)?,
        pid: namespace_mode(&field("pid"), n.pid)?,
        ipc: namespace_mode(&field("ipc"), n.ipc)?,
        target_id: n.target_id.clone(),
        userns: user_namespace(&field("userns_options"), n.userns_options.as_ref())?,
    };
    if options.userns.is_some() && options.network == NamespaceMode::Node {
        // The pod's user namespace must own its network namespace (sysfs, setns).
        return Err(invalid(
            &field("userns_options"),
            "a pod on the host network cannot have a user namespace of its own",
        ));
    }
    if options.network == NamespaceMode::Target || options.ipc == NamespaceMode::Target {
        return Err(invalid(&field("network"), "TARGET is only valid for pid"));
    }
    if options.pid == NamespaceMode::Target && options.target_id.is_empty() {
        return Err(invalid(&field("target_id"), "empty with pid TARGET"));
    }
    Ok(options)
}

/// NODE (or nothing) is the host's user namespace; POD is the pod's own, with
/// mappings that must hold up; CONTAINER and TARGET are not in the CRI contract
/// for user namespaces (the kubelet never sends them).
fn user_namespace(
    field: &str,
    userns: Option<&cri::UserNamespace>,
) -> Result<Option<crate::userns::UserNamespace>, Error> {
    let Some(userns) = userns else {
        return Ok(None);
    };
    let ids = |list: &[cri::IdMapping]| {
        list.iter()
            .map(|m| crate::userns::IdMapping {
                container_id: m.container_id,
                host_id: m.host_id,
                length: m.length,
            })
            .collect()
    };
    match namespace_mode(&format!("{field}.mode"), userns.mode)? {
        NamespaceMode::Node if userns.uids.is_empty() && userns.gids.is_empty() => Ok(None),
        NamespaceMode::Node => Err(invalid(
            &format!("{field}.uids"),
            "mappings with mode NODE: the host's namespace maps nothing",
        )),
        NamespaceMode::Pod => {
            let mapped = crate::userns::UserNamespace {
                uids: ids(&userns.uids),
                gids: ids(&userns.gids),
            };
            mapped
                .check()
                .map_err(|why| Error::InvalidArgument(format!("{field}.{why}")))?;
            Ok(Some(mapped))
        }
        mode => Err(invalid(
            &format!("{field}.mode"),
            format!("{mode:?}: a user namespace is the pod's (POD) or the host's (NODE)"),
        )),
    }
}

fn namespace_mode(field: &str, mode: i32) -> Result<NamespaceMode, Error> {
    match cri::NamespaceMode::try_from(mode) {
        Ok(cri::NamespaceMode::Pod) => Ok(NamespaceMode::Pod),
        Ok(cri::NamespaceMode::Container) => Ok(NamespaceMode::Container),
        Ok(cri::NamespaceMode::Node) => Ok(NamespaceMode::Node),
        Ok(cri::NamespaceMode::Target) => Ok(NamespaceMode::Target),
        Err(_) => Err(invalid(field, mode)),
    }
}

/// The `seccomp` profile, or else the deprecated `seccomp_profile_path`
/// ("runtime/default", "docker/default", "unconfined", "localhost/<path>").
/// Neither given means unconfined, as in CRI.
fn seccomp(
    parent: &str,
    profile: Option<&cri::SecurityProfile>,
    legacy_path: &str,
) -> Result<SeccompProfile, Error> {
    use cri::security_profile::ProfileType;
    let Some(profile) = profile else {
        return match legacy_path {
            "" | "unconfined" => Ok(SeccompProfile::Unconfined),
            "runtime/default" | "docker/default" => Ok(SeccompProfile::RuntimeDefault),
            path => match path.strip_prefix("localhost/") {
                Some(p) => {
                    fields::host_path(&format!("{parent}.seccomp_profile_path"), p)?;
                    Ok(SeccompProfile::Localhost(PathBuf::from(p)))
                }
                _ => Err(invalid(
                    &format!("{parent}.seccomp_profile_path"),
                    format!("{} is not a known profile", quote(path)),
                )),
            },
        };
    };
    let field = format!("{parent}.seccomp");
    match ProfileType::try_from(profile.profile_type) {
        Ok(ProfileType::RuntimeDefault) => Ok(SeccompProfile::RuntimeDefault),
        Ok(ProfileType::Unconfined) => Ok(SeccompProfile::Unconfined),
        Ok(ProfileType::Localhost) => {
            fields::host_path(&format!("{field}.localhost_ref"), &profile.localhost_ref)?;
            Ok(SeccompProfile::Localhost(PathBuf::from(
                &profile.localhost_ref,
            )))
        }
        Err(_) => Err(invalid(
            &format!("{field}.profile_type"),
            profile.profile_type,
        )),
    }
}

fn port_mapping(i: usize, p: &cri::PortMapping) -> Result<PortMapping, Error> {
    let field = |f: &str| format!("port_mappings[{i}].{f}");
    let protocol = match cri::Protocol::try_from(p.protocol) {
        Ok(cri::Protocol::Tcp) => Protocol::Tcp,
        Ok(cri::Protocol::Udp) => Protocol::Udp,
        Ok(cri::Protocol::Sctp) => Protocol::Sctp,
        Err(_) => return Err(invalid(&field("protocol"), p.protocol)),
    };
    for (name, port) in [
        ("container_port", p.container_port),
        ("host_port", p.host_port),
    ] {
        if !(0..=65535).contains(&port) {
            return Err(invalid(&field(name), format!("{port} is not a port")));
        }
    }
    if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid(
            &field("host_ip"),
            format!("{} is not an IP address", quote(&p.host_ip)),
        ));
    }
    Ok(PortMapping {
        protocol,
        container_port: p.container_port,
        host_port: p.host_port,
        host_ip: p.host_ip.clone(),
    })
}

/// Labels and annotations as CRI carries them.
pub(super) fn map(
    m: &std::collections::BTreeMap<String, String>,
) -> std::collections::HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests;
