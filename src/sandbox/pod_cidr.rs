//! The node's pod CIDRs: set once by the kubelet through UpdateRuntimeConfig,
//! kept in the store so a restarted berthd still hands them to CNI (the kubelet
//! does not send them again), and offered to plugins as `ipRanges`.

use super::SandboxService;
use crate::error::{Error, Result};
use crate::network::PodCidrs;

/// The store setting holding the CIDRs, comma-separated.
const POD_CIDR_SETTING: &str = "pod_cidr";

impl SandboxService {
    /// Validates and records `text` (comma-separated CIDRs), then uses it for
    /// every pod attached from now on; pods already running keep their addresses.
    pub fn set_pod_cidrs(&self, text: &str) -> Result<()> {
        let cidrs = PodCidrs::parse(text).map_err(|reason| {
            Error::InvalidArgument(format!("runtime_config.network_config.pod_cidr: {reason}"))
        })?;
        let stored = cidrs.to_string();
        self.store
            .write(|tx| tx.set_setting(POD_CIDR_SETTING, &stored))?;
        self.cni.set_pod_cidrs(cidrs);
        tracing::info!(pod_cidr = %stored, "pod CIDR updated");
        Ok(())
    }

    /// The CIDRs in use, if the kubelet sent any.
    pub fn pod_cidrs(&self) -> Option<PodCidrs> {
        self.cni.pod_cidrs()
    }

    /// Takes up the CIDRs recorded before a restart. One that no longer parses
    /// (written by an older berthd) is left out, with a warning, as if unset.
    pub(super) fn load_pod_cidrs(&self) -> Result<()> {
        let Some(text) = self.store.setting(POD_CIDR_SETTING)? else {
            return Ok(());
        };
        match PodCidrs::parse(&text) {
            Ok(cidrs) => self.cni.set_pod_cidrs(cidrs),
            Err(reason) => {
                tracing::warn!(pod_cidr = %text, %reason, "recorded pod CIDR ignored")
            }
        }
        Ok(())
    }
}
