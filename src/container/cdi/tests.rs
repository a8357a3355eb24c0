use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxBuilder, LinuxResourcesBuilder, ProcessBuilder, Spec, SpecBuilder};

use super::*;
use crate::spec::{DeviceKind, DeviceLookup, HostDevice};

/// One host node: /dev/vendor0, char 240:7, 0660, owned by 0:44.
struct OneNode;

impl DeviceLookup for OneNode {
    fn lookup(&self, host_path: &Path) -> io::Result<Vec<HostDevice>> {
        if host_path != Path::new("/dev/vendor0") {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(vec![HostDevice {
            path: host_path.to_path_buf(),
            kind: DeviceKind::Char,
            major: 240,
            minor: 7,
            file_mode: 0o660,
            uid: 0,
            gid: 44,
        }])
    }
    fn host_devices(&self) -> io::Result<Vec<HostDevice>> {
        Ok(Vec::new())
    }
}

const SPEC_JSON: &str = r#"{
  "cdiVersion": "0.6.0",
  "kind": "vendor.com/gpu",
  "someFutureField": {"ignored": true},
  "containerEdits": {"env": ["VENDOR_COMMON=1"]},
  "devices": [{
    "name": "gpu0",
    "annotations": {"x": "y"},
    "containerEdits": {
      "deviceNodes": [{"path": "/dev/gpu0", "hostPath": "/dev/vendor0", "permissions": "rw"}],
      "mounts": [{"hostPath": "/opt/vendor/lib", "containerPath": "/usr/lib/vendor", "options": ["ro", "bind"]}],
      "env": ["GPU=0"],
      "hooks": [{"hookName": "createContainer", "path": "/usr/bin/vendor-hook", "args": ["vendor-hook", "x"]}],
      "additionalGIDs": [44, 0]
    }
  }]
}"#;

const SPEC_YAML: &str = "cdiVersion: 1.0.0\nkind: other.org/fpga\ndevices:\n  - name: f1\n    containerEdits:\n      env: [\"FPGA=1\"]\n";

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn base_spec() -> Spec {
    let mut spec = SpecBuilder::default()
        .process(
            ProcessBuilder::default()
                .env(vec!["PATH=/bin".to_string(), "GPU=x".to_string()])
                .build()
                .unwrap(),
        )
        .linux(
            LinuxBuilder::default()
                .resources(
                    LinuxResourcesBuilder::default()
                        .devices(vec![])
                        .build()
                        .unwrap(),
                )
                .devices(vec![])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    spec.set_hooks(None);
    spec.set_mounts(Some(Vec::new()));
    spec
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_device_gets_its_node_mount_env_hook_and_groups() {
    let dir = dir_with(&[("vendor.json", SPEC_JSON)]);
    let mut spec = base_spec();
    inject(
        &mut spec,
        &names(&["vendor.com/gpu=gpu0"]),
        &[dir.path().to_path_buf()],
        &OneNode,
    )
    .unwrap();

    let linux = spec.linux().as_ref().unwrap();
    let node = &linux.devices().as_ref().unwrap()[0];
    assert_eq!(node.path(), Path::new("/dev/gpu0"));
    assert_eq!(
        (node.major(), node.minor()),
        (240, 7),
        "major/minor from the host node"
    );
    assert_eq!(
        (node.file_mode(), node.uid(), node.gid()),
        (Some(0o660), Some(0), Some(44))
    );
    let rule = &linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap()[0];
    assert!(rule.allow());
    assert_eq!(
        (rule.major(), rule.minor(), rule.access().as_deref()),
        (Some(240), Some(7), Some("rw"))
    );

    let mount = &spec.mounts().as_ref().unwrap()[0];
    assert_eq!(mount.destination(), Path::new("/usr/lib/vendor"));
    assert_eq!(
        mount.source().as_deref(),
        Some(Path::new("/opt/vendor/lib"))
    );

    let process = spec.process().as_ref().unwrap();
    let env = process.env().as_ref().unwrap();
    assert!(
        env.contains(&"VENDOR_COMMON=1".to_string()),
        "spec-level edits apply: {env:?}"
    );
    assert!(
        env.contains(&"GPU=0".to_string()) && !env.contains(&"GPU=x".to_string()),
        "{env:?}"
    );
    assert_eq!(
        process.user().additional_gids().as_deref(),
        Some(&[44][..]),
        "group 0 is never added"
    );

    let hooks = spec
        .hooks()
        .as_ref()
        .unwrap()
        .create_container()
        .as_ref()
        .unwrap();
    assert_eq!(hooks[0].path(), Path::new("/usr/bin/vendor-hook"));
}

#[test]
fn an_unknown_device_is_not_found_and_named_with_the_skipped_files() {
    let dir = dir_with(&[("vendor.json", SPEC_JSON), ("broken.json", "{ not json")]);
    let err = inject(
        &mut base_spec(),
        &names(&["vendor.com/gpu=gpu9"]),
        &[dir.path().to_path_buf()],
        &OneNode,
    )
    .unwrap_err();
    let CdiError::NotFound(message) = err else {
        panic!("{err:?}")
    };
    assert!(message.contains("vendor.com/gpu=gpu9"), "{message}");
    assert!(message.contains("broken.json"), "{message}");
}

#[test]
fn yaml_specs_load_and_a_later_directory_overrides_an_earlier_one() {
    let low = dir_with(&[("a.yaml", SPEC_YAML)]);
    let high = dir_with(&[("b.yml", &SPEC_YAML.replace("FPGA=1", "FPGA=2"))]);
    let mut spec = base_spec();
    inject(
        &mut spec,
        &names(&["other.org/fpga=f1"]),
        &[low.path().into(), high.path().into()],
        &OneNode,
    )
    .unwrap();
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert!(
        env.contains(&"FPGA=2".to_string()) && !env.contains(&"FPGA=1".to_string()),
        "{env:?}"
    );
}

#[test]
fn the_same_device_twice_in_one_directory_is_refused() {
    let dir = dir_with(&[("a.yaml", SPEC_YAML), ("b.yaml", SPEC_YAML)]);
    let err = inject(
        &mut base_spec(),
        &names(&["other.org/fpga=f1"]),
        &[dir.path().into()],
        &OneNode,
    )
    .unwrap_err();
    assert!(
        matches!(&err, CdiError::Invalid(m) if m.contains("a.yaml") && m.contains("b.yaml")),
        "{err:?}"
    );
}

#[test]
fn bad_spec_files_are_skipped_whole() {
    for (why, text) in [
        ("a future version", SPEC_YAML.replace("1.0.0", "9.0.0")),
        (
            "a relative device path",
            SPEC_JSON.replace("\"path\": \"/dev/gpu0\"", "\"path\": \"dev/gpu0\""),
        ),
        (
            "a bad kind",
            SPEC_JSON.replace("vendor.com/gpu", "vendor.com"),
        ),
        (
            "an unknown hook",
            SPEC_JSON.replace("createContainer", "whenever"),
        ),
        ("bad permissions", SPEC_JSON.replace("\"rw\"", "\"rx\"")),
    ] {
        let dir = dir_with(&[("s.yaml", &text)]);
        let device = if text.contains("fpga") {
            "other.org/fpga=f1"
        } else {
            "vendor.com/gpu=gpu0"
        };
        let err = inject(
            &mut base_spec(),
            &names(&[device]),
            &[dir.path().into()],
            &OneNode,
        )
        .unwrap_err();
        assert!(matches!(err, CdiError::NotFound(_)), "{why}: {err:?}");
    }
}

#[test]
fn an_oversized_spec_file_is_not_read() {
    let mut big = SPEC_YAML.to_string();
    big.push_str(&format!("# {}\n", "x".repeat(MAX_SPEC_BYTES as usize)));
    let dir = dir_with(&[("big.yaml", &big)]);
    let err = inject(
        &mut base_spec(),
        &names(&["other.org/fpga=f1"]),
        &[dir.path().into()],
        &OneNode,
    )
    .unwrap_err();
    assert!(
        matches!(&err, CdiError::NotFound(m) if m.contains("larger than")),
        "{err:?}"
    );
}

#[test]
fn a_missing_host_node_names_the_device() {
    let text = SPEC_JSON.replace("/dev/vendor0", "/dev/absent");
    let dir = dir_with(&[("v.json", &text)]);
    let err = inject(
        &mut base_spec(),
        &names(&["vendor.com/gpu=gpu0"]),
        &[dir.path().into()],
        &OneNode,
    )
    .unwrap_err();
    assert!(
        matches!(&err, CdiError::Invalid(m) if m.contains("vendor.com/gpu=gpu0") && m.contains("/dev/absent")),
        "{err:?}"
    );
}

#[test]
fn requested_devices_come_from_the_field_and_the_annotations_without_repeats() {
    let annotations = BTreeMap::from([
        (
            "cdi.k8s.io/a".to_string(),
            "vendor.com/gpu=gpu1,vendor.com/gpu=gpu0".to_string(),
        ),
        ("other.io/x".to_string(), "not=a device".to_string()),
    ]);
    let got = names::requested(&names(&["vendor.com/gpu=gpu0"]), &annotations).unwrap();
    assert_eq!(got, names(&["vendor.com/gpu=gpu0", "vendor.com/gpu=gpu1"]));

    for (field, bad) in [
        ("cdi_devices[0].name", "gpu0"),
        ("cdi_devices[0].name", "vendor.com/gpu="),
        ("cdi_devices[0].name", "vendor.com/gpu=a b"),
        ("cdi_devices[0].name", "1vendor.com/gpu=x"),
    ] {
        let (f, _) = names::requested(&names(&[bad]), &BTreeMap::new()).unwrap_err();
        assert_eq!(f, field, "{bad}");
    }
    let bad = BTreeMap::from([("cdi.k8s.io/a".to_string(), "vendor.com/gpu=ok,".to_string())]);
    let (f, _) = names::requested(&[], &bad).unwrap_err();
    assert_eq!(f, "annotations[\"cdi.k8s.io/a\"]");
}

#[test]
fn nothing_is_read_without_devices() {
    let mut spec = base_spec();
    let before = spec.clone();
    inject(&mut spec, &[], &[PathBuf::from("/nonexistent")], &OneNode).unwrap();
    assert_eq!(spec, before);
}
