//! The pod's network: its namespace and its CNI attachment. Host-network pods
//! have neither. ADD and DEL of one pod never overlap: both run under the pod's
//! lock (RunPodSandbox, before the pod is visible, holds it implicitly).

use std::path::{Path, PathBuf};

use super::SandboxService;
use crate::domain::config::{Protocol, SandboxConfig};
use crate::error::{Error, Result};
use crate::network::{self, Attached, Bandwidth, Dns, NetworkError, PodNetwork, PortMapping};

impl From<NetworkError> for Error {
    fn from(e: NetworkError) -> Self {
        match e {
            NetworkError::Config { .. } | NetworkError::PluginNotFound { .. } => {
                Error::FailedPrecondition(e.to_string())
            }
            NetworkError::NotAttached { .. } => Error::NotFound(e.to_string()),
            _ => Error::Unavailable(e.to_string()),
        }
    }
}

/// The kubelet's traffic-shaping annotations, in bits per second.
const INGRESS_ANNOTATION: &str = "kubernetes.io/ingress-bandwidth";
const EGRESS_ANNOTATION: &str = "kubernetes.io/egress-bandwidth";
/// The range the kubelet accepts for them: 1 kbit/s to 1 Pbit/s.
const MIN_BANDWIDTH: u64 = 1_000;
const MAX_BANDWIDTH: u64 = 1_000_000_000_000_000;

/// The CNI view of a pod's config.
struct PodNet {
    ports: Vec<PortMapping>,
    dns: Dns,
    bandwidth: Option<Bandwidth>,
}

impl PodNet {
    fn of(config: &SandboxConfig) -> PodNet {
        let ports = config
            .port_mappings
            .iter()
            .filter_map(|p| {
                Some(PortMapping {
                    host_port: u16::try_from(p.host_port).ok()?,
                    container_port: u16::try_from(p.container_port).ok()?,
                    protocol: match p.protocol {
                        Protocol::Tcp => "tcp",
                        Protocol::Udp => "udp",
                        Protocol::Sctp => "sctp",
                    }
                    .to_string(),
                    host_ip: p.host_ip.clone(),
                })
            })
            .collect();
        let dns = Dns {
            servers: config.dns.servers.clone(),
            searches: config.dns.searches.clone(),
            options: config.dns.options.clone(),
        };
        // RunPodSandbox validated the annotations before getting here.
        let bandwidth = bandwidth(&config.annotations).ok().flatten();
        PodNet {
            ports,
            dns,
            bandwidth,
        }
    }

    fn network<'a>(
        &'a self,
        id: &'a str,
        netns: &'a Path,
        config: &'a SandboxConfig,
    ) -> PodNetwork<'a> {
        PodNetwork {
            pod_id: id,
            netns,
            name: &config.name,
            namespace: &config.namespace,
            uid: &config.uid,
            port_mappings: &self.ports,
            bandwidth: self.bandwidth,
            dns: Some(&self.dns),
        }
    }
}

impl SandboxService {
    pub(super) async fn create_netns(&self, id: &str) -> Result<PathBuf> {
        let dir = self.netns_dir();
        let name = id.to_string();
        let ns = tokio::task::spawn_blocking(move || network::netns::create(&dir, &name)).await??;
        Ok(ns.path().to_path_buf())
    }

    pub(super) async fn remove_netns(&self, path: &Path) -> Result<()> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || network::netns::remove(&path)).await??;
        Ok(())
    }

    pub(super) async fn cni_add(
        &self,
        id: &str,
        netns: &Path,
        config: &SandboxConfig,
    ) -> Result<Attached> {
        let net = PodNet::of(config);
        Ok(self.cni.add(&net.network(id, netns, config)).await?)
    }

    /// Idempotent, and retried inside the CNI caller.
    pub(super) async fn cni_del(
        &self,
        id: &str,
        netns: &Path,
        config: &SandboxConfig,
    ) -> Result<()> {
        let net = PodNet::of(config);
        Ok(self.cni.del(&net.network(id, netns, config)).await?)
    }
}

/// The pod's bandwidth limits from the kubelet's annotations, as containerd passes
/// them to the bandwidth plugin (rates as given, bursts unlimited).
pub(super) fn bandwidth(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Option<Bandwidth>> {
    let rate = |key: &str| -> Result<Option<u64>> {
        let Some(value) = annotations.get(key) else {
            return Ok(None);
        };
        let bits = parse_quantity(value)
            .filter(|b| (MIN_BANDWIDTH..=MAX_BANDWIDTH).contains(b))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "annotation {key}: {value:?} is not a bandwidth between 1k and 1P"
                ))
            })?;
        Ok(Some(bits))
    };
    let (ingress, egress) = (rate(INGRESS_ANNOTATION)?, rate(EGRESS_ANNOTATION)?);
    if ingress.is_none() && egress.is_none() {
        return Ok(None);
    }
    let burst = |r: Option<u64>| if r.is_some() { u64::from(u32::MAX) } else { 0 };
    Ok(Some(Bandwidth {
        ingress_rate: ingress.unwrap_or(0),
        ingress_burst: burst(ingress),
        egress_rate: egress.unwrap_or(0),
        egress_burst: burst(egress),
    }))
}

/// A Kubernetes quantity ("10M", "1.5Gi", "250k"), rounded up to a whole number.
fn parse_quantity(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    let scaled = (value * multiplier).ceil();
    (scaled.is_finite() && scaled >= 0.0 && scaled < u64::MAX as f64).then_some(scaled as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1.5k"), Some(1_500));
        assert_eq!(parse_quantity("1Ki"), Some(1_024));
        assert_eq!(parse_quantity("2Gi"), Some(2 << 30));
        assert_eq!(parse_quantity("100"), Some(100));
        assert_eq!(parse_quantity("10X"), None);
        assert_eq!(parse_quantity("M"), None);
        assert_eq!(parse_quantity("-1M"), None);
    }

    #[test]
    fn bandwidth_comes_from_the_kubelet_annotations() {
        let annotations = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(bandwidth(&annotations(&[])).unwrap(), None);
        let bw = bandwidth(&annotations(&[(INGRESS_ANNOTATION, "10M")]))
            .unwrap()
            .unwrap();
        assert_eq!((bw.ingress_rate, bw.egress_rate), (10_000_000, 0));
        assert_eq!(
            (bw.ingress_burst, bw.egress_burst),
            (u64::from(u32::MAX), 0)
        );
        let err = bandwidth(&annotations(&[(EGRESS_ANNOTATION, "10")])).unwrap_err();
        assert!(err.to_string().contains(EGRESS_ANNOTATION), "{err}");
        assert!(bandwidth(&annotations(&[(EGRESS_ANNOTATION, "fast")])).is_err());
    }
}
