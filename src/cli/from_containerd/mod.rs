//! `berth config from-containerd`: a berth config with the equivalents of a
//! containerd CRI config, version 2 (containerd 1.x, plugin
//! `io.containerd.grpc.v1.cri`) or version 3 (containerd 2.x, plugins
//! `io.containerd.cri.v1.runtime`, `io.containerd.cri.v1.images` and
//! `io.containerd.grpc.v1.cri`).
//!
//! Every key of the input is either carried over or named in the result's
//! `dropped` list, with why: nothing is silently lost. The deprecated
//! `registry.mirrors` become hosts.toml files (berth reads only those); the
//! caller writes them, or prints them for the operator to place.

mod mirrors;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::config::Config;
pub use mirrors::HostsFile;

const V2_CRI: &str = "io.containerd.grpc.v1.cri";
const V3_RUNTIME: &str = "io.containerd.cri.v1.runtime";
const V3_IMAGES: &str = "io.containerd.cri.v1.images";
/// containerd's runc shim; berth's own shim drives runc the same way.
const RUNC_V2: &str = "io.containerd.runc.v2";
const BERTH_SHIM: &str = "containerd-shim-berth-v2";

/// What a containerd config becomes.
#[derive(Debug)]
pub struct Conversion {
    /// berth config keys, only those the input set (the rest keep berth's defaults).
    pub config: Table,
    /// hosts.toml files for the deprecated `registry.mirrors`, by registry.
    pub hosts: Vec<HostsFile>,
    /// Input keys not carried over, each with why (`key: reason`).
    pub dropped: Vec<String>,
    /// Keys carried over with a change of meaning worth knowing.
    pub notes: Vec<String>,
}

/// Converts a containerd config. `hosts_dir` is where the mirrors' hosts.toml
/// files will be written (it becomes `registry.config_path` when the input had
/// mirrors and no `config_path`).
pub fn convert(text: &str, hosts_dir: &Path) -> Result<Conversion, String> {
    let input: Table = toml::from_str(text).map_err(|e| format!("not TOML: {}", e.message()))?;
    let version = input
        .get("version")
        .and_then(Value::as_integer)
        .unwrap_or(1);
    let mut c = Converter {
        input: &input,
        used: BTreeSet::from(["version".to_string()]),
        out: Conversion {
            config: Table::new(),
            hosts: Vec::new(),
            dropped: Vec::new(),
            notes: Vec::new(),
        },
    };
    match version {
        2 => c.version2(hosts_dir)?,
        3 => c.version3(hosts_dir)?,
        v => {
            return Err(format!(
                "version = {v}: only containerd's version 2 (1.x) and 3 (2.x) configs are read; \
                 `containerd config migrate` brings older ones to version 3"
            ));
        }
    }
    c.drop_unused();
    let mut out = c.out;
    Config::parse(&render(&out.config), Path::new("<converted>"))
        .map_err(|e| format!("the converted config is invalid: {e}"))?;
    out.dropped.sort();
    Ok(out)
}

/// The berth config as TOML: the dropped keys and notes as comments first.
pub fn render(config: &Table) -> String {
    toml::to_string(config).unwrap_or_default()
}

struct Converter<'a> {
    input: &'a Table,
    /// Dotted paths of input keys (leaves or whole tables) carried over.
    used: BTreeSet<String>,
    out: Conversion,
}

impl Converter<'_> {
    fn version2(&mut self, hosts_dir: &Path) -> Result<(), String> {
        let cri = format!("plugins.{V2_CRI}");
        self.sandbox_image(&format!("{cri}.sandbox_image"));
        self.oom(&format!("{cri}.restrict_oom_score_adj"));
        self.streaming(&cri)?;
        self.cni(&format!("{cri}.cni"))?;
        self.runtimes(&format!("{cri}.containerd"))?;
        self.metrics()?;
        self.registry(&format!("{cri}.registry"), hosts_dir)
    }

    fn version3(&mut self, hosts_dir: &Path) -> Result<(), String> {
        let runtime = format!("plugins.{V3_RUNTIME}");
        let images = format!("plugins.{V3_IMAGES}");
        self.sandbox_image(&format!("{images}.pinned_images.sandbox"));
        self.oom(&format!("{runtime}.restrict_oom_score_adj"));
        self.streaming(&format!("plugins.{V2_CRI}"))?;
        self.cni(&format!("{runtime}.cni"))?;
        self.runtimes(&format!("{runtime}.containerd"))?;
        self.metrics()?;
        self.registry(&format!("{images}.registry"), hosts_dir)
    }

    /// containerd's `[metrics] address` (the same key in both versions) becomes
    /// berth's, which serves only loopback: any other address is left out, with why.
    fn metrics(&mut self) -> Result<(), String> {
        let Some(address) = self.take_str("metrics.address")? else {
            return Ok(());
        };
        let berth = crate::config::MetricsConfig {
            address: address.clone(),
        };
        match berth.socket_address() {
            Ok(None) => {}
            Ok(Some(_)) => self.set("metrics.address", Value::String(address)),
            Err(why) => self.out.dropped.push(format!("metrics.address: {why}")),
        }
        Ok(())
    }

    /// The value at a dotted path (plugin names are single segments).
    fn get(&self, path: &str) -> Option<&Value> {
        let mut value: Option<&Value> = None;
        let mut table = self.input;
        for part in split(path) {
            let v = table.get(&part)?;
            value = Some(v);
            if let Value::Table(t) = v {
                table = t;
            }
        }
        value
    }

    fn take(&mut self, path: &str) -> Option<Value> {
        let v = self.get(path).cloned();
        if v.is_some() {
            self.used.insert(path.to_string());
        }
        v
    }

    fn take_str(&mut self, path: &str) -> Result<Option<String>, String> {
        match self.take(path) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "{path}: expected a string, found {}",
                other.type_str()
            )),
        }
    }

    fn set(&mut self, key: &str, value: Value) {
        let mut table = &mut self.out.config;
        let parts: Vec<&str> = key.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            table = table
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .expect("berth's config sections are tables");
        }
        table.insert(parts[parts.len() - 1].to_string(), value);
    }

    fn sandbox_image(&mut self, path: &str) {
        if let Ok(Some(image)) = self.take_str(path)
            && !image.is_empty()
        {
            self.out.notes.push(format!(
                "sandbox_image = {image:?} (from {path}): berth needs no pause image; \
                 remove the key to start pods with its built-in one, without a pull"
            ));
            self.set("sandbox_image", Value::String(image));
        }
    }

    fn oom(&mut self, path: &str) {
        if let Some(v) = self.take(path) {
            self.out.notes.push(format!(
                "{path} = {v}: berth always raises oom_score_adj values below its own \
                 when it lacks CAP_SYS_RESOURCE, and needs no key for it"
            ));
        }
    }

    fn streaming(&mut self, cri: &str) -> Result<(), String> {
        let address_key = format!("{cri}.stream_server_address");
        if let Some(address) = self.take_str(&address_key)? {
            if address.is_empty() {
                self.out.notes.push(format!(
                    "{address_key} is empty (containerd: the node's address); berth keeps its \
                     loopback default: the kubelet reaches it on the same node"
                ));
            } else {
                let ip: IpAddr = address
                    .parse()
                    .map_err(|_| format!("{address_key}: {address:?} is not an IP address"))?;
                self.set("streaming.address", Value::String(ip.to_string()));
            }
        }
        let port_key = format!("{cri}.stream_server_port");
        if let Some(port) = self.take_str(&port_key)? {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{port_key}: {port:?} is not a TCP port"))?;
            self.set("streaming.port", Value::Integer(port.into()));
        }
        Ok(())
    }

    fn cni(&mut self, cni: &str) -> Result<(), String> {
        if let Some(dir) = self.take_str(&format!("{cni}.conf_dir"))? {
            self.set("cni.conf_dir", Value::String(dir));
        }
        let mut bin_dirs = Vec::new();
        if let Some(dir) = self.take_str(&format!("{cni}.bin_dir"))? {
            bin_dirs.push(Value::String(dir));
        }
        match self.take(&format!("{cni}.bin_dirs")) {
            Some(Value::Array(dirs)) => bin_dirs.extend(dirs),
            Some(other) => {
                return Err(format!(
                    "{cni}.bin_dirs: expected a list, found {}",
                    other.type_str()
                ));
            }
            None => {}
        }
        if !bin_dirs.is_empty() {
            self.set("cni.bin_dirs", Value::Array(bin_dirs));
        }
        Ok(())
    }

    fn runtimes(&mut self, containerd: &str) -> Result<(), String> {
        let Some(Value::Table(runtimes)) = self.get(&format!("{containerd}.runtimes")).cloned()
        else {
            if let Some(name) = self.take_str(&format!("{containerd}.default_runtime_name"))? {
                self.out.dropped.push(format!(
                    "{containerd}.default_runtime_name = {name:?}: no runtimes are configured with it"
                ));
            }
            return Ok(());
        };
        let mut handlers = Table::new();
        let mut systemd = BTreeMap::new();
        for name in runtimes.keys() {
            let base = format!("{containerd}.runtimes.{name}");
            let runtime_type = self
                .take_str(&format!("{base}.runtime_type"))?
                .unwrap_or_default();
            let binary = self.take_str(&format!("{base}.options.BinaryName"))?;
            if let Some(Value::Boolean(cgroup)) =
                self.take(&format!("{base}.options.SystemdCgroup"))
            {
                systemd.insert(name.clone(), cgroup);
            }
            let shim = if runtime_type == RUNC_V2 || runtime_type.is_empty() {
                BERTH_SHIM.to_string()
            } else {
                shim_binary(&runtime_type)
                    .ok_or_else(|| format!("{base}.runtime_type: {runtime_type:?} names no shim"))?
            };
            let mut entry = Table::new();
            entry.insert("shim".into(), Value::String(shim));
            entry.insert(
                "runtime".into(),
                Value::String(binary.unwrap_or_else(|| "runc".into())),
            );
            handlers.insert(name.clone(), Value::Table(entry));
        }
        let default = self
            .take_str(&format!("{containerd}.default_runtime_name"))?
            .unwrap_or_else(|| "runc".to_string());
        if !handlers.contains_key(&default) {
            return Err(format!(
                "{containerd}.default_runtime_name: {default:?} is not among the runtimes"
            ));
        }
        self.set("default_runtime", Value::String(default));
        self.set("runtimes", Value::Table(handlers));
        let drivers: BTreeSet<bool> = systemd.values().copied().collect();
        if drivers.contains(&true) {
            self.set("cgroup_driver", Value::String("systemd".into()));
        }
        if drivers.len() > 1 {
            self.out.notes.push(format!(
                "SystemdCgroup differs between runtimes ({systemd:?}); berth has one \
                 cgroup_driver for all, set to systemd: match the kubelet's cgroupDriver"
            ));
        }
        Ok(())
    }

    fn registry(&mut self, registry: &str, hosts_dir: &Path) -> Result<(), String> {
        let config_path = self.take_str(&format!("{registry}.config_path"))?;
        let mirrors = self.get(&format!("{registry}.mirrors")).cloned();
        if let Some(Value::Table(mirrors)) = mirrors {
            self.out.hosts = mirrors::hosts_files(&mirrors, registry, &mut self.used)?;
        }
        match (config_path, self.out.hosts.is_empty()) {
            (Some(path), true) => self.set("registry.config_path", Value::String(path)),
            (Some(path), false) => {
                // containerd ignores mirrors when config_path is set; so does the result.
                self.out.dropped.push(format!(
                    "{registry}.mirrors: containerd ignores them when config_path is set ({path})"
                ));
                self.out.hosts.clear();
                self.set("registry.config_path", Value::String(path));
            }
            (None, false) => self.set(
                "registry.config_path",
                Value::String(hosts_dir.display().to_string()),
            ),
            (None, true) => {}
        }
        Ok(())
    }

    /// Names every leaf of the input that was not carried over.
    fn drop_unused(&mut self) {
        let mut leaves = Vec::new();
        collect_leaves(self.input, "", &mut leaves);
        for leaf in leaves {
            let carried = self
                .used
                .iter()
                .any(|u| leaf == *u || leaf.starts_with(&format!("{u}.")));
            if !carried
                && !self
                    .out
                    .dropped
                    .iter()
                    .any(|d| d.starts_with(&format!("{leaf}:")))
            {
                self.out
                    .dropped
                    .push(format!("{leaf}: {}", why_dropped(&leaf)));
            }
        }
    }
}

/// containerd's shim binary for a runtime type: `io.containerd.kata.v2` ->
/// `containerd-shim-kata-v2` (the name containerd itself looks up in PATH).
fn shim_binary(runtime_type: &str) -> Option<String> {
    let parts: Vec<&str> = runtime_type.split('.').collect();
    match parts.as_slice() {
        [.., name, version] if !name.is_empty() && version.starts_with('v') => {
            Some(format!("containerd-shim-{name}-{version}"))
        }
        _ => None,
    }
}

fn why_dropped(key: &str) -> &'static str {
    if key.contains(".registry.configs.") {
        "registry auth and TLS go in hosts.toml (TLS) or kubelet pull secrets (auth)"
    } else if key.contains(".options.") || key.contains(".runtimes.") {
        "berth's runtime handlers have only shim and runtime"
    } else if key.starts_with("plugins.") {
        "no berth equivalent"
    } else {
        "containerd's own daemon setting; berth has its own root, state and socket"
    }
}

/// Splits a dotted path on dots outside the plugin names (which contain dots).
fn split(path: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(plugin) = [V2_CRI, V3_RUNTIME, V3_IMAGES]
            .iter()
            .find(|p| rest.starts_with(*p))
        {
            parts.push(plugin.to_string());
            rest = rest[plugin.len()..].trim_start_matches('.');
            continue;
        }
        let (head, tail) = rest.split_once('.').unwrap_or((rest, ""));
        parts.push(head.to_string());
        rest = tail;
    }
    parts
}

fn collect_leaves(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Table(t) if !t.is_empty() => collect_leaves(t, &path, out),
            _ => out.push(path),
        }
    }
}

/// The whole output: comments naming what was not carried over, then the config.
pub fn document(conversion: &Conversion, source: &Path) -> String {
    let mut text = format!(
        "# berth config converted from the containerd config {} by `berth config from-containerd`.\n\
         # Keys not shown keep berth's defaults (config/config.toml documents them).\n",
        source.display()
    );
    for note in &conversion.notes {
        text.push_str(&format!("# note: {note}\n"));
    }
    for dropped in &conversion.dropped {
        text.push_str(&format!("# not carried over: {dropped}\n"));
    }
    text.push('\n');
    text.push_str(&render(&conversion.config));
    text
}

/// Where `berth config from-containerd` reads by default.
pub const DEFAULT_CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";

/// Writes the mirrors' hosts.toml files under `dir`.
pub fn write_hosts(dir: &Path, hosts: &[HostsFile]) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for file in hosts {
        let path = dir.join(&file.dir).join("hosts.toml");
        std::fs::create_dir_all(path.parent().unwrap_or(dir))
            .and_then(|_| std::fs::write(&path, &file.text))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
