//! Reading a CNI ADD result: the pod's addresses on its interface. Results of spec
//! 0.3.x/0.4.0 and 1.0.0 agree on what matters here: `interfaces[]` (the pod side has
//! `sandbox` set) and `ips[]` with a CIDR `address` and an optional `interface`
//! index into that list.

use std::net::IpAddr;

use serde_json::Value;

/// What ADD gave a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Attached {
    /// The addresses on the pod's eth0, IPv4 first (CRI's PodIP is the first).
    pub ips: Vec<IpAddr>,
    /// The pod network's final result, as the last plugin printed it.
    pub result: Value,
}

/// The addresses a result assigns to `ifname` inside the pod. IPs whose `interface`
/// points elsewhere (the host-side veth, the bridge) are left out; IPs without an
/// `interface` index count as the pod's, since some IPAM-only chains omit it.
pub fn sandbox_ips(result: &Value, ifname: &str) -> Result<Vec<IpAddr>, String> {
    let interfaces = match result.get("interfaces") {
        Some(Value::Array(list)) => list.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return Err("interfaces: not an array".into()),
    };
    let ips = match result.get("ips") {
        Some(Value::Array(list)) => list.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return Err("ips: not an array".into()),
    };
    let is_pod_side = |index: u64| {
        usize::try_from(index)
            .ok()
            .and_then(|i| interfaces.get(i))
            .is_some_and(|iface| {
                iface.get("name").and_then(Value::as_str) == Some(ifname)
                    && iface
                        .get("sandbox")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
            })
    };
    let mut out = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        if let Some(index) = ip.get("interface") {
            let index = index
                .as_u64()
                .ok_or_else(|| format!("ips[{i}].interface: not an index"))?;
            if !is_pod_side(index) {
                continue;
            }
        }
        let address = ip
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("ips[{i}].address: missing"))?;
        let host = address.split_once('/').map_or(address, |(host, _)| host);
        let parsed = host
            .parse::<IpAddr>()
            .map_err(|e| format!("ips[{i}].address {address:?}: {e}"))?;
        out.push(parsed);
    }
    // Stable: the plugin's order within each family is kept.
    out.sort_by_key(|ip| ip.is_ipv6());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What bridge + host-local + portmap print for spec 0.4.0.
    fn result_0_4_0() -> Value {
        json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "cni0", "mac": "4a:6b:1e:2f:3c:01"},
                {"name": "veth1a2b3c4d", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "eth0", "mac": "ca:fe:00:00:00:01", "sandbox": "/run/berth/netns/p1"}
            ],
            "ips": [
                {"version": "6", "interface": 2, "address": "fd00:88::5/64", "gateway": "fd00:88::1"},
                {"version": "4", "interface": 2, "address": "10.88.0.5/16", "gateway": "10.88.0.1"}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        })
    }

    /// Spec 1.0.0: no `version` in ips; an extra address on the bridge.
    fn result_1_0_0() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "berth0", "mac": "4a:6b:1e:2f:3c:01"},
                {"name": "veth9", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "ca:fe:00:00:00:02", "sandbox": "/run/berth/netns/p2"}
            ],
            "ips": [
                {"interface": 0, "address": "10.88.0.1/16"},
                {"interface": 2, "address": "10.88.0.6/16", "gateway": "10.88.0.1"}
            ]
        })
    }

    #[test]
    fn pod_side_ips_ipv4_first() {
        assert_eq!(
            sandbox_ips(&result_0_4_0(), "eth0").unwrap(),
            vec![
                "10.88.0.5".parse::<IpAddr>().unwrap(),
                "fd00:88::5".parse().unwrap()
            ]
        );
        assert_eq!(
            sandbox_ips(&result_1_0_0(), "eth0").unwrap(),
            vec!["10.88.0.6".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn ips_without_interface_index_count() {
        let r =
            json!({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "192.168.1.9/24"}]});
        assert_eq!(
            sandbox_ips(&r, "eth0").unwrap(),
            vec!["192.168.1.9".parse::<IpAddr>().unwrap()]
        );
        assert!(
            sandbox_ips(&json!({"cniVersion": "1.0.0"}), "lo")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_results_say_where() {
        for (r, needle) in [
            (json!({"ips": {}}), "ips: not an array"),
            (
                json!({"ips": [{"interface": "x", "address": "1.2.3.4/8"}]}),
                "ips[0].interface",
            ),
            (json!({"ips": [{}]}), "ips[0].address: missing"),
            (
                json!({"ips": [{"address": "10.0.0.300/8"}]}),
                "10.0.0.300/8",
            ),
        ] {
            let err = sandbox_ips(&r, "eth0").unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
