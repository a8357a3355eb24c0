//! Which OCI runtime the shim drives, from the options Create carries.
//!
//! Two encodings arrive. `containerd.runc.v1.Options` (BinaryName, Root,
//! SystemdCgroup) is what berthd and containerd's runc runtime types send.
//! For any other runtime type, containerd's CRI sends
//! `runtimeoptions.v1.Options`, which only points at a TOML file
//! (`ConfigPath`) or carries one (`ConfigBody`); the shim reads the same three
//! keys from it. The shim saves what it used as `options.json` in the bundle
//! so the `delete` subcommand, run when the shim is gone, drives the same
//! runtime.

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

const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";

/// The keys of a runtime options TOML file, spelled as containerd spells them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct TomlOptions {
    binary_name: String,
    root: String,
    systemd_cgroup: bool,
}

/// Decodes the options Any of Create (absent or empty: defaults).
pub fn from_any(any: Option<&Any>, namespace: &str) -> Result<RuntimeConfig> {
    let Some(a) = any.filter(|a| !a.value.is_empty()) else {
        return Ok(resolve("", "", false, namespace));
    };
    let invalid = |e: String| Error::InvalidArgument(format!("options ({}): {e}", a.type_url));
    let type_name = a.type_url.rsplit('/').next().unwrap_or_default();
    let opts = match type_name {
        RUNC_OPTIONS => {
            let o = Options::parse_from_bytes(&a.value).map_err(|e| invalid(e.to_string()))?;
            TomlOptions {
                binary_name: o.binary_name,
                root: o.root,
                systemd_cgroup: o.systemd_cgroup,
            }
        }
        RUNTIME_OPTIONS => {
            let (path, body) =
                runtime_options_fields(&a.value).ok_or_else(|| invalid("malformed".into()))?;
            let text = if !body.is_empty() {
                String::from_utf8(body).map_err(|e| invalid(e.to_string()))?
            } else if !path.is_empty() {
                std::fs::read_to_string(&path).context(|| format!("read runtime options {path}"))?
            } else {
                String::new()
            };
            toml::from_str(&text).map_err(|e| invalid(e.to_string()))?
        }
        other => return Err(invalid(format!("unsupported options type {other:?}"))),
    };
    Ok(resolve(
        &opts.binary_name,
        &opts.root,
        opts.systemd_cgroup,
        namespace,
    ))
}

/// `ConfigPath` (field 2) and `ConfigBody` (field 3) of a
/// `runtimeoptions.v1.Options`, a message the protos crate does not ship:
/// three length-delimited fields, so a small wire-format reader does.
fn runtime_options_fields(mut buf: &[u8]) -> Option<(String, Vec<u8>)> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let (mut path, mut body) = (String::new(), Vec::new());
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        match key & 7 {
            0 => {
                varint(&mut buf)?;
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let value = buf.get(..len)?;
                buf = &buf[len..];
                match key >> 3 {
                    2 => path = String::from_utf8(value.to_vec()).ok()?,
                    3 => body = value.to_vec(),
                    _ => {}
                }
            }
            _ => return None,
        }
    }
    Some((path, body))
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

    /// A `runtimeoptions.v1.Options` as containerd's CRI encodes it.
    fn runtime_options(path: &str, body: &str) -> Any {
        let mut value = Vec::new();
        for (field, data) in [(1u8, "x"), (2, path), (3, body)] {
            if !data.is_empty() {
                value.push(field << 3 | 2);
                value.push(data.len() as u8);
                value.extend_from_slice(data.as_bytes());
            }
        }
        Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn cri_runtime_options_point_at_toml() {
        let c = from_any(
            Some(&runtime_options(
                "",
                "BinaryName = \"crun\"\nSystemdCgroup = true\n",
            )),
            "k8s.io",
        )
        .unwrap();
        assert_eq!(c.binary, "crun");
        assert!(c.systemd_cgroup);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(&file, "Root = \"/run/x\"\n").unwrap();
        let c = from_any(Some(&runtime_options(file.to_str().unwrap(), "")), "ns").unwrap();
        assert_eq!(
            (c.binary.as_str(), c.root.as_path()),
            ("runc", Path::new("/run/x/ns"))
        );

        let bad = from_any(Some(&runtime_options("", "BinaryName = [")), "ns");
        assert!(matches!(bad, Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn garbage_options_are_invalid() {
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0xff, 0xff, 0xff],
            ..Default::default()
        };
        assert!(matches!(
            from_any(Some(&any), "ns"),
            Err(Error::InvalidArgument(_))
        ));
        let any = Any {
            type_url: "example.Other".into(),
            value: vec![1],
            ..Default::default()
        };
        assert!(matches!(
            from_any(Some(&any), "ns"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
