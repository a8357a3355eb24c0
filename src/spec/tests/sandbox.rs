//! The infra container's spec, the annotations, and the JSON runc reads.

use super::*;

#[test]
fn annotations_name_the_pod_and_container() {
    let f = Fixture::new();
    let a = f.container()["annotations"].clone();
    assert_eq!(a[annotations::CONTAINER_TYPE], "container");
    assert_eq!(a[annotations::SANDBOX_ID], "p1");
    assert_eq!(a[annotations::CONTAINER_NAME], "app");
    assert_eq!(
        a[annotations::IMAGE_NAME],
        "docker.io/library/busybox:latest"
    );
    assert_eq!(a[annotations::SANDBOX_NAME], "web");
    assert_eq!(a[annotations::SANDBOX_NAMESPACE], "default");
    assert_eq!(a[annotations::SANDBOX_UID], "uid-1");
    let a = f.sandbox(None)["annotations"].clone();
    assert_eq!(a[annotations::CONTAINER_TYPE], "sandbox");
    assert_eq!(a[annotations::SANDBOX_ID], "p1");
    assert_eq!(
        a[annotations::SANDBOX_LOG_DIRECTORY],
        "/var/log/pods/default_web_uid-1"
    );
}
#[test]
fn sandbox_spec_for_a_pod_network() {
    let mut f = Fixture::new();
    f.sandbox.linux.cgroup_parent = "/kubepods/besteffort/poduid-1".into();
    f.sandbox.linux.sysctls = [("net.ipv4.ip_forward".to_string(), "1".to_string())].into();
    let spec = f.sandbox(Some(Path::new("/run/berth/netns/p1")));
    assert_eq!(spec["process"]["args"], json!(["/pause"]));
    assert_eq!(spec["process"]["noNewPrivileges"], true);
    assert_eq!(spec["process"]["user"]["uid"], 0);
    assert_eq!(spec["root"]["readonly"], true);
    assert_eq!(spec["hostname"], "web-1");
    assert_eq!(
        namespaces(&spec),
        [
            "mount",
            "network=/run/berth/netns/p1",
            "uts",
            "ipc",
            "pid",
            "cgroup"
        ]
    );
    assert_eq!(
        spec["linux"]["cgroupsPath"],
        "/kubepods/besteffort/poduid-1/p1"
    );
    assert_eq!(spec["linux"]["sysctl"], json!({"net.ipv4.ip_forward": "1"}));
    assert_eq!(spec["linux"]["resources"]["cpu"], json!({"shares": 2}));
    assert_eq!(caps_of(&spec).len(), 14);
    let shm = mount(&spec, "/dev/shm").expect("shm");
    assert_eq!(shm["source"], "/run/berth/pods/p1/shm");
    assert!(strings(&shm["options"]).contains(&"ro".into()));
    assert!(mount(&spec, "/etc/resolv.conf").is_some());
    assert!(mount(&spec, "/etc/hosts").is_none());
}

fn caps_of(spec: &Value) -> Vec<String> {
    strings(&spec["process"]["capabilities"]["bounding"])
}

#[test]
fn sandbox_spec_for_host_namespaces() {
    let mut f = Fixture::new();
    f.host.cgroup_v2 = false;
    f.sandbox.linux.cgroup_parent = "kubepods-besteffort.slice".into();
    let ns = &mut f.sandbox.linux.security_context.namespace_options;
    ns.network = NamespaceMode::Node;
    ns.pid = NamespaceMode::Node;
    ns.ipc = NamespaceMode::Node;
    let spec = f.sandbox(Some(Path::new("/ignored")));
    assert_eq!(namespaces(&spec), ["mount"]);
    // runc refuses a hostname without a UTS namespace of its own.
    assert!(spec["hostname"].is_null());
    assert_eq!(
        spec["linux"]["cgroupsPath"],
        "kubepods-besteffort.slice:berth:p1"
    );
    assert_eq!(mount(&spec, "/dev/shm").expect("shm")["source"], "/dev/shm");
}

#[test]
fn json_uses_the_field_names_runc_reads() {
    let mut f = Fixture::new();
    f.config.tty = true;
    f.config.linux.security_context.no_new_privs = true;
    let text = serde_json::to_string(&f.try_container().expect("spec")).expect("json");
    for field in [
        "\"ociVersion\":\"1.",
        "\"namespaces\":[",
        "\"noNewPrivileges\":true",
        "\"terminal\":true",
        "\"oomScoreAdj\":",
        "\"additionalGids\":",
        "\"maskedPaths\":",
        "\"readonlyPaths\":",
        "\"type\":\"network\",\"path\":\"/proc/42/ns/net\"",
    ] {
        assert!(text.contains(field), "{field} missing in {text}");
    }
    let spec: Value = serde_json::from_str(&text).expect("parse");
    assert!(spec["linux"]["namespaces"].is_array());
    assert!(spec["process"]["rlimits"].is_null());
}
