//! CDI devices (issue 12 item 3): a container names devices through
//! `cdi_devices` or a `cdi.k8s.io/*` annotation, berthd resolves them in the spec
//! files of `cdi_spec_dirs` and the container sees their device nodes, env and
//! mounts, with the device cgroup allowing what the spec permits.
//!
//! The device nodes are real: `/dev/null`'s node under another path (major and
//! minor read from the host by berthd), and nodes of a character major no driver
//! holds, so opening them tells the device cgroup's answer (EPERM: denied; ENXIO:
//! allowed, but no driver) apart.

mod common;

use std::path::Path;

use k8s_cri::v1 as cri;
use tonic::Code;

use common::world::World;

const KIND: &str = "berth.test/dev";

/// A character major no driver has registered here (the dynamic range), so
/// opening a node of it fails with ENXIO once the cgroup lets it through.
fn free_char_major() -> u32 {
    let devices = std::fs::read_to_string("/proc/devices").unwrap();
    let char_section = devices.split("Block devices:").next().unwrap();
    let used: Vec<u32> = char_section
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    (234..=254)
        .rev()
        .find(|m| !used.contains(m))
        .expect("a free character major")
}

fn spec_file(share: &Path, major: u32) -> serde_json::Value {
    serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": KIND,
        "devices": [
            {
                "name": "null",
                "containerEdits": {
                    "deviceNodes": [{"path": "/dev/berth-test0", "hostPath": "/dev/null"}],
                    "env": ["BERTH_CDI=null-device"],
                    "mounts": [{
                        "hostPath": share.display().to_string(),
                        "containerPath": "/cdi-share",
                        "options": ["ro", "bind"]
                    }]
                }
            },
            {
                "name": "probe",
                "containerEdits": {
                    "deviceNodes": [
                        {"path": "/dev/berth-rw", "type": "c", "major": major, "minor": 0, "permissions": "rw"},
                        {"path": "/dev/berth-ro", "type": "c", "major": major, "minor": 1, "permissions": "r"}
                    ]
                }
            }
        ]
    })
}

async fn exec_out(w: &World, id: &str, script: &str) -> String {
    let out = w
        .exec(id, &["sh", "-c", script], 10)
        .await
        .expect("ExecSync");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cdi_devices_reach_the_container_by_field_and_by_annotation() {
    let Some(mut w) = World::start().await else {
        return;
    };
    let spec_dir = w.env.path().join("cdi");
    let share = w.env.path().join("cdi-share");
    std::fs::create_dir_all(&spec_dir).unwrap();
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("hello"), "from-cdi-mount\n").unwrap();
    let major = free_char_major();
    std::fs::write(
        spec_dir.join("berth-test.json"),
        serde_json::to_vec(&spec_file(&share, major)).unwrap(),
    )
    .unwrap();
    // A broken file beside it is skipped, not fatal.
    std::fs::write(spec_dir.join("broken.yaml"), "cdiVersion: [").unwrap();
    let config = std::fs::read_to_string(&w.env.config).unwrap();
    std::fs::write(
        &w.env.config,
        format!(
            "cdi_spec_dirs = [{:?}]\n{config}",
            spec_dir.display().to_string()
        ),
    )
    .unwrap();
    w.berthd.restart().await;
    w.cri = w.berthd.cri().await;
    let pod = w.run_pod("cdi").await;

    let mut by_field = w.container_config("by-field", "exec sleep 1000");
    by_field.cdi_devices = [format!("{KIND}=null"), format!("{KIND}=probe")]
        .into_iter()
        .map(|name| cri::CdiDevice { name })
        .collect();
    let id = w.create(&pod, by_field).await.expect("CreateContainer");
    w.start_container(&id).await;
    let out = exec_out(
        &w,
        &id,
        "ls -l /dev/berth-test0; echo $BERTH_CDI; cat /cdi-share/hello",
    )
    .await;
    let mut lines = out.lines();
    let ls = lines.next().unwrap_or_default();
    assert!(
        ls.starts_with('c') && ls.contains(" 1,") && ls.contains(" 3 "),
        "{out}"
    );
    assert_eq!(lines.next(), Some("null-device"), "{out}");
    assert_eq!(lines.next(), Some("from-cdi-mount"), "{out}");
    // The cgroup allows the rw node (the open reaches the kernel, which has no
    // driver) and refuses writes to the r one.
    let out = exec_out(&w, &id, "echo x > /dev/berth-rw; echo x > /dev/berth-ro").await;
    assert!(out.contains("No such device or address"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    let out = exec_out(&w, &id, "echo x > /cdi-share/new").await;
    assert!(
        out.contains("Read-only file system"),
        "the mount's ro option: {out}"
    );

    let mut by_annotation = w.container_config("by-annotation", "exec sleep 1000");
    by_annotation
        .annotations
        .insert("cdi.k8s.io/berth-test".into(), format!("{KIND}=null"));
    let id = w
        .create(&pod, by_annotation)
        .await
        .expect("CreateContainer");
    w.start_container(&id).await;
    let out = exec_out(&w, &id, "ls -l /dev/berth-test0; echo $BERTH_CDI; ls /dev").await;
    assert!(out.starts_with('c'), "{out}");
    assert!(out.contains("null-device"), "{out}");
    assert!(
        !out.contains("berth-rw"),
        "only the device asked for: {out}"
    );

    let mut unknown = w.container_config("unknown", "exec sleep 1000");
    unknown.cdi_devices = vec![cri::CdiDevice {
        name: format!("{KIND}=absent"),
    }];
    let err = w.create(&pod, unknown).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&format!("{KIND}=absent")), "{err:?}");
    assert!(err.message().contains("broken.yaml"), "{err:?}");

    let mut malformed = w.container_config("malformed", "exec sleep 1000");
    malformed
        .annotations
        .insert("cdi.k8s.io/x".into(), "no-equals-sign".into());
    let err = w.create(&pod, malformed).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("cdi.k8s.io/x"), "{err:?}");
}
