//! CNI network configuration: which file in the conf dir is the pod network, how a
//! `.conflist` or a single-plugin `.conf` reads, the built-in default network for an
//! empty conf dir, and the config each plugin gets on stdin.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::NetworkError;

/// The network used when the conf dir holds no config: a bridge with NAT to the
/// outside, host-local IPAM and port mappings, like containerd's and podman's
/// defaults, so a fresh node runs pods with nothing configured.
const DEFAULT_NETWORK: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "berth",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "berth0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.88.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}"#;

/// Brings `lo` up in every pod. 0.3.1 because loopback plugins of every release
/// since 2017 speak it; it has no result worth checking.
const LOOPBACK_NETWORK: &str =
    r#"{ "cniVersion": "0.3.1", "name": "cni-loopback", "plugins": [{ "type": "loopback" }] }"#;

/// A network configuration list: the plugins run in order for ADD, in reverse for
/// DEL.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    /// `disableCheck` in the list: CHECK is skipped.
    pub disable_check: bool,
    /// Each plugin's config as written, `type` checked to be a string.
    pub plugins: Vec<Map<String, Value>>,
    /// The whole list as written; what the result cache keeps.
    pub raw: Value,
}

/// The CNI config berth would use: the first `.conflist`, `.conf` or `.json` file in
/// `conf_dir` by name, as the kubelet's CNI convention has it.
pub fn find_conf(conf_dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(conf_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut confs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    confs.sort();
    Ok(confs.into_iter().next())
}

/// The pod network: the first config in `conf_dir`, or the built-in default when
/// there is none (or the dir does not exist).
pub fn load(conf_dir: &Path) -> Result<NetworkList, NetworkError> {
    let path = find_conf(conf_dir).map_err(|e| NetworkError::Config {
        path: conf_dir.to_path_buf(),
        reason: format!("cannot list directory: {e}"),
    })?;
    let Some(path) = path else {
        return Ok(default_network());
    };
    let bytes = std::fs::read(&path).map_err(|e| NetworkError::Config {
        path: path.clone(),
        reason: format!("cannot read: {e}"),
    })?;
    let value = serde_json::from_slice(&bytes).map_err(|e| NetworkError::Config {
        path: path.clone(),
        reason: format!("not JSON: {e}"),
    })?;
    parse(value).map_err(|reason| NetworkError::Config { path, reason })
}

pub fn default_network() -> NetworkList {
    builtin(DEFAULT_NETWORK)
}

pub fn loopback_network() -> NetworkList {
    builtin(LOOPBACK_NETWORK)
}

fn builtin(json: &str) -> NetworkList {
    serde_json::from_str(json)
        .map_err(|e| e.to_string())
        .and_then(parse)
        .unwrap_or_else(|e| panic!("built-in CNI network does not parse: {e}"))
}

/// Reads a config list, or a single plugin config (a `.conf` file) as a list of one,
/// which is what libcni does with those.
pub fn parse(value: Value) -> Result<NetworkList, String> {
    let Value::Object(obj) = &value else {
        return Err("not a JSON object".into());
    };
    let name = string_field(obj, "name")?;
    let cni_version = string_field(obj, "cniVersion")?;
    let (plugins, raw) = match obj.get("plugins") {
        Some(Value::Array(list)) => {
            let plugins = list
                .iter()
                .map(|p| match p {
                    Value::Object(p) => Ok(p.clone()),
                    _ => Err("plugins: entry is not an object".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            (plugins, value.clone())
        }
        Some(_) => return Err("plugins: not an array".into()),
        None => {
            let raw = serde_json::json!({
                "cniVersion": cni_version, "name": name, "plugins": [obj],
            });
            (vec![obj.clone()], raw)
        }
    };
    if plugins.is_empty() {
        return Err("plugins: empty".into());
    }
    for (i, plugin) in plugins.iter().enumerate() {
        string_field(plugin, "type").map_err(|e| format!("plugins[{i}]: {e}"))?;
    }
    Ok(NetworkList {
        name,
        cni_version,
        disable_check: obj.get("disableCheck") == Some(&Value::Bool(true)),
        plugins,
        raw,
    })
}

fn string_field(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(format!("{key}: not a non-empty string")),
        None => Err(format!("{key}: missing")),
    }
}

impl NetworkList {
    /// The plugin's `type`, which names its binary.
    pub fn plugin_type(&self, index: usize) -> &str {
        self.plugins[index]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// CHECK exists from spec 0.4.0 on, and the list may opt out.
    pub fn supports_check(&self) -> bool {
        !self.disable_check && version_at_least(&self.cni_version, (0, 4, 0))
    }

    /// DEL gets the ADD result as prevResult from spec 0.4.0 on.
    pub fn del_takes_prev_result(&self) -> bool {
        version_at_least(&self.cni_version, (0, 4, 0))
    }

    /// What plugin `index` reads on stdin: its own config plus the list's name and
    /// version, the previous result, and a `runtimeConfig` holding only the
    /// capability arguments (`portMappings`, `bandwidth`, ...) it declares.
    pub fn plugin_config(
        &self,
        index: usize,
        prev_result: Option<&Value>,
        capability_args: &Map<String, Value>,
    ) -> Value {
        let mut conf = self.plugins[index].clone();
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        let declared: Vec<String> = match conf.get("capabilities") {
            Some(Value::Object(caps)) => caps
                .iter()
                .filter(|(_, on)| **on == Value::Bool(true))
                .map(|(name, _)| name.clone())
                .collect(),
            _ => Vec::new(),
        };
        let mut runtime = match conf.remove("runtimeConfig") {
            Some(Value::Object(rc)) => rc,
            _ => Map::new(),
        };
        for cap in declared {
            if let Some(arg) = capability_args.get(&cap) {
                runtime.insert(cap, arg.clone());
            }
        }
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        Value::Object(conf)
    }
}

/// Compares a `major.minor.patch` version; an unparseable one counts as old.
fn version_at_least(version: &str, min: (u64, u64, u64)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>());
    match (parts.next(), parts.next(), parts.next().unwrap_or(Ok(0))) {
        (Some(Ok(a)), Some(Ok(b)), Ok(c)) => (a, b, c) >= min,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_config_by_name_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_conf(dir.path()).unwrap(), None);
        assert_eq!(find_conf(&dir.path().join("missing")).unwrap(), None);
        std::fs::write(dir.path().join("README"), "").unwrap();
        std::fs::write(dir.path().join("30-c.json"), "{}").unwrap();
        std::fs::write(dir.path().join("20-b.conflist"), "{}").unwrap();
        assert_eq!(
            find_conf(dir.path()).unwrap(),
            Some(dir.path().join("20-b.conflist"))
        );
        std::fs::write(dir.path().join("10-a.conf"), "{}").unwrap();
        assert_eq!(
            find_conf(dir.path()).unwrap(),
            Some(dir.path().join("10-a.conf"))
        );
    }

    #[test]
    fn empty_or_missing_dir_gives_the_default_bridge() {
        let dir = tempfile::tempdir().unwrap();
        for conf_dir in [dir.path().to_path_buf(), dir.path().join("missing")] {
            let net = load(&conf_dir).unwrap();
            assert_eq!(net.name, "berth");
            assert_eq!(net.plugin_type(0), "bridge");
            assert_eq!(net.plugins[0]["bridge"], "berth0");
            assert_eq!(
                net.plugins[0]["ipam"]["ranges"][0][0]["subnet"],
                "10.88.0.0/16"
            );
            assert_eq!(net.plugin_type(1), "portmap");
        }
    }

    #[test]
    fn single_conf_becomes_a_list_of_one() {
        let dir = tempfile::tempdir().unwrap();
        let conf = json!({"cniVersion": "0.4.0", "name": "n", "type": "bridge", "bridge": "b"});
        std::fs::write(dir.path().join("10-n.conf"), conf.to_string()).unwrap();
        let net = load(dir.path()).unwrap();
        assert_eq!(
            (net.name.as_str(), net.cni_version.as_str()),
            ("n", "0.4.0")
        );
        assert_eq!(net.plugins.len(), 1);
        assert_eq!(net.raw["plugins"][0]["bridge"], "b");
        assert!(net.supports_check());
    }

    #[test]
    fn bad_configs_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("10-bad.conflist");
        for (text, needle) in [
            ("{", "not JSON"),
            (r#"{"cniVersion":"1.0.0","plugins":[]}"#, "name: missing"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "plugins: empty",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{}]}"#,
                "plugins[0]: type",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = load(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains("10-bad.conflist") && err.contains(needle),
                "{err}"
            );
        }
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let net = parse(json!({
            "cniVersion": "1.0.0", "name": "n",
            "plugins": [
                {"type": "bridge"},
                {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true},
                 "runtimeConfig": {"keep": 1}},
            ],
        }))
        .unwrap();
        let mut args = Map::new();
        args.insert("portMappings".into(), json!([{"hostPort": 80}]));
        args.insert("bandwidth".into(), json!({"ingressRate": 1}));
        let prev = json!({"cniVersion": "1.0.0", "ips": []});

        let bridge = net.plugin_config(0, None, &args);
        assert_eq!(bridge["name"], "n");
        assert_eq!(bridge["cniVersion"], "1.0.0");
        assert!(bridge.get("runtimeConfig").is_none());
        assert!(bridge.get("prevResult").is_none());

        let portmap = net.plugin_config(1, Some(&prev), &args);
        assert_eq!(
            portmap["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 80}]})
        );
        assert_eq!(portmap["prevResult"], prev);

        let bw = net.plugin_config(2, Some(&prev), &args);
        assert_eq!(
            bw["runtimeConfig"],
            json!({"keep": 1, "bandwidth": {"ingressRate": 1}})
        );
    }

    #[test]
    fn versions_gate_check_and_del_prev_result() {
        let mut net = loopback_network();
        assert!(!net.supports_check() && !net.del_takes_prev_result());
        net.cni_version = "1.0.0".into();
        assert!(net.supports_check() && net.del_takes_prev_result());
        net.disable_check = true;
        assert!(!net.supports_check());
        assert!(version_at_least("0.4", (0, 4, 0)));
        assert!(!version_at_least("garbage", (0, 0, 0)));
    }
}
