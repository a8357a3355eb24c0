use std::path::Path;

use super::*;
use crate::config::{CgroupDriver, Config};

/// A containerd 1.7 config (version 2) as operators write them.
const V2: &str = r#"
version = 2
root = "/var/lib/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "10010"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
      runtime_type = "io.containerd.runc.v2"
      privileged_without_host_devices = true
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
        BinaryName = "/usr/bin/crun"
        SystemdCgroup = true
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
      runtime_type = "io.containerd.kata.v2"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["https://mirror.example:5000", "https://registry-1.docker.io"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."*"]
    endpoint = ["http://10.0.0.1:5000"]
  [plugins."io.containerd.grpc.v1.cri".registry.configs."mirror.example:5000".auth]
    username = "u"
    password = "p"
"#;

/// A containerd 2.x config (version 3): the CRI plugin split in three.
const V3: &str = r#"
version = 3
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "registry.k8s.io/pause:3.10"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "/etc/containerd/certs.d"
[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/opt/cni/bin", "/usr/libexec/cni"]
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "gvisor"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.gvisor]
      runtime_type = "io.containerd.runsc.v1"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "::1"
  stream_server_port = "0"
"#;

fn parsed(c: &Conversion) -> Config {
    Config::parse(&render(&c.config), Path::new("converted")).unwrap()
}

fn dropped(c: &Conversion, key: &str) -> bool {
    c.dropped.iter().any(|d| d.starts_with(&format!("{key}:")))
}

#[test]
fn version_2_carries_every_cri_setting_berth_has() {
    let hosts_dir = Path::new("/etc/berth/certs.d");
    let c = convert(V2, hosts_dir).unwrap();
    let config = parsed(&c);
    assert_eq!(config.sandbox_image, "registry.k8s.io/pause:3.9");
    assert_eq!(config.streaming.address.to_string(), "127.0.0.1");
    assert_eq!(config.streaming.port, 10010);
    assert_eq!(config.cni.conf_dir, Path::new("/etc/cni/net.d"));
    assert_eq!(config.cni.bin_dirs, vec![Path::new("/opt/cni/bin")]);
    assert_eq!(config.cgroup_driver, CgroupDriver::Systemd);
    assert_eq!(config.default_runtime, "runc");
    assert_eq!(config.runtimes.len(), 3);
    assert_eq!(
        config.runtimes["runc"].shim,
        Path::new("containerd-shim-berth-v2")
    );
    assert_eq!(config.runtimes["runc"].runtime, "runc");
    assert_eq!(config.runtimes["crun"].runtime, "/usr/bin/crun");
    assert_eq!(
        config.runtimes["kata"].shim,
        Path::new("containerd-shim-kata-v2")
    );
    assert_eq!(config.registry.config_path, hosts_dir);
    assert!(c.notes.iter().any(|n| n.contains("restrict_oom_score_adj")));

    let cri = "plugins.io.containerd.grpc.v1.cri";
    for key in [
        "root".to_string(),
        "grpc.address".to_string(),
        format!("{cri}.enable_selinux"),
        format!("{cri}.cni.max_conf_num"),
        format!("{cri}.containerd.snapshotter"),
        format!("{cri}.containerd.runtimes.crun.privileged_without_host_devices"),
        format!("{cri}.registry.configs.mirror.example:5000.auth.username"),
    ] {
        assert!(dropped(&c, &key), "{key} not listed in {:#?}", c.dropped);
    }
    for carried in [
        "sandbox_image",
        "stream_server_port",
        "cni.bin_dir",
        "SystemdCgroup",
        "BinaryName",
        "mirrors",
    ] {
        assert!(
            !c.dropped.iter().any(|d| d.contains(carried)),
            "{carried} listed as dropped: {:#?}",
            c.dropped
        );
    }
}

#[test]
fn mirrors_become_hosts_files_berth_reads() {
    let dir = tempfile::tempdir().unwrap();
    let c = convert(V2, dir.path()).unwrap();
    assert_eq!(c.hosts.len(), 2);
    write_hosts(dir.path(), &c.hosts).unwrap();
    let hub = crate::image::hosts::hosts_for(dir.path(), "docker.io").unwrap();
    let urls: Vec<String> = hub.iter().map(|h| format!("{h:?}")).collect();
    assert_eq!(hub.len(), 2, "{urls:?}");
    assert!(
        urls[0].contains("mirror.example:5000"),
        "mirror first: {urls:?}"
    );
    assert!(
        urls[1].contains("registry-1.docker.io"),
        "upstream last: {urls:?}"
    );
    let other = crate::image::hosts::hosts_for(dir.path(), "quay.io").unwrap();
    assert_eq!(other.len(), 2, "the \"*\" mirror applies to every registry");
    assert!(format!("{:?}", other[0]).contains("10.0.0.1:5000"));
}

#[test]
fn version_3_reads_the_split_plugins() {
    let c = convert(V3, Path::new("/unused")).unwrap();
    let config = parsed(&c);
    assert_eq!(config.sandbox_image, "registry.k8s.io/pause:3.10");
    assert_eq!(
        config.registry.config_path,
        Path::new("/etc/containerd/certs.d")
    );
    assert_eq!(
        config.cni.bin_dirs,
        vec![Path::new("/opt/cni/bin"), Path::new("/usr/libexec/cni")]
    );
    assert_eq!(config.streaming.address.to_string(), "::1");
    assert_eq!(config.streaming.port, 0);
    assert_eq!(config.default_runtime, "gvisor");
    assert_eq!(
        config.runtimes["gvisor"].shim,
        Path::new("containerd-shim-runsc-v1")
    );
    assert_eq!(config.cgroup_driver, CgroupDriver::Cgroupfs);
    assert!(c.hosts.is_empty());
    assert!(dropped(
        &c,
        "plugins.io.containerd.cri.v1.images.snapshotter"
    ));
    assert!(dropped(
        &c,
        "plugins.io.containerd.cri.v1.runtime.enable_selinux"
    ));
    assert_eq!(c.dropped.len(), 2, "{:#?}", c.dropped);
}

#[test]
fn bad_input_is_an_error_naming_the_key() {
    for (text, needle) in [
        ("version = 1\n", "version = 1"),
        ("not toml [", "not TOML"),
        (
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nstream_server_port = \"99999\"\n",
            "stream_server_port",
        ),
        (
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nstream_server_address = \"node1\"\n",
            "stream_server_address",
        ),
        (
            "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd]\ndefault_runtime_name = \"x\"\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n",
            "default_runtime_name",
        ),
        (
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\nendpoint = [\"ftp://x\"]\n",
            "endpoint",
        ),
    ] {
        let err = convert(text, Path::new("/h")).unwrap_err();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn document_lists_what_was_left_out_as_comments_and_parses() {
    let c = convert(V2, Path::new("/etc/berth/certs.d")).unwrap();
    let doc = document(&c, Path::new("/etc/containerd/config.toml"));
    assert!(doc.contains("# not carried over: root:"));
    Config::parse(&doc, Path::new("doc")).unwrap();
}

#[test]
fn metrics_address_carries_over_on_loopback_only() {
    for base in [V2, V3] {
        let text = format!("{base}\n[metrics]\n  address = \"127.0.0.1:1338\"\n");
        let c = convert(&text, Path::new("/h")).unwrap();
        assert_eq!(parsed(&c).metrics.address, "127.0.0.1:1338");
        assert!(!dropped(&c, "metrics.address"), "{:?}", c.dropped);

        let text = format!("{base}\n[metrics]\n  address = \"0.0.0.0:1338\"\n");
        let c = convert(&text, Path::new("/h")).unwrap();
        assert_eq!(parsed(&c).metrics.address, "");
        assert!(dropped(&c, "metrics.address"), "{:?}", c.dropped);
    }
}
