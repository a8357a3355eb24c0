//! CNI on the floor: the plugins exec'd directly with the conflist's configs on
//! stdin, as libcni would build them, loopback beside the chain.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::super::Result;
use super::super::network::{CNI_BIN, PodNetwork};

/// ADD: loopback on `lo` beside the conflist's chain on `eth0`; returns the
/// chain's result.
pub fn add(net: &PodNetwork, id: &str, netns: &Path) -> Result<Value> {
    std::thread::scope(|s| {
        let lo = s.spawn(|| loopback("ADD", id, netns));
        let mut prev = Value::Null;
        for plugin in chain(net) {
            prev = call("ADD", &plugin_conf(net, &plugin, &prev), id, netns, "eth0")?;
        }
        lo.join()
            .unwrap_or_else(|_| Err("loopback thread panicked".into()))?;
        Ok(prev)
    })
}

/// DEL of the chain in reverse, beside loopback's; `result` is ADD's (null
/// when unknown, as after a crash).
///
/// A plugin's DEL that fails is run once more, as the kubelet retries a
/// StopPodSandbox: the bridge plugin's masquerade teardown, ten pods at once on
/// nftables, now and then fails `iptables -X` with "Device or resource busy",
/// and DEL is idempotent.
pub fn del(net: &PodNetwork, id: &str, netns: &Path, result: &Value) -> Result<()> {
    std::thread::scope(|s| {
        let lo = s.spawn(|| loopback("DEL", id, netns));
        for plugin in chain(net).iter().rev() {
            let conf = plugin_conf(net, plugin, result);
            call("DEL", &conf, id, netns, "eth0")
                .or_else(|_| call("DEL", &conf, id, netns, "eth0"))?;
        }
        lo.join()
            .unwrap_or_else(|_| Err("loopback thread panicked".into()))
            .map(|_| ())
    })
}

fn chain(net: &PodNetwork) -> Vec<Value> {
    net.conflist()["plugins"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A plugin's stdin as libcni builds it: name and version from the list, the
/// previous result, the port-mapping capability (empty, as the kubelet sends).
fn plugin_conf(net: &PodNetwork, plugin: &Value, prev: &Value) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = json!(net.name);
    conf["cniVersion"] = json!("1.0.0");
    if !prev.is_null() {
        conf["prevResult"] = prev.clone();
    }
    if plugin["capabilities"]["portMappings"] == json!(true) {
        conf["runtimeConfig"] = json!({"portMappings": []});
    }
    conf
}

fn loopback(command: &str, id: &str, netns: &Path) -> Result<Value> {
    let conf = json!({"cniVersion": "0.3.1", "name": "cni-loopback", "type": "loopback"});
    call(command, &conf, id, netns, "lo")
}

/// Execs one plugin with `conf` on stdin; returns its parsed stdout (null when
/// empty, as DEL's is).
fn call(command: &str, conf: &Value, id: &str, netns: &Path, ifname: &str) -> Result<Value> {
    let kind = conf["type"].as_str().unwrap_or_default();
    let mut child = Command::new(Path::new(CNI_BIN).join(kind))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", CNI_BIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("CNI {kind}: {e}"))?;
    let stdin = serde_json::to_vec(conf).map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(&stdin)
        .map_err(|e| format!("CNI {kind} stdin: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "CNI {command} {kind}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("CNI {kind} result: {e}"))
}
