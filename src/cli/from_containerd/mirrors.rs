//! containerd's deprecated `registry.mirrors` as hosts.toml files, the format
//! berth (and containerd's own `config_path`) reads.

use std::collections::BTreeSet;

use toml::{Table, Value};

/// One hosts.toml: `<config_path>/<dir>/hosts.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostsFile {
    pub dir: String,
    pub text: String,
}

/// containerd's `"*"` mirror entry applies to every registry: `_default`.
const ANY_REGISTRY: &str = "*";

/// The hosts.toml files for `mirrors` (`registry -> { endpoint = [urls] }`);
/// marks the keys it carried in `used`.
pub fn hosts_files(
    mirrors: &Table,
    prefix: &str,
    used: &mut BTreeSet<String>,
) -> Result<Vec<HostsFile>, String> {
    let mut files = Vec::new();
    for (registry, entry) in mirrors {
        let key = format!("{prefix}.mirrors.{registry}.endpoint");
        let Some(endpoints) = entry.get("endpoint") else {
            continue;
        };
        let endpoints = endpoints
            .as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
            .ok_or_else(|| format!("{key}: expected a list of URLs"))?;
        used.insert(key);
        files.push(hosts_file(registry, &endpoints)?);
    }
    Ok(files)
}

fn hosts_file(registry: &str, endpoints: &[&str]) -> Result<HostsFile, String> {
    let (dir, upstream) = if registry == ANY_REGISTRY {
        ("_default".to_string(), None)
    } else if registry.is_empty() || registry.contains('/') || registry.starts_with('.') {
        return Err(format!(
            "registry.mirrors: {registry:?} is not a registry host"
        ));
    } else if registry == "docker.io" {
        (
            registry.to_string(),
            Some("https://registry-1.docker.io".to_string()),
        )
    } else {
        (registry.to_string(), Some(format!("https://{registry}")))
    };
    let mut text = format!(
        "# From containerd's registry.mirrors.{registry:?}: the mirrors in order,\n\
         # then the registry itself (containerd tried it last too).\n"
    );
    if let Some(upstream) = &upstream {
        text.push_str(&format!("server = {}\n", quote(upstream)));
    }
    for endpoint in endpoints {
        let endpoint = endpoint.trim_end_matches('/');
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(format!(
                "registry.mirrors.{registry:?}.endpoint: {endpoint:?} is not an http(s) URL"
            ));
        }
        if upstream.as_deref() == Some(endpoint) {
            continue;
        }
        text.push_str(&format!(
            "\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
            quote(endpoint)
        ));
    }
    Ok(HostsFile { dir, text })
}

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}
