//! Spec generation tests: build specs from small configs and check the JSON runc
//! would read, so field names are checked along with the values.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::*;

use crate::domain::config::{
    Capabilities, Device, HugepageLimit, Mount, MountPropagation, Resources, SeccompProfile,
    SupplementalGroupsPolicy,
};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    # a comment\n\
    app:x:1000:1000::/home/app:/bin/sh\n\
    broken line\n\
    nobody:x:65534:65534::/:/sbin/nologin\n";
const GROUP: &str =
    "root:x:0:\napp:x:1000:app\nstaff:x:50:other,app\nwheel:x:10:app\nnogroup:x:65534:\n";

#[derive(Default)]
struct FakeDevices {
    at: HashMap<PathBuf, Vec<HostDevice>>,
    host: Vec<HostDevice>,
}

impl DeviceLookup for FakeDevices {
    fn lookup(&self, host_path: &Path) -> io::Result<Vec<HostDevice>> {
        self.at
            .get(host_path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn host_devices(&self) -> io::Result<Vec<HostDevice>> {
        Ok(self.host.clone())
    }
}

fn char_device(path: &str, major: i64, minor: i64) -> HostDevice {
    HostDevice {
        path: path.into(),
        kind: DeviceKind::Char,
        major,
        minor,
        file_mode: 0o666,
        uid: 0,
        gid: 0,
    }
}

/// Every capability through CAP_CHECKPOINT_RESTORE (40) held.
const ALL_HELD: u64 = (1 << 41) - 1;

struct Fixture {
    _dir: tempfile::TempDir,
    config: ContainerConfig,
    sandbox: SandboxConfig,
    image: ImageConfigView,
    user_files: UserFiles,
    pod_files: PodFiles,
    devices: FakeDevices,
    target_pid: Option<u32>,
    host: HostFacts,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let user_files = UserFiles {
            passwd: PASSWD.as_bytes().to_vec(),
            group: GROUP.as_bytes().to_vec(),
        };
        let pod = Path::new("/run/berth/pods/p1");
        Fixture {
            _dir: dir,
            config: ContainerConfig {
                name: "app".into(),
                image: "docker.io/library/busybox:latest".into(),
                ..Default::default()
            },
            sandbox: SandboxConfig {
                name: "web".into(),
                uid: "uid-1".into(),
                namespace: "default".into(),
                hostname: "web-1".into(),
                log_directory: "/var/log/pods/default_web_uid-1".into(),
                ..Default::default()
            },
            image: ImageConfigView {
                entrypoint: vec!["/entry".into()],
                cmd: vec!["serve".into()],
                env: vec!["PATH=/image/bin".into(), "A=image".into()],
                ..Default::default()
            },
            user_files,
            pod_files: PodFiles {
                hostname: Some(pod.join("hostname")),
                hosts: Some(pod.join("hosts")),
                resolv_conf: Some(pod.join("resolv.conf")),
                shm: Some(pod.join("shm")),
            },
            devices: FakeDevices::default(),
            target_pid: None,
            host: HostFacts {
                min_oom_score_adj: -999,
                cgroup_v2: true,
                capabilities: ALL_HELD,
                lsm: Default::default(),
            },
        }
    }

    fn try_container(&self) -> Result<Spec, SpecError> {
        container_spec(&ContainerSpecInputs {
            id: "c1",
            sandbox_id: "p1",
            config: &self.config,
            sandbox: &self.sandbox,
            image: &self.image,
            image_name: "docker.io/library/busybox:latest",
            rootfs: Path::new("rootfs"),
            user_files: &self.user_files,
            sandbox_pid: 42,
            target_pid: self.target_pid,
            pod_files: &self.pod_files,
            node_hostname: "node-a",
            devices: &self.devices,
            host: self.host,
        })
    }

    fn container(&self) -> Value {
        serde_json::to_value(self.try_container().expect("container spec")).expect("json")
    }

    fn sandbox(&self, netns: Option<&Path>) -> Value {
        let spec = sandbox_spec(&SandboxSpecInputs {
            id: "p1",
            config: &self.sandbox,
            image: &ImageConfigView {
                entrypoint: vec!["/pause".into()],
                ..Default::default()
            },
            image_name: "berth-pause",
            rootfs: Path::new("/var/lib/berth/pause/rootfs"),
            user_files: &UserFiles::default(),
            netns_path: netns,
            pod_files: &self.pod_files,
            host: self.host,
        })
        .expect("sandbox spec");
        serde_json::to_value(spec).expect("json")
    }
}

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    out
}

/// The namespaces as "type" or "type=path", in spec order.
fn namespaces(spec: &Value) -> Vec<String> {
    spec["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .map(|n| match n["path"].as_str() {
            Some(p) => format!("{}={p}", n["type"].as_str().unwrap_or_default()),
            None => n["type"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

fn mount<'a>(spec: &'a Value, destination: &str) -> Option<&'a Value> {
    spec["mounts"]
        .as_array()?
        .iter()
        .find(|m| m["destination"] == destination)
}

fn caps(f: &Fixture) -> Vec<String> {
    let spec = f.container();
    let bounding = strings(&spec["process"]["capabilities"]["bounding"]);
    assert_eq!(
        bounding,
        strings(&spec["process"]["capabilities"]["effective"])
    );
    assert_eq!(
        bounding,
        strings(&spec["process"]["capabilities"]["permitted"])
    );
    bounding
}

mod linux;
mod lsm;
mod mounts;
mod process;
mod sandbox;
