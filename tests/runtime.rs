//! The RuntimeService calls of the foundation (Version, Status, RuntimeConfig,
//! UpdateRuntimeConfig) and the daemon's start-up contract, against a real berthd.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::TestBed;
use common::daemon::{Berthd, TestEnv};
use k8s_cri::v1 as cri;

fn write_config(env: &TestEnv, extra: &str) {
    let text = format!(
        "[registry]\nconfig_path = \"{}\"\n{extra}",
        env.certs_d.display()
    );
    std::fs::write(&env.config, text).unwrap();
}

fn condition(status: &cri::StatusResponse, kind: &str) -> cri::RuntimeCondition {
    status
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == kind))
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} condition in {status:?}"))
}

async fn status(berthd: &Berthd, verbose: bool) -> cri::StatusResponse {
    let cri = berthd.cri().await;
    cri.runtime_client()
        .status(cri::StatusRequest { verbose })
        .await
        .expect("Status")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn version_status_and_network_readiness() {
    let empty_cni_dir = |env: &TestEnv| {
        let cni_dir = env.path().join("net.d");
        std::fs::create_dir_all(&cni_dir).unwrap();
        write_config(
            env,
            &format!("[cni]\nconf_dir = \"{}\"\n", cni_dir.display()),
        );
    };
    let Some(bed) = TestBed::start_configured(empty_cni_dir).await else {
        return;
    };
    let TestBed { berthd, env, .. } = &bed;
    let cni_dir = env.path().join("net.d");

    let version = berthd.cri().await.version().await;
    assert_eq!(version.runtime_name, "berth");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));

    // An empty conf dir means the built-in bridge: ready on a fresh machine.
    let st = status(berthd, false).await;
    assert!(condition(&st, "RuntimeReady").status);
    let network = condition(&st, "NetworkReady");
    assert!(network.status, "the built-in network is ready: {network:?}");
    assert!(st.info.is_empty(), "info only when verbose");

    // Readiness follows the config directory without a restart: a config whose
    // plugin is not installed is not ready, and the reason names the plugin.
    std::fs::write(
        cni_dir.join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"test","plugins":[{"type":"berth-no-such-plugin"}]}"#,
    )
    .unwrap();
    let network = condition(&status(berthd, false).await, "NetworkReady");
    assert!(!network.status, "{network:?}");
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(
        network.message.contains("berth-no-such-plugin"),
        "{network:?}"
    );

    let verbose = status(berthd, true).await;
    let config: serde_json::Value =
        serde_json::from_str(&verbose.info["config"]).expect("config is JSON");
    assert_eq!(config["root"], env.root.display().to_string());
    assert_eq!(config["cni"]["conf_dir"], cni_dir.display().to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_config_reports_the_cgroup_driver() {
    for (setting, expected) in [
        ("", cri::CgroupDriver::Cgroupfs),
        ("cgroup_driver = \"systemd\"\n", cri::CgroupDriver::Systemd),
    ] {
        let driver = |env: &TestEnv| {
            // Top-level keys go before any table.
            let text = format!(
                "{setting}[registry]\nconfig_path = \"{}\"\n",
                env.certs_d.display()
            );
            std::fs::write(&env.config, text).unwrap();
        };
        let Some(bed) = TestBed::start_configured(driver).await else {
            return;
        };
        let response = bed
            .cri
            .runtime_client()
            .runtime_config(cri::RuntimeConfigRequest {})
            .await
            .expect("RuntimeConfig")
            .into_inner();
        assert_eq!(
            response.linux.map(|l| l.cgroup_driver),
            Some(expected as i32),
            "with {setting:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_cidr_is_validated_and_survives_a_restart() {
    let Some(mut bed) = TestBed::start().await else {
        return;
    };
    let berthd = &mut bed.berthd;
    let mut client = bed.cri.runtime_client();
    let err = client
        .update_runtime_config(common::pod_cidr_request("10.244.0.0/40"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("pod_cidr"), "{}", err.message());

    client
        .update_runtime_config(common::pod_cidr_request("10.244.1.0/24"))
        .await
        .expect("UpdateRuntimeConfig");
    assert_eq!(status(berthd, true).await.info["podCIDR"], "10.244.1.0/24");

    berthd.kill9();
    berthd.restart().await;
    assert_eq!(status(berthd, true).await.info["podCIDR"], "10.244.1.0/24");
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_of_later_stages_are_unimplemented() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let err = bed
        .cri
        .runtime_client()
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_is_created_0660() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let mode = std::fs::metadata(&bed.env.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");
}

/// Runs berthd expecting it to refuse to start; returns what it printed.
async fn refused_start(env: &TestEnv) -> String {
    let log = env.path().join("refused.log");
    let mut child = env
        .berthd_command()
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut exit = None;
    common::wait_until("berthd to exit", Duration::from_secs(10), || {
        exit = child.try_wait().unwrap();
        exit.is_some()
    })
    .await;
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!exit.unwrap().success(), "berthd started: {stderr}");
    assert!(!env.socket.exists(), "a refused berthd left a socket");
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_config_and_newer_store_are_refused_at_start() {
    if !common::prerequisites_met() {
        return;
    }
    let env = TestEnv::new();
    write_config(&env, "[cni]\nconf_dri = \"/x\"\n");
    let stderr = refused_start(&env).await;
    assert!(
        stderr.contains("conf_dri"),
        "unknown key not named: {stderr}"
    );
    assert!(
        stderr.contains(&env.config.display().to_string()),
        "config file not named: {stderr}"
    );

    // A store written by a newer berth.
    let env = TestEnv::new();
    {
        let db = redb::Database::create(env.root.join("meta.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta)
            .unwrap()
            .insert("schema_version", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let stderr = refused_start(&env).await;
    assert!(stderr.contains("schema version 99"), "{stderr}");
}
