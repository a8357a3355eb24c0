//! The pod-network layer's one error type. Every message names what failed: the
//! namespace path, the config file, or the plugin call (command, network, plugin,
//! pod), and carries the plugin's own CNI error text when it gave one.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// One plugin invocation, for error messages: `ADD of network "berth" (plugin
/// "bridge") for pod 3f2a...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub command: &'static str,
    pub network: String,
    pub plugin: String,
    pub pod_id: String,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CNI {} of network {:?} (plugin {:?}) for pod {}",
            self.command, self.network, self.plugin, self.pod_id
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A kernel call on a network namespace (unshare, mount, umount, unlink) failed.
    #[error("network namespace {path}: {op}: {source}")]
    Netns {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The CNI config directory or a file in it cannot be used.
    #[error("CNI config {path}: {reason}")]
    Config { path: PathBuf, reason: String },

    /// A plugin named by the network config is in none of the bin dirs.
    #[error("CNI plugin {plugin:?} of network {network:?} not found in {dirs}")]
    PluginNotFound {
        network: String,
        plugin: String,
        dirs: String,
    },

    /// The plugin ran and reported a CNI error object (`{code, msg, details}`).
    #[error("{call}: {msg}{}", details_suffix(.details))]
    Plugin {
        call: Box<Call>,
        code: u64,
        msg: String,
        details: String,
    },

    /// The plugin failed without a CNI error object: it could not be started, or
    /// exited non-zero with something else on stdout; stderr is kept.
    #[error("{call}: {reason}")]
    Exec { call: Box<Call>, reason: String },

    /// The plugin did not finish in time and was killed.
    #[error("{call}: timed out after {timeout:?}, plugin killed")]
    Timeout { call: Box<Call>, timeout: Duration },

    /// The plugin succeeded but its result is not a CNI result berth can read.
    #[error("{call}: unreadable result: {reason}")]
    BadResult { call: Box<Call>, reason: String },

    /// Reading or writing a pod's cached ADD result failed.
    #[error("CNI result cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// CHECK of a pod whose network was never added (or already deleted).
    #[error("pod {pod_id} has no CNI attachment on {ifname}")]
    NotAttached { pod_id: String, ifname: String },
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_error_names_call_and_carries_details() {
        let err = NetworkError::Plugin {
            call: Box::new(Call {
                command: "ADD",
                network: "pods".into(),
                plugin: "bridge".into(),
                pod_id: "abc".into(),
            }),
            code: 11,
            msg: "failed to allocate".into(),
            details: "no IP addresses available".into(),
        };
        assert_eq!(
            err.to_string(),
            "CNI ADD of network \"pods\" (plugin \"bridge\") for pod abc: \
             failed to allocate (no IP addresses available)"
        );
    }
}
