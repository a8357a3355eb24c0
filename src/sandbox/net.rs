//! The pod's network: its namespace and its CNI attachment. Host-network pods
//! have neither. ADD and DEL of one pod never overlap: both run under the pod's
//! lock (RunPodSandbox, before the pod is visible, holds it implicitly).

use std::path::{Path, PathBuf};

use super::SandboxService;
use crate::container::config::{Protocol, SandboxConfig};
use crate::error::{Error, Result};
use crate::network::{self, Attached, Dns, NetworkError, PodNetwork, PortMapping};

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

/// The CNI view of a pod's config.
struct PodNet {
    ports: Vec<PortMapping>,
    dns: Dns,
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
        PodNet { ports, dns }
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
            bandwidth: None,
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
