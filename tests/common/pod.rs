//! Pods for integration tests: the shim and pause binaries, a CNI network of the
//! test's own (bridge `bp<random>`, a /24 in 10.197.0.0/16, its own IPAM dir) that
//! is torn down on drop with whatever a failed test left running, and small CRI
//! helpers for pods.
//!
//! The shim and pause binaries are workspace members that integration tests of
//! the root package cannot name through CARGO_BIN_EXE. They are taken from
//! `BERTH_TEST_SHIM` / `BERTH_TEST_PAUSE` when set, else from the target dir
//! (`cargo test --workspace` builds the shim next to berthd; the pause binary must
//! be the static one from shims/pause/build-static.sh), and built when missing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_cri::v1 as cri;
use rand::Rng;

use super::daemon::{BERTHD, Cri, TestEnv};

const CNI_BIN: &str = "/usr/lib/cni";

/// CNI plugins every pod test's network uses.
pub const CNI_PLUGINS: [&str; 3] = ["bridge", "host-local", "loopback"];

/// Tools the pod tests run beyond the registry's: the runtime, the container
/// image's busybox, and what inspects a pod's network namespace.
const POD_TOOLS: [&str; 4] = [
    "/usr/sbin/runc",
    "/usr/bin/busybox",
    "/usr/bin/nsenter",
    "/usr/sbin/ip",
];

/// Whether this machine can run pods (and the registry tests' needs); prints
/// why not, or fails under CI.
pub fn prerequisites_met() -> bool {
    prerequisites_for_plugins(&CNI_PLUGINS)
}

/// Like [`prerequisites_met`], with these CNI plugins.
pub fn prerequisites_for_plugins(plugins: &[&str]) -> bool {
    let paths = (berth_testkit::REGISTRY_TOOLS.iter().map(|t| t.to_string()))
        .chain(POD_TOOLS.iter().map(|t| t.to_string()))
        .chain(plugins.iter().map(|p| format!("{CNI_BIN}/{p}")));
    berth_testkit::prerequisites_met_for(paths)
}

/// The shim and the static pause binary, built once per test process if needed.
pub fn binaries() -> &'static (PathBuf, PathBuf) {
    static BINARIES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
        let shim = std::env::var_os("BERTH_TEST_SHIM")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(BERTHD)
                    .with_file_name("containerd-shim-berth-v2")
                    .to_path_buf()
            });
        if !shim.exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-j1", "-p", "berth-shim"])
                .current_dir(workspace)
                .status()
                .expect("run cargo build -p berth-shim");
            assert!(status.success(), "cargo build -p berth-shim failed");
        }
        let pause = std::env::var_os("BERTH_TEST_PAUSE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                workspace.join("target/x86_64-unknown-linux-gnu/release/berth-pause")
            });
        if !pause.exists() {
            let out = Command::new("sh")
                .arg(workspace.join("shims/pause/build-static.sh"))
                .arg("-j1")
                .env("CARGO", env!("CARGO"))
                .output()
                .expect("run shims/pause/build-static.sh");
            assert!(
                out.status.success(),
                "build-static.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(shim.exists(), "no shim at {}", shim.display());
        assert!(pause.exists(), "no pause binary at {}", pause.display());
        (shim, pause)
    })
}

/// One test's world: a berthd config with its own bridge, subnet, and CNI dirs.
/// Dropping it deletes the bridge.
pub struct PodNet {
    state: PathBuf,
    pub bridge: String,
    pub octet: u8,
    ipam: PathBuf,
}

impl PodNet {
    /// Writes `env`'s config: the test's shim, pause and CNI network, with `extra`
    /// plugins after the bridge and `bin` searched before /usr/lib/cni.
    pub fn configure(env: &TestEnv, extra: &[serde_json::Value], bin: Option<&Path>) -> PodNet {
        let (shim, pause) = binaries();
        let mut rng = rand::rng();
        let bridge = format!("bp{:04x}", rng.random::<u16>());
        let octet = rng.random_range(1..=254u8);
        let ipam = env.path().join("ipam");
        let conf_dir = env.path().join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let mut plugins = vec![serde_json::json!({
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("10.197.{octet}.0/24")}]],
                "dataDir": ipam,
            },
        })];
        plugins.extend_from_slice(extra);
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": bridge, "plugins": plugins});
        std::fs::write(conf_dir.join("10-test.conflist"), conf.to_string()).unwrap();
        let bin_dirs: Vec<String> = bin
            .into_iter()
            .map(|p| p.display().to_string())
            .chain([CNI_BIN.to_string()])
            .collect();
        let config = format!(
            "pause_binary = \"{}\"\n\n[runtimes.berth]\nshim = \"{}\"\nruntime = \"runc\"\n\n\
             [registry]\nconfig_path = \"{}\"\n\n[cni]\nconf_dir = \"{}\"\nbin_dirs = {:?}\n",
            pause.display(),
            shim.display(),
            env.certs_d.display(),
            conf_dir.display(),
            bin_dirs,
        );
        std::fs::write(&env.config, config).unwrap();
        PodNet {
            state: env.state.clone(),
            bridge,
            octet,
            ipam,
        }
    }

    pub fn contains(&self, ip: &str) -> bool {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => v4.octets()[..3] == [10, 197, self.octet],
            _ => false,
        }
    }

    /// Addresses host-local holds for this network.
    pub fn allocated(&self) -> Vec<String> {
        super::dir_entries(&self.ipam.join(&self.bridge))
            .into_iter()
            .filter(|n| n.parse::<Ipv4Addr>().is_ok())
            .collect()
    }
}

impl Drop for PodNet {
    /// Whatever a failed test left running: its pods (infra process, shim, shm),
    /// their namespaces, the netns directory mount, the bridge.
    fn drop(&mut self) {
        let quiet = |cmd: &mut Command| {
            let _ = cmd.output();
        };
        let runc_root = self.state.join("runc/k8s.io");
        for id in super::dir_entries(&self.state.join("containers")) {
            quiet(
                Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "--force", &id]),
            );
            quiet(
                Command::new("umount")
                    .arg("-l")
                    .arg(self.state.join("containers").join(&id).join("rootfs")),
            );
        }
        for id in super::dir_entries(&self.state.join("pods")) {
            let pod = self.state.join("pods").join(&id);
            quiet(
                Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "--force", &id]),
            );
            if let Ok(pid) = std::fs::read_to_string(pod.join("shim.pid")) {
                quiet(Command::new("kill").args(["-9", pid.trim()]));
            }
            quiet(Command::new("umount").arg("-l").arg(pod.join("shm")));
        }
        for id in super::dir_entries(&self.state.join("netns")) {
            quiet(
                Command::new("umount")
                    .arg("-l")
                    .arg(self.state.join("netns").join(id)),
            );
        }
        quiet(
            Command::new("umount")
                .arg("-l")
                .arg(self.state.join("netns")),
        );
        quiet(Command::new("ip").args(["link", "del", &self.bridge]));
    }
}

pub fn pod_config(name: &str, labels: &[(&str, &str)]) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: HashMap::from([("note".to_string(), name.to_string())]),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// `config` on the host's network, with no hostname of its own (as the kubelet
/// sends a host-network pod: it has the node's).
pub fn host_network(mut config: cri::PodSandboxConfig) -> cri::PodSandboxConfig {
    config.hostname.clear();
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

pub async fn run_pod(cri: &Cri, config: cri::PodSandboxConfig) -> Result<String, tonic::Status> {
    let request = cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    };
    Ok(cri
        .runtime_client()
        .run_pod_sandbox(request)
        .await?
        .into_inner()
        .pod_sandbox_id)
}

pub async fn status(cri: &Cri, id: &str) -> Result<cri::PodSandboxStatusResponse, tonic::Status> {
    let request = cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.to_string(),
        verbose: true,
    };
    Ok(cri
        .runtime_client()
        .pod_sandbox_status(request)
        .await?
        .into_inner())
}

/// The verbose `info` of a pod, parsed.
pub async fn info(cri: &Cri, id: &str) -> serde_json::Value {
    let st = status(cri, id).await.expect("PodSandboxStatus");
    serde_json::from_str(&st.info["info"]).expect("info is JSON")
}

pub async fn state_and_ip(cri: &Cri, id: &str) -> (i32, String) {
    let st = status(cri, id)
        .await
        .expect("PodSandboxStatus")
        .status
        .unwrap();
    (st.state, st.network.unwrap_or_default().ip)
}

pub async fn list(cri: &Cri, filter: cri::PodSandboxFilter) -> Vec<String> {
    let request = cri::ListPodSandboxRequest {
        filter: Some(filter),
    };
    let mut ids: Vec<String> = cri
        .runtime_client()
        .list_pod_sandbox(request)
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    ids.sort();
    ids
}

pub async fn stop(cri: &Cri, id: &str) -> Result<(), tonic::Status> {
    let request = cri::StopPodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    };
    cri.runtime_client().stop_pod_sandbox(request).await?;
    Ok(())
}

pub async fn remove(cri: &Cri, id: &str) -> Result<(), tonic::Status> {
    let request = cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    };
    cri.runtime_client().remove_pod_sandbox(request).await?;
    Ok(())
}
