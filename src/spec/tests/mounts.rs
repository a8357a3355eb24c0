//! Default, pod-file and CRI mounts.

use super::*;

#[test]
fn default_and_pod_mounts() {
    let mut f = Fixture::new();
    let spec = f.container();
    let destinations: Vec<&str> = spec["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["destination"].as_str())
        .collect();
    assert_eq!(
        destinations,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/dev/shm",
        ]
    );
    let hosts = mount(&spec, "/etc/hosts").expect("hosts");
    assert_eq!(hosts["type"], "bind");
    assert_eq!(hosts["source"], "/run/berth/pods/p1/hosts");
    assert_eq!(hosts["options"], json!(["rbind", "rprivate", "rw"]));
    assert_eq!(
        mount(&spec, "/dev/shm").expect("shm")["source"],
        "/run/berth/pods/p1/shm"
    );
    assert!(strings(&mount(&spec, "/sys").expect("sys")["options"]).contains(&"ro".into()));

    f.config.linux.security_context.readonly_rootfs = true;
    let spec = f.container();
    assert_eq!(spec["root"], json!({"path": "rootfs", "readonly": true}));
    let resolv = mount(&spec, "/etc/resolv.conf").expect("resolv");
    assert_eq!(resolv["options"], json!(["rbind", "rprivate", "ro"]));
}

#[test]
fn cri_mounts_replace_pod_files_and_set_propagation() {
    let mut f = Fixture::new();
    f.config.mounts = vec![
        Mount {
            container_path: "/data/cache".into(),
            host_path: "/srv/cache".into(),
            readonly: true,
            propagation: MountPropagation::HostToContainer,
            ..Default::default()
        },
        Mount {
            container_path: "/data".into(),
            host_path: "/srv/data".into(),
            readonly: false,
            propagation: MountPropagation::Private,
            ..Default::default()
        },
        Mount {
            container_path: "/etc/hosts".into(),
            host_path: "/etc/my-hosts".into(),
            ..Default::default()
        },
    ];
    let spec = f.container();
    let hosts: Vec<&Value> = spec["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter(|m| m["destination"] == "/etc/hosts")
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["source"], "/etc/my-hosts");
    let cache = mount(&spec, "/data/cache").expect("cache");
    assert_eq!(cache["options"], json!(["rbind", "rslave", "ro"]));
    assert_eq!(spec["linux"]["rootfsPropagation"], "rslave");
    // Parents are mounted before children.
    let pos = |d: &str| {
        spec["mounts"]
            .as_array()
            .and_then(|m| m.iter().position(|x| x["destination"] == d))
    };
    assert!(pos("/data") < pos("/data/cache"));

    f.config.mounts[1].propagation = MountPropagation::Bidirectional;
    let spec = f.container();
    assert_eq!(spec["linux"]["rootfsPropagation"], "rshared");
    assert_eq!(
        mount(&spec, "/data").expect("data")["options"],
        json!(["rbind", "rshared", "rw"])
    );

    // Recursively read-only: submounts too, through runc's `rro`.
    f.config.mounts[1] = Mount {
        readonly: true,
        recursive_read_only: true,
        ..f.config.mounts[1].clone()
    };
    f.config.mounts[1].propagation = MountPropagation::Private;
    assert_eq!(
        mount(&f.container(), "/data").expect("data")["options"],
        json!(["rbind", "rprivate", "ro", "rro"])
    );

    // A /dev of the user's own replaces every default under /dev.
    f.config.mounts = vec![Mount {
        container_path: "/dev".into(),
        host_path: "/dev".into(),
        ..Default::default()
    }];
    let spec = f.container();
    assert!(mount(&spec, "/dev/pts").is_none() && mount(&spec, "/dev/mqueue").is_none());
    assert_eq!(mount(&spec, "/dev").expect("dev")["type"], "bind");
}

#[test]
fn image_volumes_are_read_only_and_noexec_whatever_readonly_says() {
    let mut f = Fixture::new();
    f.config.mounts = vec![Mount {
        container_path: "/models".into(),
        host_path: "/run/berth/containers/c1/image-volumes/0".into(),
        readonly: false,
        image: "registry.example/models:1".into(),
        ..Default::default()
    }];
    let spec = f.container();
    let models = mount(&spec, "/models").expect("models");
    assert_eq!(
        models["options"],
        json!(["rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"])
    );
}
