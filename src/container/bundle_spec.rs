//! The OCI spec in a container's bundle (`config.json`): read for verbose
//! ContainerStatus, and kept equal to the limits in force after
//! UpdateContainerResources, as containerd updates the spec it stores, so that
//! tools reading the spec see what the container runs with.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::service::ContainerService;
use crate::error::{Error, IoContext, Result};
use crate::store::ContainerRecord;

/// The largest `config.json` read back: berth writes it, and a spec with every
/// field a CRI request can fill stays far below this.
const MAX_SPEC_BYTES: u64 = 4 << 20;

fn spec_path(bundle: &Path) -> PathBuf {
    bundle.join("config.json")
}

impl ContainerService {
    /// The container's OCI spec as it stands now, for verbose ContainerStatus.
    pub async fn current_spec(&self, record: &ContainerRecord) -> serde_json::Value {
        let bundle = record.bundle.clone();
        tokio::task::spawn_blocking(move || read_spec(&bundle))
            .await
            .unwrap_or(serde_json::Value::Null)
    }
}

/// The bundle's spec as JSON; `Null` when there is none (a container whose
/// create was undone) or it cannot be read, since verbose status is best effort.
pub(super) fn read_spec(bundle: &Path) -> serde_json::Value {
    read(bundle).unwrap_or(serde_json::Value::Null)
}

fn read(bundle: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    let path = spec_path(bundle);
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_SPEC_BYTES + 1).read_to_end(&mut bytes))
        .context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(Error::Internal(format!(
            "{} is over {MAX_SPEC_BYTES} bytes",
            path.display()
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Internal(format!("{} is not JSON: {e}", path.display())))
}

/// Puts `limits` into the bundle's spec as its `linux.resources`, keeping the
/// device rules (UpdateContainerResources does not change them). Written to a
/// new file renamed over the old one, so a crash leaves one spec or the other.
/// A bundle without a spec (a container recovered after its bundle went) has
/// nothing to keep true.
pub(super) fn write_resources(bundle: &Path, limits: &LinuxResources) -> Result<()> {
    if !spec_path(bundle).exists() {
        return Ok(());
    }
    let mut spec = read(bundle)?;
    let mut resources = serde_json::to_value(limits)
        .map_err(|e| Error::Internal(format!("encoding resources: {e}")))?;
    let linux = spec
        .get_mut("linux")
        .and_then(|l| l.as_object_mut())
        .ok_or_else(|| Error::Internal("the container's spec has no linux section".into()))?;
    if let (Some(devices), Some(r)) = (
        linux
            .get("resources")
            .and_then(|r| r.get("devices"))
            .cloned(),
        resources.as_object_mut(),
    ) {
        r.insert("devices".into(), devices);
    }
    linux.insert("resources".into(), resources);
    let bytes = serde_json::to_vec(&spec)
        .map_err(|e| Error::Internal(format!("encoding the OCI spec: {e}")))?;
    let path = spec_path(bundle);
    let staged = bundle.join("config.json.new");
    crate::layout::write_private_file(&staged, &bytes)?;
    std::fs::rename(&staged, &path).context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxMemoryBuilder, LinuxResourcesBuilder};

    #[test]
    fn new_limits_replace_the_old_and_keep_the_device_rules() {
        let bundle = tempfile::tempdir().unwrap();
        let old = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"]},
            "linux": {
                "resources": {
                    "devices": [{"allow": false, "access": "rwm"}],
                    "memory": {"limit": 100_000_000},
                    "cpu": {"shares": 2}
                },
                "namespaces": [{"type": "pid"}]
            }
        });
        std::fs::write(spec_path(bundle.path()), old.to_string()).unwrap();
        let limits = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(200_000_000)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        write_resources(bundle.path(), &limits).unwrap();
        let spec = read_spec(bundle.path());
        let r = &spec["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 200_000_000);
        assert!(r.get("cpu").is_none(), "limits not given are gone: {r}");
        assert_eq!(r["devices"], old["linux"]["resources"]["devices"]);
        assert_eq!(spec["linux"]["namespaces"], old["linux"]["namespaces"]);
        assert_eq!(spec["process"], old["process"]);
        assert!(!bundle.path().join("config.json.new").exists());
        // The spec holds the environment: root only.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(spec_path(bundle.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_missing_spec_reads_as_null() {
        let bundle = tempfile::tempdir().unwrap();
        assert_eq!(read_spec(bundle.path()), serde_json::Value::Null);
    }
}
