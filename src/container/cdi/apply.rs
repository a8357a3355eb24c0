//! Applies resolved CDI edits to a container's OCI spec, after berth built the
//! rest of it (containerd applies CDI last too): device nodes into `linux.devices`
//! and the device cgroup, mounts, env, hooks and additional groups.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    HookBuilder, Hooks, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    Mount as OciMount, MountBuilder, Spec,
};

use super::CdiError;
use super::spec::{ContainerEdits, DeviceNode, Hook, Mount};
use crate::spec::{DeviceKind, DeviceLookup, HostDevice};

/// Applies each device's edits in order; `lookup` fills in what a device node
/// leaves out (type, major/minor, mode, owner) from the host's node.
pub fn apply(
    spec: &mut Spec,
    edits: &[(String, ContainerEdits)],
    lookup: &dyn DeviceLookup,
) -> Result<(), CdiError> {
    for (name, e) in edits {
        let invalid = |what: String| CdiError::Invalid(format!("CDI device {name:?}: {what}"));
        for node in &e.device_nodes {
            let (device, access) = device_node(node, lookup).map_err(invalid)?;
            add_device(spec, device, &access).map_err(|e| invalid(e.to_string()))?;
        }
        for mount in &e.mounts {
            add_mount(spec, mount).map_err(|e| invalid(e.to_string()))?;
        }
        for hook in &e.hooks {
            add_hook(spec, hook).map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(process) = spec.process_mut() {
            let env = process.env_mut().get_or_insert_with(Vec::new);
            for var in &e.env {
                set_env(env, var);
            }
            let gids = process
                .user_mut()
                .additional_gids_mut()
                .get_or_insert_with(Vec::new);
            for gid in &e.additional_gids {
                // Group 0 is never added by a device, as in the CDI library.
                if *gid != 0 && !gids.contains(gid) {
                    gids.push(*gid);
                }
            }
        }
    }
    Ok(())
}

/// The node as the container gets it, and its cgroup access.
fn device_node(
    node: &DeviceNode,
    lookup: &dyn DeviceLookup,
) -> Result<(LinuxDevice, String), String> {
    let host_path = if node.host_path.is_empty() {
        &node.path
    } else {
        &node.host_path
    };
    let given = |x: Option<i64>| x.filter(|&v| v != 0);
    // As the CDI library: a type and a major number (or a fifo) need no host node.
    let complete = !node.kind.is_empty() && (node.kind == "p" || given(node.major).is_some());
    let host = if complete {
        None
    } else {
        Some(host_node(Path::new(host_path), lookup)?)
    };
    let host_kind = host.as_ref().map(|h| match h.kind {
        DeviceKind::Char => "c",
        DeviceKind::Block => "b",
        DeviceKind::Fifo => "p",
    });
    let kind = match (node.kind.as_str(), host_kind) {
        ("", Some(k)) => k,
        ("u", Some("c")) | ("u", None) => "u",
        (k, Some(h)) if k != h => {
            return Err(format!(
                "device node {:?}: type {k:?}, but {host_path} on the host is {h:?}",
                node.path
            ));
        }
        (k, _) => k,
    };
    let (major, minor) = match (&host, given(node.major)) {
        (Some(h), None) => (h.major, h.minor),
        _ => (node.major.unwrap_or(0), node.minor.unwrap_or(0)),
    };
    let mut builder = LinuxDeviceBuilder::default()
        .path(PathBuf::from(&node.path))
        .typ(match kind {
            "b" => LinuxDeviceType::B,
            "p" => LinuxDeviceType::P,
            "u" => LinuxDeviceType::U,
            _ => LinuxDeviceType::C,
        })
        .major(major)
        .minor(minor);
    if let Some(mode) = node.file_mode.or(host.as_ref().map(|h| h.file_mode)) {
        builder = builder.file_mode(mode);
    }
    if let Some(uid) = node.uid.or(host.as_ref().map(|h| h.uid)) {
        builder = builder.uid(uid);
    }
    if let Some(gid) = node.gid.or(host.as_ref().map(|h| h.gid)) {
        builder = builder.gid(gid);
    }
    let device = builder.build().map_err(|e| e.to_string())?;
    let access = if node.permissions.is_empty() {
        "rwm".to_string()
    } else {
        node.permissions.clone()
    };
    Ok((device, access))
}

fn host_node(path: &Path, lookup: &dyn DeviceLookup) -> Result<HostDevice, String> {
    let found = lookup
        .lookup(path)
        .map_err(|e| format!("device node {}: {e}", path.display()))?;
    match <[HostDevice; 1]>::try_from(found) {
        Ok([device]) if device.path == path => Ok(device),
        _ => Err(format!("{} is not a device node", path.display())),
    }
}

/// Adds (or replaces, by container path) the node, and allows it in the device
/// cgroup; fifos need no cgroup rule.
fn add_device(
    spec: &mut Spec,
    device: LinuxDevice,
    access: &str,
) -> Result<(), oci_spec::OciSpecError> {
    let Some(linux) = spec.linux_mut() else {
        return Ok(());
    };
    let rule = (device.typ() != LinuxDeviceType::P)
        .then(|| {
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(match device.typ() {
                    LinuxDeviceType::U => LinuxDeviceType::C,
                    t => t,
                })
                .major(device.major())
                .minor(device.minor())
                .access(access.to_string())
                .build()
        })
        .transpose()?;
    let devices = linux.devices_mut().get_or_insert_with(Vec::new);
    devices.retain(|d| d.path() != device.path());
    devices.push(device);
    if let Some(rule) = rule
        && let Some(resources) = linux.resources_mut()
    {
        resources
            .devices_mut()
            .get_or_insert_with(Vec::new)
            .push(rule);
    }
    Ok(())
}

/// Adds the mount, replacing one at the same container path.
fn add_mount(spec: &mut Spec, m: &Mount) -> Result<(), oci_spec::OciSpecError> {
    let mut builder = MountBuilder::default()
        .destination(PathBuf::from(&m.container_path))
        .source(PathBuf::from(&m.host_path))
        .typ(if m.kind.is_empty() { "bind" } else { &m.kind });
    let options = if m.options.is_empty() && m.kind.is_empty() {
        vec!["bind".to_string()]
    } else {
        m.options.clone()
    };
    builder = builder.options(options);
    let mount = builder.build()?;
    let mounts: &mut Vec<OciMount> = spec.mounts_mut().get_or_insert_with(Vec::new);
    mounts.retain(|x| x.destination() != mount.destination());
    mounts.push(mount);
    Ok(())
}

fn add_hook(spec: &mut Spec, h: &Hook) -> Result<(), oci_spec::OciSpecError> {
    let mut builder = HookBuilder::default().path(PathBuf::from(&h.path));
    if !h.args.is_empty() {
        builder = builder.args(h.args.clone());
    }
    if !h.env.is_empty() {
        builder = builder.env(h.env.clone());
    }
    if let Some(timeout) = h.timeout {
        builder = builder.timeout(timeout);
    }
    let hook = builder.build()?;
    let hooks: &mut Hooks = spec.hooks_mut().get_or_insert_with(Hooks::default);
    #[allow(deprecated)] // CDI still names prestart hooks; runc still runs them
    let list = match h.hook_name.as_str() {
        "prestart" => hooks.prestart_mut(),
        "createRuntime" => hooks.create_runtime_mut(),
        "createContainer" => hooks.create_container_mut(),
        "startContainer" => hooks.start_container_mut(),
        "poststart" => hooks.poststart_mut(),
        _ => hooks.poststop_mut(),
    };
    list.get_or_insert_with(Vec::new).push(hook);
    Ok(())
}

/// Sets `KEY=value`, replacing an earlier value of the key.
fn set_env(env: &mut Vec<String>, var: &str) {
    let key = var.split_once('=').map_or(var, |(k, _)| k);
    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
    env.push(var.to_string());
}
