//! Registry host configuration in containerd's `hosts.toml` format
//! (containerd docs/hosts.md), read from a `certs.d`-style directory:
//!
//! ```text
//! <config_path>/docker.io/hosts.toml
//! <config_path>/127.0.0.1:5000/hosts.toml     (or 127.0.0.1_5000_/)
//! <config_path>/_default/hosts.toml
//! ```
//!
//! ```toml
//! server = "https://registry-1.docker.io"    # the upstream, tried last
//!
//! [host."https://mirror.example:5000"]       # mirrors, tried first, in file order
//!   capabilities = ["pull", "resolve"]
//!   ca = "mirror-ca.pem"                     # relative to the hosts.toml directory
//!   skip_verify = false
//!   client = [["client.pem", "client.key"]]
//!   [host."https://mirror.example:5000".header]
//!     x-custom = "1"
//! ```

use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use reqwest::header::{HeaderName, HeaderValue};
use toml::de::{DeTable, DeValue};

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
const DEFAULT_DIR: &str = "_default";
const API_ROOT: &str = "/v2";

#[derive(Debug, Clone, PartialEq)]
pub struct RegistryHost {
    /// "https" or "http".
    pub scheme: String,
    /// "registry-1.docker.io" or "127.0.0.1:5000".
    pub host: String,
    /// The API root, normally "/v2"; with `override_path` the URL path as given.
    pub path: String,
    pub capabilities: Vec<Capability>,
    pub skip_verify: bool,
    /// CA certificate files to trust in addition to the built-in roots.
    pub ca: Vec<PathBuf>,
    /// Client certificates and their keys; no key means the key is in the
    /// certificate file.
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Extra headers sent with every request to this host.
    pub header: Vec<(String, String)>,
}

impl RegistryHost {
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Fetch content by digest (blobs, manifests by digest).
    Pull,
    /// Resolve a tag to a manifest.
    Resolve,
    Push,
}

const ALL_CAPABILITIES: [Capability; 3] = [Capability::Pull, Capability::Resolve, Capability::Push];

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: unknown key {key}", path.display())]
    UnknownKey { path: PathBuf, key: String },
    #[error("{}: {key}: {message}", path.display())]
    InvalidValue {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("registry name {registry:?} cannot name a host directory")]
    InvalidRegistry { registry: String },
}

/// Hosts to try for `registry` ("docker.io", "127.0.0.1:5000"), in order:
/// the mirrors of `<config_path>/<registry>/hosts.toml` (falling back to
/// `<config_path>/_default/hosts.toml`) in file order, then the upstream
/// `server`.
///
/// As in containerd, the first of `<registry with :port as _port_>`,
/// `<registry>` and `_default` that exists as a directory is used; in it, a
/// directory without `hosts.toml` is read in Docker's `certs.d` layout
/// (`*.crt` CAs, `*.cert` + `*.key` client pairs) for the upstream. Nothing
/// there at all means just the upstream with default settings.
pub fn hosts_for(config_path: &Path, registry: &str) -> Result<Vec<RegistryHost>, HostsError> {
    check_registry_name(registry)?;
    let Some(dir) = find_host_dir(config_path, registry)? else {
        return Ok(vec![default_upstream(registry, Settings::default())]);
    };
    let file = dir.join("hosts.toml");
    match std::fs::read_to_string(&file) {
        Ok(text) => parse_hosts_file(&file, &text, registry),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Ok(vec![default_upstream(registry, docker_certs(&dir)?)])
        }
        Err(source) => Err(HostsError::Io { path: file, source }),
    }
}

/// The registry name becomes a directory name: refuse anything that could
/// climb out of `config_path`.
fn check_registry_name(registry: &str) -> Result<(), HostsError> {
    if registry.is_empty() || registry.starts_with('.') || registry.contains(['/', '\\', '\0']) {
        return Err(HostsError::InvalidRegistry {
            registry: registry.to_string(),
        });
    }
    Ok(())
}

fn find_host_dir(config_path: &Path, registry: &str) -> Result<Option<PathBuf>, HostsError> {
    for dir in candidate_dirs(config_path, registry) {
        match std::fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => return Ok(Some(dir)),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(HostsError::Io { path: dir, source }),
        }
    }
    Ok(None)
}

/// containerd's lookup order: "host_port_" (for file systems that dislike
/// ':'), the literal "host:port", then "_default".
fn candidate_dirs(config_path: &Path, registry: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::with_capacity(3);
    if let Some((host, port)) = registry.rsplit_once(':') {
        dirs.push(config_path.join(format!("{host}_{port}_")));
    }
    dirs.push(config_path.join(registry));
    dirs.push(config_path.join(DEFAULT_DIR));
    dirs
}

/// The upstream when no `server` is configured.
fn default_upstream(registry: &str, settings: Settings) -> RegistryHost {
    let (scheme, host) = if registry == DOCKER_HUB {
        ("https", DOCKER_HUB_HOST)
    } else if is_loopback(registry) {
        // Local registries are normally plain HTTP; docker and containerd
        // treat them that way too.
        ("http", registry)
    } else {
        ("https", registry)
    };
    settings.into_host(scheme, host, API_ROOT.to_string())
}

/// `localhost`, 127.0.0.0/8 or ::1, with or without a port.
fn is_loopback(host_port: &str) -> bool {
    let host = if host_port.parse::<IpAddr>().is_ok() {
        host_port // a bare IPv6 address: its colons are not a port separator
    } else if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port
            .rsplit_once(':')
            .map_or(host_port, |(host, _port)| host)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Docker's `certs.d/<registry>/` layout: `*.crt` are CAs, `*.cert` client
/// certificates with the key in the same-named `*.key` (or in the `.cert`).
fn docker_certs(dir: &Path) -> Result<Settings, HostsError> {
    let io = |source| HostsError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort(); // read_dir order is arbitrary; keep the result stable
    let mut settings = Settings::default();
    for file in files {
        match file.extension().and_then(|e| e.to_str()) {
            Some("crt") => settings.ca.push(file),
            Some("cert") => {
                let key = file.with_extension("key");
                let key = key.is_file().then_some(key);
                settings.client.push((file, key));
            }
            _ => {}
        }
    }
    Ok(settings)
}

fn parse_hosts_file(
    file: &Path,
    text: &str,
    registry: &str,
) -> Result<Vec<RegistryHost>, HostsError> {
    let ctx = Ctx {
        file,
        dir: file.parent().unwrap_or(Path::new(".")),
    };
    let doc = DeTable::parse(text).map_err(|e| HostsError::Syntax {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut server = None;
    let mut server_settings = Settings::default();
    let mut hosts = Vec::new();
    for (key, value) in doc.get_ref() {
        let key: &str = key.get_ref();
        match key {
            "server" => server = Some(ctx.string(key, value.get_ref())?),
            "host" => hosts = ctx.mirrors(value.get_ref())?,
            _ => server_settings.apply(&ctx, key, key, value.get_ref())?,
        }
    }
    let upstream = match server {
        Some(url) => ctx.host_from_url("server", &url, server_settings)?,
        None => default_upstream(registry, server_settings),
    };
    hosts.push(upstream);
    Ok(hosts)
}

/// The settings a `[host."..."]` table (or the top level, for the server) may
/// carry.
#[derive(Debug, Default)]
struct Settings {
    capabilities: Vec<Capability>,
    skip_verify: bool,
    ca: Vec<PathBuf>,
    client: Vec<(PathBuf, Option<PathBuf>)>,
    header: Vec<(String, String)>,
    override_path: bool,
}

impl Settings {
    /// Applies `key` (spelled `key_path` in errors); unknown keys are errors
    /// so that typos do not silently change where images come from.
    fn apply(
        &mut self,
        ctx: &Ctx,
        key_path: &str,
        key: &str,
        value: &DeValue,
    ) -> Result<(), HostsError> {
        match key {
            "capabilities" => self.capabilities = ctx.capabilities(key_path, value)?,
            "skip_verify" => self.skip_verify = ctx.bool(key_path, value)?,
            "override_path" => self.override_path = ctx.bool(key_path, value)?,
            "ca" => self.ca = ctx.paths(key_path, value)?,
            "client" => self.client = ctx.client_pairs(key_path, value)?,
            "header" => self.header = ctx.headers(key_path, value)?,
            "dial_timeout" => {
                // A containerd key we accept so shared files keep working;
                // connections use the client's fixed connect timeout.
                let timeout = ctx.string(key_path, value)?;
                tracing::warn!(
                    file = %ctx.file.display(),
                    key = key_path,
                    %timeout,
                    "dial_timeout is not supported; ignored"
                );
            }
            _ => return Err(ctx.unknown(key_path)),
        }
        Ok(())
    }

    fn into_host(self, scheme: &str, host: &str, path: String) -> RegistryHost {
        let capabilities = if self.capabilities.is_empty() {
            ALL_CAPABILITIES.to_vec()
        } else {
            self.capabilities
        };
        RegistryHost {
            scheme: scheme.to_string(),
            host: host.to_string(),
            path,
            capabilities,
            skip_verify: self.skip_verify,
            ca: self.ca,
            client: self.client,
            header: self.header,
        }
    }
}

/// The file being parsed, for resolving relative paths and naming it in errors.
struct Ctx<'a> {
    file: &'a Path,
    dir: &'a Path,
}

impl Ctx<'_> {
    fn unknown(&self, key: &str) -> HostsError {
        HostsError::UnknownKey {
            path: self.file.to_path_buf(),
            key: key.to_string(),
        }
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> HostsError {
        HostsError::InvalidValue {
            path: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// `[host."<url>"]` tables, in the order they appear in the file.
    fn mirrors(&self, value: &DeValue) -> Result<Vec<RegistryHost>, HostsError> {
        let DeValue::Table(table) = value else {
            return Err(self.invalid("host", "must be a table of [host.\"<url>\"] tables"));
        };
        // The parsed table is sorted by name, but each key remembers where
        // it was written, and mirror order is priority order.
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(url, _)| url.span().start);
        entries
            .into_iter()
            .map(|(url, value)| self.mirror(url.get_ref(), value.get_ref()))
            .collect()
    }

    fn mirror(&self, url: &str, value: &DeValue) -> Result<RegistryHost, HostsError> {
        let prefix = format!("host.{url:?}");
        let DeValue::Table(table) = value else {
            return Err(self.invalid(&prefix, "must be a table"));
        };
        let mut settings = Settings::default();
        for (key, value) in table {
            let key: &str = key.get_ref();
            settings.apply(self, &format!("{prefix}.{key}"), key, value.get_ref())?;
        }
        self.host_from_url(&prefix, url, settings)
    }

    /// "https://mirror:5000/some/path" → scheme, host and API root. Without
    /// a scheme, https (as containerd).
    fn host_from_url(
        &self,
        key: &str,
        url: &str,
        settings: Settings,
    ) -> Result<RegistryHost, HostsError> {
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("https".to_string(), url),
        };
        if scheme != "https" && scheme != "http" {
            return Err(self.invalid(key, format!("{url:?}: scheme must be https or http")));
        }
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let bad_char = |c: char| c.is_whitespace() || c.is_control() || "@?#".contains(c);
        if host.is_empty() || host.contains(bad_char) || path.contains(bad_char) {
            return Err(self.invalid(key, format!("{url:?} is not a valid registry URL")));
        }
        let path = api_root(path, settings.override_path);
        Ok(settings.into_host(&scheme, host, path))
    }

    fn string(&self, key: &str, value: &DeValue) -> Result<String, HostsError> {
        match value {
            DeValue::String(s) => Ok(s.to_string()),
            other => Err(self.invalid(key, format!("must be a string, not {}", other.type_str()))),
        }
    }

    fn bool(&self, key: &str, value: &DeValue) -> Result<bool, HostsError> {
        match value {
            DeValue::Boolean(b) => Ok(*b),
            other => Err(self.invalid(key, format!("must be a boolean, not {}", other.type_str()))),
        }
    }

    fn strings(&self, key: &str, value: &DeValue) -> Result<Vec<String>, HostsError> {
        let DeValue::Array(items) = value else {
            return Err(self.invalid(key, format!("must be an array, not {}", value.type_str())));
        };
        items
            .iter()
            .map(|item| self.string(key, item.get_ref()))
            .collect()
    }

    /// A string or an array of strings.
    fn one_or_many(&self, key: &str, value: &DeValue) -> Result<Vec<String>, HostsError> {
        match value {
            DeValue::String(s) => Ok(vec![s.to_string()]),
            DeValue::Array(_) => self.strings(key, value),
            other => Err(self.invalid(
                key,
                format!(
                    "must be a string or an array of strings, not {}",
                    other.type_str()
                ),
            )),
        }
    }

    fn capabilities(&self, key: &str, value: &DeValue) -> Result<Vec<Capability>, HostsError> {
        let mut capabilities = Vec::new();
        for name in self.strings(key, value)? {
            let capability = match name.to_ascii_lowercase().as_str() {
                "pull" => Capability::Pull,
                "resolve" => Capability::Resolve,
                "push" => Capability::Push,
                _ => {
                    return Err(self.invalid(
                        key,
                        format!("unknown capability {name:?} (pull, resolve, push)"),
                    ));
                }
            };
            if !capabilities.contains(&capability) {
                capabilities.push(capability);
            }
        }
        Ok(capabilities)
    }

    fn paths(&self, key: &str, value: &DeValue) -> Result<Vec<PathBuf>, HostsError> {
        Ok(self
            .one_or_many(key, value)?
            .iter()
            .map(|p| self.resolve(p))
            .collect())
    }

    /// containerd's forms: "both.pem", ["both.pem", ...], or
    /// [["cert.pem", "key.pem"], ...]. Note that a flat pair of strings is
    /// two combined cert+key files, not a cert and its key.
    fn client_pairs(
        &self,
        key: &str,
        value: &DeValue,
    ) -> Result<Vec<(PathBuf, Option<PathBuf>)>, HostsError> {
        let items = match value {
            DeValue::String(s) => return Ok(vec![(self.resolve(s), None)]),
            DeValue::Array(items) => items,
            other => {
                return Err(self.invalid(
                    key,
                    format!("must be a string or an array, not {}", other.type_str()),
                ));
            }
        };
        let mut pairs = Vec::new();
        for item in items.iter() {
            let item = item.get_ref();
            if let DeValue::String(both) = item {
                pairs.push((self.resolve(both), None));
                continue;
            }
            match self.strings(key, item)?.as_slice() {
                [cert, key_file] => pairs.push((self.resolve(cert), Some(self.resolve(key_file)))),
                _ => return Err(self.invalid(key, "a client pair must be [\"<cert>\", \"<key>\"]")),
            }
        }
        Ok(pairs)
    }

    /// A table of header name to a value or an array of values, checked to
    /// be valid HTTP now rather than at request time.
    fn headers(&self, key: &str, value: &DeValue) -> Result<Vec<(String, String)>, HostsError> {
        let DeValue::Table(table) = value else {
            return Err(self.invalid(key, format!("must be a table, not {}", value.type_str())));
        };
        let mut headers = Vec::new();
        for (name, values) in table {
            let name: &str = name.get_ref();
            let key_path = format!("{key}.{name}");
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(self.invalid(&key_path, "not a valid HTTP header name"));
            }
            for value in self.one_or_many(&key_path, values.get_ref())? {
                if HeaderValue::from_str(&value).is_err() {
                    return Err(self.invalid(&key_path, "not a valid HTTP header value"));
                }
                headers.push((name.to_string(), value));
            }
        }
        Ok(headers)
    }

    /// Relative file names are relative to the directory of hosts.toml.
    fn resolve(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }
}

/// The API root for a URL path: "/v2" appended unless already there, or the
/// path as given with `override_path` (for registries with a non-standard
/// root).
fn api_root(path: &str, override_path: bool) -> String {
    let path = path.trim_end_matches('/');
    if override_path || path.ends_with(API_ROOT) {
        path.to_string()
    } else {
        format!("{path}{API_ROOT}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write_hosts(root: &Path, dir: &str, text: &str) {
        let dir = root.join(dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("hosts.toml"), text).unwrap();
    }

    fn hosts(root: &Path, registry: &str) -> Vec<RegistryHost> {
        match hosts_for(root, registry) {
            Ok(hosts) => hosts,
            Err(e) => panic!("hosts_for({registry}): {e}"),
        }
    }

    fn error(root: &Path, registry: &str) -> HostsError {
        match hosts_for(root, registry) {
            Ok(hosts) => panic!("expected an error, got {hosts:?}"),
            Err(e) => e,
        }
    }

    fn urls(hosts: &[RegistryHost]) -> Vec<String> {
        hosts
            .iter()
            .map(|h| format!("{}://{}{}", h.scheme, h.host, h.path))
            .collect()
    }

    #[test]
    fn defaults_without_configuration() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("does-not-exist");
        let cases = [
            ("docker.io", "https://registry-1.docker.io/v2"),
            ("quay.io", "https://quay.io/v2"),
            ("registry.example:5000", "https://registry.example:5000/v2"),
            ("localhost", "http://localhost/v2"),
            ("localhost:5000", "http://localhost:5000/v2"),
            ("127.0.0.1:5000", "http://127.0.0.1:5000/v2"),
            ("127.9.8.7", "http://127.9.8.7/v2"),
            ("[::1]:5000", "http://[::1]:5000/v2"),
            ("[::2]:5000", "https://[::2]:5000/v2"),
            ("128.0.0.1:5000", "https://128.0.0.1:5000/v2"),
        ];
        for (registry, want) in cases {
            for root in [tmp.path(), missing.as_path()] {
                let got = hosts(root, registry);
                assert_eq!(urls(&got), [want], "{registry}");
                assert_eq!(got[0].capabilities, ALL_CAPABILITIES);
                assert!(!got[0].skip_verify && got[0].ca.is_empty() && got[0].header.is_empty());
            }
        }
    }

    #[test]
    fn mirrors_in_file_order_then_server() {
        let tmp = tempfile::tempdir().unwrap();
        write_hosts(
            tmp.path(),
            "docker.io",
            r#"
server = "https://registry-1.docker.io"

[host."https://zz-mirror.example"]
  capabilities = ["pull", "resolve"]

[host."http://10.0.0.1:5000"]
  capabilities = ["pull"]
  skip_verify = true

[host."mm-mirror.example/base/"]
"#,
        );
        let got = hosts(tmp.path(), "docker.io");
        assert_eq!(
            urls(&got),
            [
                "https://zz-mirror.example/v2",
                "http://10.0.0.1:5000/v2",
                "https://mm-mirror.example/base/v2",
                "https://registry-1.docker.io/v2",
            ]
        );
        assert_eq!(got[0].capabilities, [Capability::Pull, Capability::Resolve]);
        assert_eq!(got[1].capabilities, [Capability::Pull]);
        assert!(got[1].skip_verify);
        assert!(got[0].has(Capability::Resolve) && !got[1].has(Capability::Resolve));
        assert_eq!(got[2].capabilities, ALL_CAPABILITIES);
        assert_eq!(got[3].capabilities, ALL_CAPABILITIES);
    }

    #[test]
    fn host_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("registry.example");
        write_hosts(
            tmp.path(),
            "registry.example",
            r#"
server = "https://registry.example"
ca = "upstream-ca.pem"
skip_verify = true
[header]
  x-upstream = "u"

[host."https://mirror.example:8443/artifactory/api/v2/"]
  override_path = true
  ca = ["/etc/ssl/a.pem", "b.pem"]
  client = [["c.pem", "c.key"], "both.pem"]
  [host."https://mirror.example:8443/artifactory/api/v2/".header]
    x-one = "1"
    x-many = ["a", "b"]

[host."https://other.example"]
  client = "combined.pem"
"#,
        );
        let got = hosts(tmp.path(), "registry.example");
        assert_eq!(got.len(), 3);
        let mirror = &got[0];
        assert_eq!(mirror.host, "mirror.example:8443");
        assert_eq!(mirror.path, "/artifactory/api/v2");
        assert_eq!(
            mirror.ca,
            [PathBuf::from("/etc/ssl/a.pem"), dir.join("b.pem")]
        );
        assert_eq!(
            mirror.client,
            [
                (dir.join("c.pem"), Some(dir.join("c.key"))),
                (dir.join("both.pem"), None)
            ]
        );
        let mut header = mirror.header.clone();
        header.sort();
        assert_eq!(
            header,
            [
                ("x-many".into(), "a".into()),
                ("x-many".into(), "b".into()),
                ("x-one".into(), "1".into())
            ]
        );
        assert!(!mirror.skip_verify);
        assert_eq!(got[1].client, [(dir.join("combined.pem"), None)]);

        let upstream = &got[2];
        assert_eq!(urls(&got[2..]), ["https://registry.example/v2"]);
        assert!(upstream.skip_verify);
        assert_eq!(upstream.ca, [dir.join("upstream-ca.pem")]);
        assert_eq!(
            upstream.header,
            [("x-upstream".to_string(), "u".to_string())]
        );
    }

    #[test]
    fn api_root_rules() {
        assert_eq!(api_root("", false), "/v2");
        assert_eq!(api_root("/", false), "/v2");
        assert_eq!(api_root("/v2", false), "/v2");
        assert_eq!(api_root("/v2/", false), "/v2");
        assert_eq!(api_root("/proxy", false), "/proxy/v2");
        assert_eq!(api_root("/proxy/", true), "/proxy");
        assert_eq!(api_root("", true), "");
    }

    #[test]
    fn server_without_scheme_is_https_and_missing_server_is_the_default() {
        let tmp = tempfile::tempdir().unwrap();
        write_hosts(
            tmp.path(),
            "localhost:5000",
            "server = \"localhost:5000\"\n",
        );
        assert_eq!(
            urls(&hosts(tmp.path(), "localhost:5000")),
            ["https://localhost:5000/v2"]
        );

        write_hosts(
            tmp.path(),
            "127.0.0.1:5000",
            "[host.\"https://m.example\"]\n",
        );
        assert_eq!(
            urls(&hosts(tmp.path(), "127.0.0.1:5000")),
            ["https://m.example/v2", "http://127.0.0.1:5000/v2"]
        );
    }

    #[test]
    fn directory_lookup_order() {
        let tmp = tempfile::tempdir().unwrap();
        write_hosts(
            tmp.path(),
            "_default",
            "[host.\"https://default-mirror\"]\n",
        );
        // No directory of its own: _default applies, with the registry's own upstream.
        assert_eq!(
            urls(&hosts(tmp.path(), "quay.io")),
            ["https://default-mirror/v2", "https://quay.io/v2"]
        );
        assert_eq!(
            urls(&hosts(tmp.path(), "docker.io")),
            [
                "https://default-mirror/v2",
                "https://registry-1.docker.io/v2"
            ]
        );

        // The literal host:port directory.
        write_hosts(tmp.path(), "10.1.1.1:5000", "[host.\"https://literal\"]\n");
        assert_eq!(
            urls(&hosts(tmp.path(), "10.1.1.1:5000")),
            ["https://literal/v2", "https://10.1.1.1:5000/v2"]
        );
        // containerd's host_port_ spelling wins over the literal one.
        write_hosts(
            tmp.path(),
            "10.1.1.1_5000_",
            "[host.\"https://underscored\"]\n",
        );
        assert_eq!(
            urls(&hosts(tmp.path(), "10.1.1.1:5000")),
            ["https://underscored/v2", "https://10.1.1.1:5000/v2"]
        );
    }

    #[test]
    fn directory_without_hosts_toml_uses_docker_cert_files() {
        let tmp = tempfile::tempdir().unwrap();
        write_hosts(
            tmp.path(),
            "_default",
            "[host.\"https://default-mirror\"]\n",
        );
        let dir = tmp.path().join("quay.io");
        fs::create_dir_all(&dir).unwrap();
        for name in ["ca.crt", "client.cert", "client.key", "lone.cert", "README"] {
            fs::write(dir.join(name), "x").unwrap();
        }
        // As in containerd, the registry's own directory shadows _default.
        let got = hosts(tmp.path(), "quay.io");
        assert_eq!(urls(&got), ["https://quay.io/v2"]);
        assert_eq!(got[0].ca, [dir.join("ca.crt")]);
        assert_eq!(
            got[0].client,
            [
                (dir.join("client.cert"), Some(dir.join("client.key"))),
                (dir.join("lone.cert"), None)
            ]
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_file_and_key() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a.example/hosts.toml");
        write_hosts(tmp.path(), "a.example", "servr = \"https://x\"\n");
        match error(tmp.path(), "a.example") {
            HostsError::UnknownKey { path, key } => {
                assert_eq!(path, file);
                assert_eq!(key, "servr");
            }
            e => panic!("wrong error {e}"),
        }
        write_hosts(
            tmp.path(),
            "a.example",
            "[host.\"https://m\"]\nskip_verfy = true\n",
        );
        let e = error(tmp.path(), "a.example");
        assert!(
            matches!(&e, HostsError::UnknownKey { key, .. } if key == "host.\"https://m\".skip_verfy"),
            "{e}"
        );
        let message = e.to_string();
        assert!(
            message.contains("hosts.toml") && message.contains("skip_verfy"),
            "{message}"
        );
    }

    #[test]
    fn invalid_values_are_errors_naming_file_and_key() {
        let tmp = tempfile::tempdir().unwrap();
        let cases = [
            ("skip_verify = \"yes\"", "skip_verify"),
            ("capabilities = [\"pull\", \"fly\"]", "capabilities"),
            ("capabilities = \"pull\"", "capabilities"),
            ("ca = 3", "ca"),
            ("client = [[\"a\", \"b\", \"c\"]]", "client"),
            ("server = \"ftp://x\"", "server"),
            ("server = \"https://\"", "server"),
            ("server = \"https://user@host\"", "server"),
            ("host = 1", "host"),
            ("[header]\n\"bad header\" = \"x\"", "header.bad header"),
            ("[header]\nx = 1", "header.x"),
            (
                "[host.\"https://m\"]\noverride_path = 1",
                "host.\"https://m\".override_path",
            ),
        ];
        for (text, want_key) in cases {
            write_hosts(tmp.path(), "b.example", text);
            match error(tmp.path(), "b.example") {
                HostsError::InvalidValue { path, key, message } => {
                    assert!(path.ends_with("b.example/hosts.toml"));
                    assert_eq!(key, want_key, "{text}: {message}");
                }
                e => panic!("{text}: wrong error {e}"),
            }
        }
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        write_hosts(tmp.path(), "c.example", "server = \n");
        let e = error(tmp.path(), "c.example");
        assert!(matches!(e, HostsError::Syntax { .. }), "{e}");
        assert!(e.to_string().contains("c.example/hosts.toml"), "{e}");
    }

    #[test]
    fn dial_timeout_is_accepted() {
        let tmp = tempfile::tempdir().unwrap();
        write_hosts(
            tmp.path(),
            "d.example",
            "[host.\"https://m\"]\ndial_timeout = \"3s\"\n",
        );
        assert_eq!(hosts(tmp.path(), "d.example").len(), 2);
    }

    #[test]
    fn registry_names_cannot_escape_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        for registry in ["", "..", "../etc", "a/b", ".hidden"] {
            assert!(
                matches!(
                    error(tmp.path(), registry),
                    HostsError::InvalidRegistry { .. }
                ),
                "{registry:?}"
            );
        }
    }
}
