//! The node's pod CIDR, as the kubelet sets it through UpdateRuntimeConfig and
//! verbose Status reports it: checked, and kept in the store across restarts.

use super::SandboxService;
use crate::error::{Error, Result};

/// The store setting that holds the pod CIDR.
const POD_CIDR_KEY: &str = "pod_cidr";
/// The request field, named in errors.
const FIELD: &str = "runtime_config.network_config.pod_cidr";

impl SandboxService {
    /// The pod CIDR last set, or empty.
    pub fn pod_cidr(&self) -> Result<String> {
        Ok(self.store.setting(POD_CIDR_KEY)?.unwrap_or_default())
    }

    /// Records `cidrs` (comma-separated, one per address family); empty leaves
    /// the setting as it was, as the kubelet sends it empty before it knows one.
    pub fn set_pod_cidr(&self, cidrs: &str) -> Result<()> {
        if cidrs.is_empty() {
            return Ok(());
        }
        for part in cidrs.split(',') {
            check_cidr(part.trim())?;
        }
        self.store.write(|tx| tx.set_setting(POD_CIDR_KEY, cidrs))?;
        tracing::info!(pod_cidr = %cidrs, "pod CIDR updated");
        Ok(())
    }
}

fn check_cidr(cidr: &str) -> Result<()> {
    let bad = || Error::InvalidArgument(format!("{FIELD}: {cidr:?} is not a CIDR"));
    let (addr, bits) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let bits: u8 = bits.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if bits > max {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_checked() {
        assert!(check_cidr("10.244.0.0/24").is_ok());
        assert!(check_cidr("fd00::/64").is_ok());
        assert!(check_cidr("10.244.0.0/33").is_err());
        assert!(check_cidr("10.244.0.0").is_err());
        assert!(check_cidr("banana/8").is_err());
    }
}
