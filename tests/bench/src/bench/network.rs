//! The pod network every side of the bench uses: the same conflist shape as
//! berth's built-in default (bridge with gateway, masquerade and hairpin,
//! host-local IPAM, portmap), each side on a bridge, subnet and IPAM directory of
//! its own so that they never collide and their leftovers can be counted.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::Result;

/// Where the CNI plugins are (Debian's containernetworking-plugins).
pub const CNI_BIN: &str = "/usr/lib/cni";

#[derive(Debug, Clone)]
pub struct PodNetwork {
    /// The network's name; host-local keeps its addresses in `ipam_dir/<name>`.
    pub name: String,
    pub bridge: String,
    pub subnet: String,
    /// Holds the conflist and nothing else.
    pub conf_dir: PathBuf,
    pub ipam_dir: PathBuf,
}

impl PodNetwork {
    /// The network of side `index` (0 berth, 1 containerd, 2 the floor), under `dir`.
    pub fn new(index: u8, label: &str, dir: &Path) -> PodNetwork {
        PodNetwork {
            name: format!("bench-{label}"),
            bridge: format!("bbench{index}"),
            subnet: format!("10.196.{}.0/24", index + 1),
            conf_dir: dir.join("net.d"),
            ipam_dir: dir.join("ipam"),
        }
    }

    pub fn conflist(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": self.subnet }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": self.ipam_dir,
                    }
                },
                { "type": "portmap", "capabilities": { "portMappings": true } }
            ]
        })
    }

    /// Writes the conflist as the only file of `conf_dir`.
    pub fn write(&self) -> Result<()> {
        std::fs::create_dir_all(&self.conf_dir)
            .map_err(|e| format!("{}: {e}", self.conf_dir.display()))?;
        let path = self.conf_dir.join("10-bench.conflist");
        std::fs::write(&path, self.conflist().to_string())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Addresses host-local holds for this network.
    pub fn allocated_ips(&self) -> usize {
        super::procfs::entries(&self.ipam_dir.join(&self.name))
            .iter()
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .count()
    }

    /// Interfaces (pod veths) still enslaved to the bridge.
    pub fn bridge_ports(&self) -> usize {
        super::procfs::entries(Path::new(&format!("/sys/class/net/{}/brif", self.bridge))).len()
    }

    /// Deletes the bridge, which the bridge plugin leaves behind after the last DEL.
    pub fn remove_bridge(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
