//! What CNI is told about a pod: identity through CNI_ARGS (the keys Kubernetes
//! plugins read) and the per-pod capability arguments that end up in each plugin's
//! `runtimeConfig`.

use std::path::Path;

use serde_json::{Map, Value, json};

/// A pod's port published on the node (CRI PortMapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`, any case.
    pub protocol: String,
    /// Empty for every host address.
    pub host_ip: String,
}

/// Traffic shaping for the `bandwidth` plugin, in bits per second (rates) and bits
/// (bursts), as its runtimeConfig wants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// The pod's DNS settings, for plugins declaring the `dns` capability.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// One pod as the CNI calls see it.
#[derive(Debug, Clone, Copy)]
pub struct PodNetwork<'a> {
    /// The sandbox id: CNI_CONTAINERID and the key of the result cache.
    pub pod_id: &'a str,
    /// The namespace file from [`super::netns::create`].
    pub netns: &'a Path,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub port_mappings: &'a [PortMapping],
    pub bandwidth: Option<Bandwidth>,
    pub dns: Option<&'a Dns>,
}

impl PodNetwork<'_> {
    /// CNI_ARGS as kubelet-era runtimes pass them; `IgnoreUnknown` keeps plugins that
    /// do not know a key from failing on it.
    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};\
             K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, self.name, self.pod_id, self.uid
        )
    }

    /// Capability name -> argument, for the capabilities this pod has something
    /// for. A plugin only sees the ones it declares (see `NetworkList::plugin_config`).
    pub fn capability_args(&self) -> Map<String, Value> {
        let mut args = Map::new();
        // A host port of 0 means "not published" in CRI; portmap would reject it.
        let ports: Vec<Value> = self
            .port_mappings
            .iter()
            .filter(|p| p.host_port != 0)
            .map(|p| {
                let mut m = json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol.to_lowercase(),
                });
                if !p.host_ip.is_empty() {
                    m["hostIP"] = Value::String(p.host_ip.clone());
                }
                m
            })
            .collect();
        if !ports.is_empty() {
            args.insert("portMappings".into(), Value::Array(ports));
        }
        if let Some(bw) = self.bandwidth {
            args.insert(
                "bandwidth".into(),
                json!({
                    "ingressRate": bw.ingress_rate,
                    "ingressBurst": bw.ingress_burst,
                    "egressRate": bw.egress_rate,
                    "egressBurst": bw.egress_burst,
                }),
            );
        }
        if let Some(dns) = self.dns {
            args.insert(
                "dns".into(),
                json!({
                    "servers": dns.servers,
                    "searches": dns.searches,
                    "options": dns.options,
                }),
            );
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod<'a>(ports: &'a [PortMapping], dns: Option<&'a Dns>) -> PodNetwork<'a> {
        PodNetwork {
            pod_id: "c0ffee",
            netns: Path::new("/run/berth/netns/c0ffee"),
            name: "web-0",
            namespace: "default",
            uid: "4d8f",
            port_mappings: ports,
            bandwidth: None,
            dns,
        }
    }

    #[test]
    fn cni_args_carry_the_kubernetes_keys() {
        assert_eq!(
            pod(&[], None).cni_args(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=4d8f"
        );
    }

    #[test]
    fn nothing_to_say_means_no_capability_args() {
        assert!(pod(&[], None).capability_args().is_empty());
    }

    #[test]
    fn capability_args_in_plugin_spelling() {
        let ports = [
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "TCP".into(),
                host_ip: String::new(),
            },
            PortMapping {
                host_port: 0,
                container_port: 9090,
                protocol: "tcp".into(),
                host_ip: String::new(),
            },
            PortMapping {
                host_port: 53,
                container_port: 5353,
                protocol: "UDP".into(),
                host_ip: "127.0.0.1".into(),
            },
        ];
        let dns = Dns {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        let mut p = pod(&ports, Some(&dns));
        p.bandwidth = Some(Bandwidth {
            ingress_rate: 1_000_000,
            ingress_burst: 2_000_000,
            egress_rate: 3,
            egress_burst: 4,
        });
        let args = p.capability_args();
        assert_eq!(
            args["portMappings"],
            json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 53, "containerPort": 5353, "protocol": "udp", "hostIP": "127.0.0.1"},
            ])
        );
        assert_eq!(
            args["bandwidth"],
            json!({"ingressRate": 1_000_000, "ingressBurst": 2_000_000,
                   "egressRate": 3, "egressBurst": 4})
        );
        assert_eq!(args["dns"]["servers"], json!(["10.96.0.10"]));
    }
}
