//! What each runtime handler's OCI runtime can do, asked once at start with
//! `<runtime> features` (runc 1.1+, crun 1.8+). Status advertises it to the kubelet,
//! and CreateContainer refuses what the handler cannot do before anything is made.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerFeatures {
    /// The runtime knows the `rro` mount option (and the kernel has mount_setattr).
    pub recursive_read_only_mounts: bool,
    /// The runtime joins user namespaces (and the host id-maps overlay layers,
    /// which berthd does for it: see `crate::userns::probe`).
    pub user_namespaces: bool,
}

/// The features of each OCI runtime binary, asked once however many handlers
/// share it.
pub fn probe_all(runtimes: BTreeSet<String>) -> BTreeMap<String, HandlerFeatures> {
    runtimes
        .into_iter()
        .map(|runtime| {
            let features = probe(&runtime);
            (runtime, features)
        })
        .collect()
}

/// A runtime that cannot answer (too old, missing) is assumed to have none.
fn probe(runtime: &str) -> HandlerFeatures {
    let output = Command::new(runtime)
        .arg("features")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(out) if out.status.success() => parse(&out.stdout),
        Ok(out) => {
            tracing::info!(runtime, status = %out.status, "runtime has no `features` command");
            HandlerFeatures::default()
        }
        Err(e) => {
            tracing::warn!(runtime, error = %e, "asking the runtime for its features");
            HandlerFeatures::default()
        }
    }
}

/// The OCI runtime features document: `{"mountOptions": ["rro", ...], ...}`.
fn parse(json: &[u8]) -> HandlerFeatures {
    let doc: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    let has_option = |name: &str| {
        doc["mountOptions"]
            .as_array()
            .is_some_and(|opts| opts.iter().any(|o| o == name))
    };
    let has_namespace = |name: &str| {
        doc["linux"]["namespaces"]
            .as_array()
            .is_some_and(|all| all.iter().any(|n| n == name))
    };
    HandlerFeatures {
        recursive_read_only_mounts: has_option("rro"),
        user_namespaces: has_namespace("user") && crate::userns::probe::supported(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rro_from_mount_options() {
        let f = parse(br#"{"ociVersionMin":"1.0.0","mountOptions":["ro","rro","rbind"]}"#);
        assert!(f.recursive_read_only_mounts);
        assert!(!parse(br#"{"mountOptions":["ro","rbind"]}"#).recursive_read_only_mounts);
        assert!(!parse(b"not json").recursive_read_only_mounts);
        assert!(!parse(br#"{"linux":{"namespaces":["mount","network"]}}"#).user_namespaces);
    }
}
