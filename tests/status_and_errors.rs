//! What status calls echo and what errors answer, against a real berthd, shim,
//! runc and CNI: the runtime handler as asked, a host-network pod refused a
//! hostname of its own, bad paths and references refused as InvalidArgument
//! naming the field, runc's refusals answered Unknown with runc's message (not
//! Unavailable, which tells a client to retry), and verbose status that follows
//! UpdateContainerResources and a network namespace removed from outside.

mod common;

use std::path::Path;

use common::pod;
use common::world::World;
use k8s_cri::v1 as cri;
use tonic::Code;

/// What the daemon's config names its default handler (tests/common/daemon.rs).
const DEFAULT_HANDLER: &str = "berth";

async fn run_pod_with_handler(
    w: &World,
    config: cri::PodSandboxConfig,
    handler: &str,
) -> Result<String, tonic::Status> {
    Ok(w.cri
        .runtime_client()
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.to_string(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id)
}

async fn pod_status(w: &World, id: &str) -> (cri::PodSandboxStatus, serde_json::Value) {
    let reply = w
        .cri
        .runtime_client()
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let info = serde_json::from_str(&reply.info["info"]).expect("info JSON");
    (reply.status.expect("a status"), info)
}

#[tokio::test(flavor = "multi_thread")]
async fn status_echoes_the_handler_asked_for() {
    let Some(w) = World::start().await else {
        return;
    };
    for asked in ["", DEFAULT_HANDLER] {
        let config = w.pod_config(&format!("echo{}", asked.len()));
        let id = run_pod_with_handler(&w, config.clone(), asked)
            .await
            .expect("RunPodSandbox");
        let (status, _) = pod_status(&w, &id).await;
        assert_eq!(status.runtime_handler, asked, "PodSandboxStatus");
        let listed = w
            .cri
            .runtime_client()
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    id: id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items;
        assert_eq!(listed[0].runtime_handler, asked, "ListPodSandbox");

        // The container's image spec carries the handler CreateContainer named.
        let mut c = w.container_config("app", "exec sleep 1000");
        c.image.as_mut().unwrap().runtime_handler = asked.to_string();
        let cid = w.create(&(id, config), c).await.expect("CreateContainer");
        let image = w.status(&cid).await.image.expect("image spec");
        assert_eq!(image.runtime_handler, asked, "ContainerStatus");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_network_pod_with_a_hostname_of_its_own_is_refused() {
    let Some(w) = World::start().await else {
        return;
    };
    let mut config = pod::host_network(w.pod_config("hostnet"));
    config.hostname = "not-the-node".into();
    let err = run_pod_with_handler(&w, config.clone(), "")
        .await
        .expect_err("a hostname on the host's network");
    common::assert_error(&err, Code::InvalidArgument, &["hostname", "host's network"]);
    // Without one it runs, with the node's.
    config.hostname.clear();
    run_pod_with_handler(&w, config, "")
        .await
        .expect("a host-network pod without a hostname");
}

/// A CreateContainer request with `edit` applied to a valid one.
fn container_with(w: &World, edit: impl FnOnce(&mut cri::ContainerConfig)) -> cri::ContainerConfig {
    let mut c = w.container_config("bad", "exec sleep 1000");
    edit(&mut c);
    c
}

fn mount(host_path: &str) -> cri::Mount {
    cri::Mount {
        container_path: "/data".into(),
        host_path: host_path.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_invalid_argument_and_runtime_refusals_are_unknown() {
    let Some(w) = World::start().await else {
        return;
    };
    let pod = w.run_pod("errs").await;
    let long = "x".repeat(5000);
    let cases: Vec<(&str, cri::ContainerConfig, &str)> = vec![
        (
            "log_path /",
            container_with(&w, |c| c.log_path = "/".into()),
            "log_path",
        ),
        (
            "log_path .",
            container_with(&w, |c| c.log_path = ".".into()),
            "log_path",
        ),
        (
            "log_path NUL",
            container_with(&w, |c| c.log_path = "a\0b".into()),
            "log_path",
        ),
        (
            "log_path long",
            container_with(&w, |c| c.log_path = long.clone()),
            "log_path",
        ),
        (
            "log_path under a file",
            container_with(&w, |c| c.log_path = "plain/0.log".into()),
            "log_path",
        ),
        (
            "host_path NUL",
            container_with(&w, |c| c.mounts = vec![mount("/tmp/a\0b")]),
            "host_path",
        ),
        (
            "host_path long",
            container_with(&w, |c| c.mounts = vec![mount(&format!("/{long}"))]),
            "host_path",
        ),
    ];
    // A file where the log's parent directory would go.
    let logs = Path::new(&pod.1.log_directory);
    std::fs::create_dir_all(logs).unwrap();
    std::fs::write(logs.join("plain"), "").unwrap();
    for (what, config, field) in cases {
        let err = w.create(&pod, config).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        common::assert_mentions(&err, &[field]);
    }

    // A pod whose log directory is a file.
    let file_dir = w.env.path().join("a-file");
    std::fs::write(&file_dir, "").unwrap();
    let mut config = w.pod_config("filelogs");
    config.log_directory = file_dir.display().to_string();
    let file_pod = w.run_pod_with(config).await;
    let err = w
        .create(&file_pod, w.container_config("app", "true"))
        .await
        .expect_err("a log directory that is a file");
    common::assert_error(
        &err,
        Code::InvalidArgument,
        &["log_directory", "not a directory"],
    );

    // A registry port no TCP port can be.
    let err = w
        .cri
        .pull("127.0.0.1:99999/test/busybox:1")
        .await
        .expect_err("port 99999");
    common::assert_error(&err, Code::InvalidArgument, &["port 99999"]);

    // What only runc can find out: its refusal, its message, code Unknown.
    let host_file = w.env.path().join("host-file");
    std::fs::write(&host_file, "").unwrap();
    let runtime_cases = [
        (
            "a missing executable",
            container_with(&w, |c| c.command = vec!["/no/such/binary".into()]),
            "/no/such/binary",
        ),
        (
            "a working directory that is a file",
            container_with(&w, |c| c.working_dir = "/bin/sh".into()),
            "not a directory",
        ),
        (
            "a file mounted over a directory",
            container_with(&w, |c| {
                c.mounts = vec![cri::Mount {
                    container_path: "/bin".into(),
                    host_path: host_file.display().to_string(),
                    ..Default::default()
                }]
            }),
            "mount",
        ),
    ];
    for (i, (what, mut config, needle)) in runtime_cases.into_iter().enumerate() {
        config.metadata.as_mut().unwrap().name = format!("runc{i}");
        config.log_path = format!("runc{i}.log");
        let err = match w.create(&pod, config).await {
            Err(err) => err,
            Ok(id) => w
                .cri
                .runtime_client()
                .start_container(cri::StartContainerRequest { container_id: id })
                .await
                .expect_err(what),
        };
        assert_eq!(err.code(), Code::Unknown, "{what}: {err:?}");
        common::assert_mentions(&err, &[needle]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verbose_status_follows_updates_and_a_namespace_removed_from_outside() {
    let Some(w) = World::start().await else {
        return;
    };
    let pod = w.run_pod("verbose").await;
    let id = w.run(&pod, "app", "exec sleep 1000").await;

    // UpdateContainerResources: the spec in verbose info is the one in force.
    let limit = 300 << 20;
    w.cri
        .runtime_client()
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: limit,
                cpu_shares: 512,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateContainerResources");
    let info = w.container_info(&id).await;
    let resources = &info["runtimeSpec"]["linux"]["resources"];
    assert_eq!(resources["memory"]["limit"], limit, "{resources}");
    assert_eq!(resources["cpu"]["shares"], 512, "{resources}");
    assert!(
        resources["devices"].is_array(),
        "device rules kept: {resources}"
    );

    // The pod's namespace, unmounted and removed from outside (`ip netns delete`).
    let (status, info) = pod_status(&w, &pod.0).await;
    assert_eq!(info["netNamespaceClosed"], false);
    assert!(!status.network.unwrap().ip.is_empty());
    let netns = info["netNamespacePath"].as_str().unwrap().to_string();
    nix::mount::umount2(netns.as_str(), nix::mount::MntFlags::MNT_DETACH).expect("umount netns");
    std::fs::remove_file(&netns).expect("remove netns file");

    let (status, info) = pod_status(&w, &pod.0).await;
    assert_eq!(info["netNamespaceClosed"], true, "{info}");
    assert_eq!(
        status.network.unwrap().ip,
        "",
        "no address without a namespace"
    );

    // Stop and remove still succeed, and leave no address allocated.
    let runtime = || w.cri.runtime_client();
    runtime()
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.0.clone(),
        })
        .await
        .expect("StopPodSandbox");
    runtime()
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.0.clone(),
        })
        .await
        .expect("RemovePodSandbox");
    assert_eq!(w.net.allocated(), Vec::<String>::new());
}
