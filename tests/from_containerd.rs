//! `berth config from-containerd` (issue 14 item 5): the config it prints for a
//! containerd 1.x (version 2) and 2.x (version 3) CRI config is one berthd
//! starts with and serves as converted; mirrors land as hosts.toml files.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::TestBed;
use common::daemon::{BERTH, Berthd, TestEnv};
use k8s_cri::v1 as cri;

fn v2(cni: &Path) -> String {
    format!(
        r#"version = 2
root = "/var/lib/containerd"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
        BinaryName = "crun"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["https://mirror.example:5000"]
"#,
        cni = cni.display()
    )
}

fn v3(cni: &Path, certs: &Path) -> String {
    format!(
        r#"version = 3
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "registry.k8s.io/pause:3.10"
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "{certs}"
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/usr/lib/cni"]
  conf_dir = "{cni}"
[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata]
    runtime_type = "io.containerd.kata.v2"
    snapshotter = "devmapper"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_port = "0"
"#,
        cni = cni.display(),
        certs = certs.display()
    )
}

/// Runs the conversion; returns (stdout, stderr).
fn convert(env: &TestEnv, containerd: &str, extra: &[&str]) -> (String, String) {
    let input = env.outside.join("containerd.toml");
    fs::write(&input, containerd).unwrap();
    let out = Command::new(BERTH)
        .args(["config", "from-containerd"])
        .arg(&input)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "berth config from-containerd failed: {stderr}"
    );
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

async fn handlers_and_driver(berthd: &Berthd) -> (Vec<String>, i32) {
    let mut client = berthd.cri().await.runtime_client();
    let status = client
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let names = status
        .runtime_handlers
        .into_iter()
        .map(|h| h.name)
        .collect();
    let config = client
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    (names, config.linux.unwrap().cgroup_driver)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_converted_containerd_1_config_starts_berthd() {
    let converted_v2 = |env: &TestEnv| {
        let cni = env.outside.join("net.d");
        let hosts = env.outside.join("certs.d");
        let hosts_arg = hosts.to_str().unwrap();
        let (config, stderr) =
            convert(env, &v2(&cni), &["--hosts-dir", hosts_arg, "--write-hosts"]);
        assert!(stderr.contains("not carried over: root:"), "{stderr}");
        assert!(config.contains("# not carried over: root:"), "{config}");
        let hub = fs::read_to_string(hosts.join("docker.io/hosts.toml")).unwrap();
        assert!(
            hub.contains("[host.\"https://mirror.example:5000\"]"),
            "{hub}"
        );
        fs::write(&env.config, &config).unwrap();
    };
    let Some(bed) = TestBed::start_configured(converted_v2).await else {
        return;
    };
    let (handlers, driver) = handlers_and_driver(&bed.berthd).await;
    assert_eq!(handlers, ["", "crun", "runc"]);
    assert_eq!(driver, cri::CgroupDriver::Systemd as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_converted_containerd_2_config_starts_berthd() {
    let converted_v3 = |env: &TestEnv| {
        let cni = env.outside.join("net.d");
        let (config, stderr) = convert(env, &v3(&cni, &env.certs_d), &[]);
        assert!(stderr.contains("runtimes.kata.snapshotter"), "{stderr}");
        assert!(config.contains("containerd-shim-kata-v2"), "{config}");
        fs::write(&env.config, &config).unwrap();
    };
    let Some(bed) = TestBed::start_configured(converted_v3).await else {
        return;
    };
    let (handlers, driver) = handlers_and_driver(&bed.berthd).await;
    assert_eq!(handlers, ["", "kata", "runc"]);
    assert_eq!(driver, cri::CgroupDriver::Cgroupfs as i32);
}
