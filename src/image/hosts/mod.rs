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
//!   send_credentials = true                  # berth: this mirror may get the pull's credentials
//!   token_realms = ["https://auth.example"]  # berth: token servers that may get them too
//! ```
//!
//! The last two keys are berth's own (containerd sends a pull's credentials to
//! every host): see [`crate::image::registry`] for where credentials go.

mod parse;
#[cfg(test)]
mod tests;

use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use parse::parse_hosts_file;

const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's API host, the upstream of `docker.io`.
pub(super) const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
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
    /// A mirror that may receive the pull's credentials (`send_credentials`);
    /// always false for the upstream, which gets them by being the registry.
    pub send_credentials: bool,
    /// Origins (`https://auth.example:443`) of token servers on other hosts
    /// that may receive this host's credentials (`token_realms`).
    pub token_realms: Vec<String>,
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

/// A hosts directory the operator got wrong is the node's precondition; a
/// registry name no directory can have is the request's fault; a file that
/// cannot be read is an I/O failure.
impl From<HostsError> for crate::error::Error {
    fn from(e: HostsError) -> Self {
        use crate::error::Error;
        match e {
            HostsError::Io { path, source } => Error::Io {
                context: format!("reading {}", path.display()),
                source,
            },
            e @ HostsError::InvalidRegistry { .. } => Error::InvalidArgument(e.to_string()),
            e => Error::FailedPrecondition(e.to_string()),
        }
    }
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
pub(crate) fn is_loopback(host_port: &str) -> bool {
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
    send_credentials: bool,
    token_realms: Vec<String>,
}

impl Settings {
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
            send_credentials: self.send_credentials,
            token_realms: self.token_realms,
        }
    }
}

/// `scheme://host:port` of a URL, the port spelled out even when it is the
/// scheme's default, so that origins compare as strings.
pub(crate) fn origin_of(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(format!("{}://{host}:{port}", url.scheme()).to_ascii_lowercase())
}
