//! The CDI spec file format (JSON or YAML), parsed leniently: unknown fields are
//! ignored, as the CDI spec asks of consumers, so a spec written for a newer minor
//! version still loads. A file is checked whole when it is read; one that fails
//! is skipped entirely (as the reference Go library does), never half applied.

use serde::Deserialize;

use super::names;

/// Spec versions berth understands: every released one up to the current (1.1.0).
/// Later versions may carry edits berth would silently drop, so they are refused.
const KNOWN_VERSIONS: [&str; 10] = [
    "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
];

/// Hook names of the OCI runtime spec.
const HOOK_NAMES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SpecFile {
    pub cdi_version: String,
    pub kind: String,
    pub devices: Vec<DeviceSpec>,
    /// Applied with any device of the file.
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceSpec {
    pub name: String,
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerEdits {
    /// "KEY=value" entries.
    pub env: Vec<String>,
    pub device_nodes: Vec<DeviceNode>,
    pub hooks: Vec<Hook>,
    pub mounts: Vec<Mount>,
    #[serde(rename = "additionalGIDs", alias = "additionalGids")]
    pub additional_gids: Vec<u32>,
    /// Edits berth cannot apply; a device that carries them is refused rather than
    /// given without them.
    pub intel_rdt: Option<serde_json::Value>,
    pub net_devices: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceNode {
    /// Where the node appears in the container.
    pub path: String,
    /// The node on the host; empty means `path`.
    pub host_path: String,
    /// "c", "b", "u" or "p"; empty means the host node's.
    #[serde(rename = "type")]
    pub kind: String,
    /// Taken from the host node when unset (or 0 together with minor).
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub file_mode: Option<u32>,
    /// cgroup access, a subset of "rwm"; empty means "rwm".
    pub permissions: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    pub options: Vec<String>,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub timeout: Option<i64>,
}

/// Parses a spec file's bytes; `yaml` picks the format by the file's extension.
pub fn parse(bytes: &[u8], yaml: bool) -> Result<SpecFile, String> {
    let spec: SpecFile = if yaml {
        serde_yaml_ng::from_slice(bytes).map_err(|e| e.to_string())?
    } else {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?
    };
    validate(&spec)?;
    Ok(spec)
}

fn validate(spec: &SpecFile) -> Result<(), String> {
    let version = spec.cdi_version.trim_start_matches('v');
    if !KNOWN_VERSIONS.contains(&version) {
        return Err(format!(
            "cdiVersion {:?} is not one berth knows ({} to {})",
            spec.cdi_version,
            KNOWN_VERSIONS[0],
            KNOWN_VERSIONS[KNOWN_VERSIONS.len() - 1]
        ));
    }
    names::parse_kind(&spec.kind)?;
    validate_edits(&spec.container_edits).map_err(|e| format!("containerEdits: {e}"))?;
    if spec.devices.is_empty() {
        return Err("no devices".into());
    }
    for (i, device) in spec.devices.iter().enumerate() {
        names::check_device_name(&device.name).map_err(|e| format!("devices[{i}]: {e}"))?;
        if spec.devices[..i].iter().any(|d| d.name == device.name) {
            return Err(format!("device {:?} is defined twice", device.name));
        }
        validate_edits(&device.container_edits)
            .map_err(|e| format!("device {:?}: {e}", device.name))?;
    }
    Ok(())
}

fn validate_edits(edits: &ContainerEdits) -> Result<(), String> {
    for env in &edits.env {
        if env.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(format!("env {env:?} is not KEY=value"));
        }
    }
    for node in &edits.device_nodes {
        if !node.path.starts_with('/') {
            return Err(format!("device node path {:?} is not absolute", node.path));
        }
        if !node.host_path.is_empty() && !node.host_path.starts_with('/') {
            return Err(format!(
                "device node hostPath {:?} is not absolute",
                node.host_path
            ));
        }
        if !matches!(node.kind.as_str(), "" | "c" | "b" | "u" | "p") {
            return Err(format!("device node {:?}: type {:?}", node.path, node.kind));
        }
        if !node
            .permissions
            .chars()
            .all(|c| matches!(c, 'r' | 'w' | 'm'))
        {
            return Err(format!(
                "device node {:?}: permissions {:?} are not a subset of \"rwm\"",
                node.path, node.permissions
            ));
        }
    }
    for mount in &edits.mounts {
        if mount.host_path.is_empty() || !mount.container_path.starts_with('/') {
            return Err(format!(
                "mount {:?} -> {:?}: needs a hostPath and an absolute containerPath",
                mount.host_path, mount.container_path
            ));
        }
    }
    for hook in &edits.hooks {
        if !HOOK_NAMES.contains(&hook.hook_name.as_str()) {
            return Err(format!("hook name {:?}", hook.hook_name));
        }
        if !hook.path.starts_with('/') {
            return Err(format!("hook path {:?} is not absolute", hook.path));
        }
    }
    Ok(())
}
