//! The linux section: privilege, namespaces, resources, OOM score, paths, devices, seccomp.

use super::*;

#[test]
fn privileged_gets_everything() {
    let mut f = Fixture::new();
    f.config.linux.security_context.privileged = true;
    f.config.linux.security_context.seccomp = SeccompProfile::Localhost("/nonexistent".into());
    let err = f.try_container().unwrap_err();
    assert!(err.to_string().contains("its pod is not"), "{err}");

    f.sandbox.linux.security_context.privileged = true;
    f.devices.host = vec![char_device("/dev/kvm", 10, 232)];
    let spec = f.container();
    assert_eq!(caps(&f).len(), 41);
    assert_eq!(spec["linux"]["maskedPaths"], json!([]));
    assert_eq!(spec["linux"]["readonlyPaths"], json!([]));
    assert!(spec["linux"]["seccomp"].is_null());
    assert!(strings(&mount(&spec, "/sys").expect("sys")["options"]).contains(&"rw".into()));
    assert!(
        strings(&mount(&spec, "/sys/fs/cgroup").expect("cgroup")["options"]).contains(&"rw".into())
    );
    assert_eq!(spec["linux"]["devices"][0]["path"], "/dev/kvm");
    assert_eq!(
        spec["linux"]["resources"]["devices"],
        json!([{"allow": true, "access": "rwm"}])
    );
    assert!(!namespaces(&spec).contains(&"cgroup".to_string()));
}

#[test]
fn container_namespaces_follow_each_mode() {
    let mut f = Fixture::new();
    let joined = [
        "mount",
        "network=/proc/42/ns/net",
        "uts=/proc/42/ns/uts",
        "ipc=/proc/42/ns/ipc",
    ];
    let with = |extra: &[&str]| {
        joined
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        namespaces(&f.container()),
        with(&["pid=/proc/42/ns/pid", "cgroup"])
    );

    let ns = &mut f.config.linux.security_context.namespace_options;
    ns.pid = NamespaceMode::Container;
    assert_eq!(namespaces(&f.container()), with(&["pid", "cgroup"]));

    f.host.cgroup_v2 = false;
    let ns = &mut f.config.linux.security_context.namespace_options;
    ns.pid = NamespaceMode::Node;
    assert_eq!(namespaces(&f.container()), with(&[]));

    let ns = &mut f.config.linux.security_context.namespace_options;
    ns.pid = NamespaceMode::Target;
    ns.target_id = "c0".into();
    let err = f.try_container().unwrap_err();
    assert!(err.to_string().contains("\"c0\""), "{err}");
    f.target_pid = Some(77);
    assert_eq!(namespaces(&f.container()), with(&["pid=/proc/77/ns/pid"]));
}

#[test]
fn host_network_and_ipc_leave_those_namespaces_out() {
    let mut f = Fixture::new();
    let ns = &mut f.config.linux.security_context.namespace_options;
    ns.network = NamespaceMode::Node;
    ns.ipc = NamespaceMode::Node;
    let spec = f.container();
    assert_eq!(
        namespaces(&spec),
        ["mount", "pid=/proc/42/ns/pid", "cgroup"]
    );
    // Host IPC shares the host's /dev/shm.
    assert_eq!(mount(&spec, "/dev/shm").expect("shm")["source"], "/dev/shm");
}
#[test]
fn resources_map_to_cgroup_settings() {
    let mut f = Fixture::new();
    f.config.linux.resources = Resources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 1 << 30,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 1 << 21,
        }],
        unified: [("memory.high".to_string(), "900M".to_string())].into(),
        ..Default::default()
    };
    let r = f.container()["linux"]["resources"].clone();
    assert_eq!(
        r["cpu"],
        json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"})
    );
    assert_eq!(r["memory"], json!({"limit": 1 << 30, "swap": 1 << 30}));
    assert_eq!(
        r["hugepageLimits"],
        json!([{"pageSize": "2MB", "limit": 1 << 21}])
    );
    assert_eq!(r["unified"], json!({"memory.high": "900M"}));

    f.config.linux.resources = Resources {
        cpu_quota: -1,
        memory_limit_in_bytes: 1 << 30,
        memory_swap_limit_in_bytes: -1,
        ..Default::default()
    };
    let r = f.container()["linux"]["resources"].clone();
    assert_eq!(r["cpu"], json!({"quota": -1}));
    assert_eq!(r["memory"], json!({"limit": 1 << 30, "swap": -1}));

    f.config.linux.resources = Resources::default();
    let r = f.container()["linux"]["resources"].clone();
    assert!(r["cpu"].is_null() && r["memory"].is_null());
    assert_eq!(r["devices"], json!([{"allow": false, "access": "rwm"}]));
}

#[test]
fn oom_score_is_clamped_to_what_berthd_may_set() {
    let mut f = Fixture::new();
    f.host.min_oom_score_adj = -500;
    f.config.linux.resources.oom_score_adj = -999;
    assert_eq!(f.container()["process"]["oomScoreAdj"], -500);
    f.config.linux.resources.oom_score_adj = 1000;
    assert_eq!(f.container()["process"]["oomScoreAdj"], 1000);
    f.host.min_oom_score_adj = -1000;
    assert_eq!(
        f.sandbox(None)["process"]["oomScoreAdj"],
        SANDBOX_OOM_SCORE_ADJ
    );
    f.host.min_oom_score_adj = 0;
    assert_eq!(f.sandbox(None)["process"]["oomScoreAdj"], 0);
}
#[test]
fn masked_and_readonly_paths_default_unless_given() {
    let mut f = Fixture::new();
    let spec = f.container();
    assert_eq!(
        spec["linux"]["maskedPaths"],
        json!(crate::spec::linux::DEFAULT_MASKED_PATHS)
    );
    assert_eq!(
        spec["linux"]["readonlyPaths"],
        json!(crate::spec::linux::DEFAULT_READONLY_PATHS)
    );
    let sc = &mut f.config.linux.security_context;
    sc.masked_paths = vec!["/proc/kcore".into()];
    sc.readonly_paths = vec!["/proc/sys".into()];
    let spec = f.container();
    assert_eq!(spec["linux"]["maskedPaths"], json!(["/proc/kcore"]));
    assert_eq!(spec["linux"]["readonlyPaths"], json!(["/proc/sys"]));
}

#[test]
fn devices_carry_their_permissions() {
    let mut f = Fixture::new();
    f.devices
        .at
        .insert("/dev/fuse".into(), vec![char_device("/dev/fuse", 10, 229)]);
    f.devices.at.insert(
        "/dev/snd".into(),
        vec![char_device("/dev/snd/timer", 116, 33)],
    );
    f.config.devices = vec![
        Device {
            container_path: "/dev/fuse".into(),
            host_path: "/dev/fuse".into(),
            permissions: "rw".into(),
        },
        Device {
            container_path: "/dev/sound".into(),
            host_path: "/dev/snd".into(),
            permissions: "r".into(),
        },
    ];
    let spec = f.container();
    assert_eq!(
        spec["linux"]["devices"],
        json!([
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666, "uid": 0, "gid": 0},
            {"path": "/dev/sound/timer", "type": "c", "major": 116, "minor": 33, "fileMode": 0o666, "uid": 0, "gid": 0},
        ])
    );
    assert_eq!(
        spec["linux"]["resources"]["devices"],
        json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"},
            {"allow": true, "type": "c", "major": 116, "minor": 33, "access": "r"},
        ])
    );
    f.config.devices[0].host_path = "/dev/missing".into();
    let err = f.try_container().unwrap_err();
    assert!(err.to_string().contains("/dev/missing"), "{err}");
}

#[test]
fn seccomp_profiles() {
    let mut f = Fixture::new();
    f.config.linux.security_context.seccomp = SeccompProfile::RuntimeDefault;
    let default = f.container()["linux"]["seccomp"].clone();
    assert_eq!(default["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(default["defaultErrnoRet"], 1);
    // The default capability set has no CAP_SYS_ADMIN: clone is filtered, clone3 refused.
    let rules = default["syscalls"].as_array().expect("syscalls");
    let rule_for = |name: &str| {
        rules
            .iter()
            .filter(|r| {
                r["names"]
                    .as_array()
                    .is_some_and(|n| n.contains(&json!(name)))
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(rule_for("clone")[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(rule_for("clone3")[0]["action"], "SCMP_ACT_ERRNO");
    assert!(rule_for("mount").is_empty());
    f.config.linux.security_context.privileged = true;
    f.sandbox.linux.security_context.privileged = true;
    assert!(
        f.container()["linux"]["seccomp"].is_null(),
        "privileged containers run unfiltered"
    );
    f.config.linux.security_context.privileged = false;
    f.sandbox.linux.security_context.privileged = false;
    let profile = f._dir.path().join("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .expect("profile");
    f.config.linux.security_context.seccomp = SeccompProfile::Localhost(profile);
    let seccomp = f.container()["linux"]["seccomp"].clone();
    assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(seccomp["syscalls"][0]["names"], json!(["read", "write"]));
    f.config.linux.security_context.seccomp = SeccompProfile::Localhost("/no/such.json".into());
    let err = f.try_container().unwrap_err();
    assert!(matches!(err, SpecError::InvalidArgument(_)));
    assert!(err.to_string().contains("/no/such.json"), "{err}");
}

#[test]
fn host_devices_are_found_by_stat() {
    let null = HostDevices
        .lookup(Path::new("/dev/null"))
        .expect("/dev/null");
    assert_eq!(
        (null[0].kind, null[0].major, null[0].minor),
        (DeviceKind::Char, 1, 3)
    );
    let err = HostDevices.lookup(Path::new("/etc/passwd")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}
