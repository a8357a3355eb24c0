//! berthd's configuration: built-in defaults, overlaid by a TOML file, overlaid by flags.
//!
//! `config/config.toml` documents every key with its default; a test keeps the two equal.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Where berthd looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent data: metadata, content, snapshots.
    pub root: PathBuf,
    /// Runtime state, gone after a reboot.
    pub state: PathBuf,
    /// The CRI (and admin) endpoint.
    pub socket: PathBuf,
    /// A tracing filter: error, warn, info, debug, trace, or a full directive.
    pub log_level: String,
    /// How pod cgroups are managed: "cgroupfs" or "systemd".
    pub cgroup_driver: CgroupDriver,
    /// The infra container's image; empty means berth's built-in pause rootfs.
    pub sandbox_image: String,
    /// The pause binary copied into the built-in rootfs; empty means `berth-pause`
    /// next to the berthd executable. It must be statically linked.
    pub pause_binary: PathBuf,
    /// The runtime handler used when RunPodSandbox names none.
    pub default_runtime: String,
    /// Directories Localhost seccomp profiles are read from (where the kubelet puts
    /// them); a profile anywhere else is refused.
    pub seccomp_profile_roots: Vec<PathBuf>,
    /// CDI spec directories, lowest priority first (containerd's `cdi_spec_dirs`).
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// Give containers no volume for the paths their image declares (`VOLUME`);
    /// false copies the image's content there into a volume of the container's own.
    pub ignore_image_defined_volumes: bool,
    /// Runtime handlers by name, as RunPodSandbox's `runtime_handler` names them.
    pub runtimes: BTreeMap<String, RuntimeHandler>,
    pub registry: RegistryConfig,
    pub cni: CniConfig,
    pub streaming: StreamingConfig,
    pub metrics: MetricsConfig,
    pub tracing: TracingConfig,
}

/// One runtime handler: which shim to start and which OCI runtime it drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeHandler {
    /// A shim v2 binary; a bare name is looked up next to berthd, then in PATH.
    pub shim: PathBuf,
    /// The OCI runtime binary the shim runs (its `BinaryName` option).
    pub runtime: String,
}

impl Default for RuntimeHandler {
    fn default() -> Self {
        RuntimeHandler {
            shim: PathBuf::from("containerd-shim-berth-v2"),
            runtime: "runc".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Directory of per-registry `hosts.toml` files (containerd's format).
    pub config_path: PathBuf,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Largest manifest or index accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest image config accepted, in bytes.
    pub max_config_bytes: u64,
    /// A registry request that receives nothing for this long fails.
    pub stall_timeout_seconds: u64,
}

/// A registry silent for a minute is stuck, not slow (slow links still
/// trickle bytes); containerd's image_pull_progress_timeout is of this order.
const DEFAULT_STALL_TIMEOUT_SECONDS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// Network configs (`.conflist`, `.conf`, `.json`); the first by name is used.
    pub conf_dir: PathBuf,
    /// Directories searched for CNI plugin binaries, in order.
    pub bin_dirs: Vec<PathBuf>,
}

/// The exec/attach/port-forward server whose URLs Exec, Attach and PortForward
/// return. The kubelet connects to it from the same node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// The address to listen on.
    pub address: IpAddr,
    /// The TCP port; 0 picks a free one at start.
    pub port: u16,
}

pub use crate::config_telemetry::{MetricsConfig, TracingConfig};

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/berth"),
            state: PathBuf::from("/run/berth"),
            socket: PathBuf::from("/run/berth/berth.sock"),
            log_level: "info".to_string(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            sandbox_image: String::new(),
            pause_binary: PathBuf::new(),
            default_runtime: "berth".to_string(),
            seccomp_profile_roots: vec![PathBuf::from("/var/lib/kubelet/seccomp")],
            cdi_spec_dirs: vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
            ignore_image_defined_volumes: false,
            runtimes: BTreeMap::from([("berth".to_string(), RuntimeHandler::default())]),
            registry: RegistryConfig::default(),
            cni: CniConfig::default(),
            streaming: StreamingConfig::default(),
            metrics: MetricsConfig::default(),
            tracing: TracingConfig::default(),
        }
    }
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            config_path: PathBuf::from("/etc/berth/certs.d"),
            max_concurrent_downloads: 3,
            max_manifest_bytes: 4 << 20,
            max_config_bytes: 8 << 20,
            stall_timeout_seconds: DEFAULT_STALL_TIMEOUT_SECONDS,
        }
    }
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
        }
    }
}

impl Config {
    /// The handler for a RunPodSandbox `runtime_handler` (empty: the default).
    pub fn runtime_handler(&self, name: &str) -> Result<(String, &RuntimeHandler), Error> {
        let name = if name.is_empty() {
            self.default_runtime.as_str()
        } else {
            name
        };
        self.runtimes
            .get(name)
            .map(|h| (name.to_string(), h))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "runtime_handler: {name:?} is not configured (known: {})",
                    self.runtimes.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })
    }

    /// Parses a config document; unknown keys are errors that name the key.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|e| {
            Error::InvalidArgument(format!("config {}: {}", origin.display(), e.message()))
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Loads `path`; a missing file at the default location means the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(e) => Err(Error::InvalidArgument(format!(
                "reading config {}: {e}",
                path.display()
            ))),
        }
    }

    fn validate(&self, origin: &Path) -> Result<(), Error> {
        let bad = |key: &str, why: &str| {
            Err(Error::InvalidArgument(format!(
                "config {}: {key}: {why}",
                origin.display()
            )))
        };
        if self.registry.max_concurrent_downloads == 0 {
            return bad("registry.max_concurrent_downloads", "must be at least 1");
        }
        if self.registry.max_manifest_bytes < 4096 {
            return bad("registry.max_manifest_bytes", "must be at least 4096");
        }
        if self.registry.max_config_bytes < 4096 {
            return bad("registry.max_config_bytes", "must be at least 4096");
        }
        if self.registry.stall_timeout_seconds == 0 {
            return bad("registry.stall_timeout_seconds", "must be at least 1");
        }
        if !self.root.is_absolute() {
            return bad("root", "must be an absolute path");
        }
        if !self.state.is_absolute() {
            return bad("state", "must be an absolute path");
        }
        if !self.runtimes.contains_key(&self.default_runtime) {
            return bad(
                "default_runtime",
                &format!("no [runtimes.{}] is configured", self.default_runtime),
            );
        }
        if let Some((name, _)) = self
            .runtimes
            .iter()
            .find(|(_, h)| h.shim.as_os_str().is_empty())
        {
            return bad(&format!("runtimes.{name}.shim"), "must not be empty");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return bad("log_level", &e.to_string());
        }
        if let Err(why) = self.metrics.socket_address() {
            return bad("metrics.address", &why);
        }
        if let Err(why) = self.tracing.validate() {
            return bad(why.0, &why.1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENTED: &str = include_str!("../config/config.toml");

    #[test]
    fn documented_config_equals_defaults() {
        let parsed = Config::parse(DOCUMENTED, Path::new("config/config.toml")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[registry]\nmirrorz = 1\n", Path::new("x.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("mirrorz"), "{msg}");
        assert!(msg.contains("x.toml"), "{msg}");
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c =
            Config::parse("[registry]\nmax_concurrent_downloads = 5\n", Path::new("x")).unwrap();
        assert_eq!(c.registry.max_concurrent_downloads, 5);
        assert_eq!(c.registry.config_path, PathBuf::from("/etc/berth/certs.d"));
        assert_eq!(c.cni, CniConfig::default());
    }

    #[test]
    fn invalid_values_are_refused() {
        let err = Config::parse("[registry]\nmax_concurrent_downloads = 0\n", Path::new("x"))
            .unwrap_err();
        assert!(err.to_string().contains("max_concurrent_downloads"));
        let err = Config::parse("cgroup_driver = \"cgroupv3\"\n", Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("cgroupv3"), "{err}");
    }

    #[test]
    fn missing_default_file_means_defaults() {
        let c = Config::load(None);
        // The machine running the tests may have a real /etc/berth/config.toml.
        if !Path::new(DEFAULT_CONFIG_PATH).exists() {
            assert_eq!(c.unwrap(), Config::default());
        }
        assert!(Config::load(Some(Path::new("/nonexistent/berth.toml"))).is_err());
    }
}
