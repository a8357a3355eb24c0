//! Which OCI runtime the shim drives, from containerd's runc options.
//!
//! CRI passes `containerd.runc.v1.Options` (BinaryName, Root, SystemdCgroup)
//! with Create. The shim saves what it used as `options.json` in the bundle so
//! the `delete` subcommand, run when the shim is gone, drives the same runtime.

use std::path::{Path, PathBuf};

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::oci::Options;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::runtime::RuntimeConfig;

const FILE: &str = "options.json";
const DEFAULT_BINARY: &str = "runc";
/// Where containerd's own runc shim keeps runtime state, so both shims see
/// the same containers.
const DEFAULT_ROOT: &str = "/run/containerd/runc";

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct Saved {
    binary_name: String,
    root: String,
    systemd_cgroup: bool,
}

/// Decodes the options Any of Create (absent or empty: defaults).
pub fn from_any(any: Option<&Any>, namespace: &str) -> Result<RuntimeConfig> {
    let opts = match any {
        Some(a) if !a.value.is_empty() => Options::parse_from_bytes(&a.value)
            .map_err(|e| Error::InvalidArgument(format!("options ({}): {e}", a.type_url)))?,
        _ => Options::default(),
    };
    Ok(resolve(
        &opts.binary_name,
        &opts.root,
        opts.systemd_cgroup,
        namespace,
    ))
}

fn resolve(binary: &str, root: &str, systemd_cgroup: bool, namespace: &str) -> RuntimeConfig {
    RuntimeConfig {
        binary: if binary.is_empty() {
            DEFAULT_BINARY
        } else {
            binary
        }
        .to_string(),
        root: if root.is_empty() {
            Path::new(DEFAULT_ROOT).join(namespace)
        } else {
            Path::new(root).join(namespace)
        },
        systemd_cgroup,
    }
}

pub fn save(bundle: &Path, config: &RuntimeConfig) -> Result<()> {
    let saved = Saved {
        binary_name: config.binary.clone(),
        root: config.root.to_string_lossy().into_owned(),
        systemd_cgroup: config.systemd_cgroup,
    };
    let json = serde_json::to_vec(&saved).unwrap_or_default();
    let path = bundle.join(FILE);
    std::fs::write(&path, json).context(|| format!("write {}", path.display()))
}

/// The runtime a bundle was created with; defaults when never saved.
pub fn load(bundle: &Path, namespace: &str) -> RuntimeConfig {
    let saved: Option<Saved> = std::fs::read(bundle.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match saved {
        Some(s) => RuntimeConfig {
            binary: s.binary_name,
            root: PathBuf::from(s.root),
            systemd_cgroup: s.systemd_cgroup,
        },
        None => resolve("", "", false, namespace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_round_trip() {
        let c = from_any(None, "k8s.io").unwrap();
        assert_eq!(c.binary, "runc");
        assert_eq!(c.root, PathBuf::from("/run/containerd/runc/k8s.io"));

        let opts = Options {
            binary_name: "/usr/bin/crun".into(),
            root: "/run/berth/runc".into(),
            systemd_cgroup: true,
            ..Default::default()
        };
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: opts.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let c = from_any(Some(&any), "ns").unwrap();
        assert_eq!(c.binary, "/usr/bin/crun");
        assert_eq!(c.root, PathBuf::from("/run/berth/runc/ns"));
        assert!(c.systemd_cgroup);

        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &c).unwrap();
        assert_eq!(load(dir.path(), "other"), c);
        assert_eq!(load(&dir.path().join("nope"), "ns").binary, "runc");
    }

    #[test]
    fn garbage_options_are_invalid() {
        let any = Any {
            type_url: "x".into(),
            value: vec![0xff, 0xff, 0xff],
            ..Default::default()
        };
        assert!(matches!(
            from_any(Some(&any), "ns"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
