//! The pod sandbox lifecycle against a real berthd, the berth shim, runc and the
//! CNI plugins in /usr/lib/cni: RunPodSandbox, Status, List, Stop, Remove, a
//! failing plugin, and a berthd killed with a Ready pod.
//!
//! Each test gets its own bridge (`bp<random>`) and /24 in 10.197.0.0/16, and its
//! own IPAM data dir, so it can run beside a real berthd (berth0, 10.88.0.0/16)
//! and beside tests/network.rs (10.199.0.0/16).
//!
//! The network, binaries and pod helpers are in `common::pod`.

mod common;

use common::pod::{
    PodNet, binaries, host_network, info, list, pod_config, remove, run_pod, state_and_ip, status,
    stop,
};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::TestBed;
use common::daemon::TestEnv;
use common::world::World;
use k8s_cri::v1 as cri;

const READY: i32 = cri::PodSandboxState::SandboxReady as i32;
const NOT_READY: i32 = cri::PodSandboxState::SandboxNotready as i32;

fn ping(ip: &str) -> bool {
    Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "2", ip])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_lifecycle_status_list_and_names() {
    let Some(mut world) = World::builder().no_image().start().await else {
        return;
    };
    let World { net, bed, .. } = &mut world;
    let TestBed { cri, env, .. } = bed;

    let started = std::time::Instant::now();
    let web = run_pod(cri, pod_config("web", &[("app", "web"), ("tier", "front")]))
        .await
        .expect("RunPodSandbox");
    eprintln!("RunPodSandbox took {:?}", started.elapsed());

    let st = status(cri, &web).await.unwrap().status.unwrap();
    assert_eq!(st.state, READY);
    assert_eq!(st.id, web);
    assert_eq!(st.metadata.as_ref().unwrap().name, "web");
    assert_eq!(st.labels["app"], "web");
    assert_eq!(st.annotations["note"], "web");
    assert_eq!(st.runtime_handler, "", "the handler as asked (the default)");
    assert!(st.created_at > 0);
    let ip = st.network.unwrap().ip;
    assert!(net.contains(&ip), "{ip} not in 10.197.{}.0/24", net.octet);
    assert_eq!(net.allocated(), vec![ip.clone()]);
    let ns = st.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);

    let web_info = info(cri, &web).await;
    let pid = web_info["pid"].as_u64().expect("pid in info") as u32;
    // runc start returns as the process is released to exec /pause.
    common::wait_until(
        "the infra process to be /pause",
        Duration::from_secs(2),
        || common::cmdline(pid) == "/pause",
    )
    .await;
    assert_eq!(web_info["runtimeHandler"], "berth");
    assert_eq!(web_info["config"]["name"], "web");
    let netns = PathBuf::from(web_info["netNamespacePath"].as_str().unwrap());
    assert!(netns.starts_with(env.state.join("netns")), "{netns:?}");
    assert!(ping(&ip), "pod {ip} does not answer ping");
    let web_shim = env.shim_pid(&web);
    assert!(pid_alive(web_shim));

    // The same metadata again: the name is taken, and the error names the holder.
    let err = run_pod(cri, pod_config("web", &[])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains(&web), "{err:?}");

    // A host-network pod: no IP, no netns.
    let host = run_pod(cri, host_network(pod_config("host", &[("app", "host")])))
        .await
        .expect("RunPodSandbox host network");
    let (state, host_ip) = state_and_ip(cri, &host).await;
    assert_eq!((state, host_ip.as_str()), (READY, ""));
    assert_eq!(info(cri, &host).await["netNamespacePath"], "");
    assert_eq!(
        common::dir_entries(&env.state.join("netns")),
        vec![web.clone()]
    );

    // Status and List by unique id prefix, state and labels.
    let prefix = &web[..6];
    if !host.starts_with(prefix) {
        assert_eq!(status(cri, prefix).await.unwrap().status.unwrap().id, web);
    }
    let filter = |id: &str, state: Option<i32>, labels: &[(&str, &str)]| cri::PodSandboxFilter {
        id: id.to_string(),
        state: state.map(|state| cri::PodSandboxStateValue { state }),
        label_selector: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let mut both = vec![web.clone(), host.clone()];
    both.sort();
    assert_eq!(list(cri, filter("", None, &[])).await, both);
    assert_eq!(list(cri, filter(&web, None, &[])).await, vec![web.clone()]);
    assert_eq!(
        list(cri, filter(&host[..8], None, &[])).await,
        vec![host.clone()]
    );
    assert_eq!(list(cri, filter("", Some(READY), &[])).await, both);
    assert!(list(cri, filter("", Some(NOT_READY), &[])).await.is_empty());
    assert_eq!(
        list(cri, filter("", None, &[("app", "web"), ("tier", "front")])).await,
        vec![web.clone()]
    );
    assert!(
        list(cri, filter("", None, &[("app", "nope")]))
            .await
            .is_empty()
    );
    assert!(list(cri, filter("ffffffffff", None, &[])).await.is_empty());

    // Stop: NotReady, the IP back in the pool, the netns gone; twice is fine.
    stop(cri, &web).await.expect("StopPodSandbox");
    stop(cri, &web).await.expect("StopPodSandbox again");
    assert_eq!(state_and_ip(cri, &web).await, (NOT_READY, String::new()));
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert!(!netns.exists());
    assert!(!pid_alive(pid) || common::cmdline(pid) != "/pause");
    assert_eq!(
        list(cri, filter("", Some(NOT_READY), &[])).await,
        vec![web.clone()]
    );

    // Remove: gone, its files and shim with it; twice is fine.
    remove(cri, &web).await.expect("RemovePodSandbox");
    remove(cri, &web).await.expect("RemovePodSandbox again");
    let err = status(cri, &web).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(
        common::dir_entries(&env.state.join("pods")),
        vec![host.clone()]
    );
    common::wait_until("the pod's shim to exit", Duration::from_secs(5), || {
        !pid_alive(web_shim)
    })
    .await;
    // The name is free again.
    let web2 = run_pod(cri, pod_config("web", &[])).await.expect("rerun");

    // Unknown ids stop and remove without complaint.
    stop(cri, "0123456789abcdef").await.expect("stop unknown");
    remove(cri, "0123456789abcdef")
        .await
        .expect("remove unknown");

    // Remove without Stop stops first.
    for id in [&web2, &host] {
        remove(cri, id).await.expect("RemovePodSandbox");
    }
    assert!(common::dir_entries(&env.state.join("pods")).is_empty());
    assert!(common::dir_entries(&env.state.join("netns")).is_empty());
    assert!(net.allocated().is_empty());
    assert!(list(cri, filter("", None, &[])).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_cni_plugin_leaves_nothing_behind() {
    // A plugin after the bridge that fails ADD with a CNI error (and lets DEL pass),
    // so the bridge's IP and veth must be undone.
    let plugin_dir = |env: &TestEnv| {
        let bin = env.path().join("cni-bin");
        std::fs::create_dir_all(&bin).unwrap();
        let plugin = bin.join("berth-fail");
        std::fs::write(
            &plugin,
            "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n\
             echo '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"berth-test: no network for you\"}'\n\
             exit 1\nfi\nexit 0\n",
        )
        .unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    };
    let Some(mut world) = World::builder()
        .no_image()
        .plugins(&[serde_json::json!({"type": "berth-fail"})])
        .plugin_dir(plugin_dir)
        .start()
        .await
    else {
        return;
    };
    let World { net, bed, .. } = &mut world;
    let TestBed { cri, env, .. } = bed;

    let err = run_pod(cri, pod_config("doomed", &[])).await.unwrap_err();
    assert!(
        err.message().contains("berth-test: no network for you"),
        "{err:?}"
    );
    assert!(list(cri, cri::PodSandboxFilter::default()).await.is_empty());
    assert!(common::dir_entries(&env.state.join("pods")).is_empty());
    assert!(common::dir_entries(&env.state.join("netns")).is_empty());
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    common::wait_until("shim sockets to go", Duration::from_secs(5), || {
        common::dir_entries(&env.state.join("s")).is_empty()
    })
    .await;
    // Shims are the processes given berthd's events socket.
    let events = env.state.join("events.sock").display().to_string();
    common::wait_until("the shim to exit", Duration::from_secs(5), || {
        let shims = Command::new("pgrep")
            .args(["-f", &events])
            .output()
            .unwrap();
        String::from_utf8_lossy(&shims.stdout).trim().is_empty()
    })
    .await;

    // The name was released: with a working network the same pod runs.
    // The conflist is read on every ADD; berthd's own config (bin dirs) is unchanged.
    let working = PodNet::configure(env, &[], None);
    let id = run_pod(cri, pod_config("doomed", &[]))
        .await
        .expect("rerun");
    remove(cri, &id).await.unwrap();
    assert!(working.allocated().is_empty());
    assert!(net.allocated().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_pod_survives_berthd_kill9() {
    let Some(mut world) = World::builder().no_image().start().await else {
        return;
    };
    let World { net, bed, .. } = &mut world;
    let TestBed {
        cri, berthd, env, ..
    } = bed;
    let id = run_pod(cri, pod_config("survivor", &[("app", "s")]))
        .await
        .expect("RunPodSandbox");
    let (_, ip) = state_and_ip(cri, &id).await;
    let pid = info(cri, &id).await["pid"].as_u64().unwrap() as u32;

    berthd.kill9();
    assert!(ping(&ip), "the pod stays up without berthd");
    berthd.restart().await;
    let cri = berthd.cri().await;
    assert_eq!(state_and_ip(&cri, &id).await, (READY, ip.clone()));
    assert_eq!(info(&cri, &id).await["pid"].as_u64().unwrap() as u32, pid);
    let err = run_pod(&cri, pod_config("survivor", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "names are restored");

    let shim = env.shim_pid(&id);
    stop(&cri, &id).await.expect("StopPodSandbox after restart");
    assert!(!pid_alive(pid) || common::cmdline(pid) != "/pause");
    assert!(net.allocated().is_empty());
    remove(&cri, &id)
        .await
        .expect("RemovePodSandbox after restart");
    common::wait_until("the shim to exit", Duration::from_secs(5), || {
        !pid_alive(shim)
    })
    .await;
    assert!(common::dir_entries(&env.state.join("pods")).is_empty());

    // A pod whose shim died while berthd was down comes back NotReady, and can
    // still be removed.
    let id = run_pod(&cri, pod_config("orphan", &[]))
        .await
        .expect("RunPodSandbox");
    let shim = env.shim_pid(&id);
    let pid = info(&cri, &id).await["pid"].as_u64().unwrap() as u32;
    berthd.kill9();
    unsafe {
        libc::kill(shim as i32, libc::SIGKILL);
        libc::kill(pid as i32, libc::SIGKILL);
    }
    common::wait_until("the pause process to die", Duration::from_secs(5), || {
        !pid_alive(pid) || common::cmdline(pid) != "/pause"
    })
    .await;
    berthd.restart().await;
    let cri = berthd.cri().await;
    assert_eq!(state_and_ip(&cri, &id).await.0, NOT_READY);
    remove(&cri, &id)
        .await
        .expect("RemovePodSandbox of an orphan");
    assert!(common::dir_entries(&env.state.join("pods")).is_empty());
    assert!(common::dir_entries(&env.state.join("netns")).is_empty());
    assert!(net.allocated().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_on_one_pod_serialise() {
    let Some(mut world) = World::builder().no_image().start().await else {
        return;
    };
    let World { net, bed, .. } = &mut world;
    let TestBed { cri, env, .. } = bed;

    // The same pod four times at once: one wins, the others meet its name.
    let runs = (0..4).map(|_| run_pod(cri, pod_config("racer", &[])));
    let results = futures::future::join_all(runs).await;
    let won: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let id = won[0].clone();
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
        assert!(err.message().contains(&id), "{err:?}");
    }
    assert_eq!(
        common::dir_entries(&env.state.join("pods")),
        vec![id.clone()]
    );

    // Stops and removes of it at once all succeed, and it is gone after.
    let (s1, s2, r1, s3, r2) = tokio::join!(
        stop(cri, &id),
        stop(cri, &id),
        remove(cri, &id),
        stop(cri, &id),
        remove(cri, &id)
    );
    for r in [s1, s2, r1, s3, r2] {
        r.expect("concurrent Stop/Remove");
    }
    assert!(list(cri, cri::PodSandboxFilter::default()).await.is_empty());
    assert!(common::dir_entries(&env.state.join("pods")).is_empty());
    assert!(common::dir_entries(&env.state.join("netns")).is_empty());
    assert!(net.allocated().is_empty());

    // Start latency, one pod after another.
    let mut took = Vec::new();
    let mut ids = Vec::new();
    for i in 0..8 {
        let started = std::time::Instant::now();
        ids.push(
            run_pod(cri, pod_config(&format!("timed-{i}"), &[]))
                .await
                .expect("RunPodSandbox"),
        );
        took.push(started.elapsed());
    }
    took.sort();
    eprintln!(
        "RunPodSandbox p50 {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    let removes = ids.iter().map(|id| remove(cri, id));
    for r in futures::future::join_all(removes).await {
        r.expect("RemovePodSandbox");
    }
    assert!(net.allocated().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn half_created_pod_is_undone_at_start() {
    let Some(mut world) = World::builder().no_image().start().await else {
        return;
    };
    let World { net, bed, .. } = &mut world;
    let TestBed { berthd, env, .. } = bed;
    berthd.kill9();

    // What a crash in the middle of RunPodSandbox leaves: a Creating record, the
    // bundle directory and a pinned netns.
    let id = "feedface".repeat(8);
    let bundle = env.state.join("pods").join(&id);
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("hostname"), "half\n").unwrap();
    berth::network::netns::create(&env.state.join("netns"), &id).unwrap();
    {
        let store = berth::store::Store::open(&env.root.join("meta.redb")).unwrap();
        let record = berth::store::SandboxRecord {
            id: id.clone(),
            config: berth::domain::config::SandboxConfig {
                name: "half".into(),
                namespace: "default".into(),
                uid: "uid-half".into(),
                ..Default::default()
            },
            phase: berth::domain::SandboxPhase::Creating,
            bundle: bundle.clone(),
            shim: binaries().0.clone(),
            ..Default::default()
        };
        store.write(|tx| tx.put(&record)).unwrap();
    }

    berthd.restart().await;
    let cri = berthd.cri().await;
    assert!(
        list(&cri, cri::PodSandboxFilter::default())
            .await
            .is_empty()
    );
    assert!(common::dir_entries(&env.state.join("pods")).is_empty());
    assert!(common::dir_entries(&env.state.join("netns")).is_empty());
    // Its name is free.
    let id = run_pod(&cri, pod_config("half", &[]))
        .await
        .expect("RunPodSandbox");
    remove(&cri, &id).await.unwrap();
    assert!(net.allocated().is_empty());
}

/// Debian's containerd shim (containerd 1.6) as a second runtime handler: it
/// needs the bundle's `log` fifo read, speaks only the v2 Task service, and
/// keeps its sockets under /run/containerd/s.
#[tokio::test(flavor = "multi_thread")]
async fn debian_runc_shim_as_a_runtime_handler() {
    const DEBIAN_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
    if !Path::new(DEBIAN_SHIM).exists() {
        eprintln!("SKIPPED: {DEBIAN_SHIM} is not installed");
        return;
    }
    let runc_handler = |env: &TestEnv| {
        let mut config = std::fs::read_to_string(&env.config).unwrap();
        config.push_str(&format!(
            "\n[runtimes.runc]\nshim = \"{DEBIAN_SHIM}\"\nruntime = \"runc\"\n"
        ));
        std::fs::write(&env.config, config).unwrap();
    };
    let Some(mut world) = World::builder()
        .no_image()
        .before_start(runc_handler)
        .start()
        .await
    else {
        return;
    };
    let World { net, bed, .. } = &mut world;
    let TestBed {
        cri, berthd, env, ..
    } = bed;

    let request = cri::RunPodSandboxRequest {
        config: Some(pod_config("debian", &[])),
        runtime_handler: "runc".to_string(),
    };
    let id = cri
        .runtime_client()
        .run_pod_sandbox(request)
        .await
        .expect("RunPodSandbox with the runc handler")
        .into_inner()
        .pod_sandbox_id;
    let st = status(cri, &id).await.unwrap().status.unwrap();
    assert_eq!((st.state, st.runtime_handler.as_str()), (READY, "runc"));
    let ip = st.network.unwrap().ip;
    assert!(ping(&ip), "pod {ip} does not answer ping");
    // This shim writes no shim.pid into the bundle.
    let found = Command::new("pgrep")
        .args(["-f", &format!("containerd-shim-runc-v2 .*-id {id}")])
        .output()
        .unwrap();
    let shim: u32 = String::from_utf8_lossy(&found.stdout)
        .trim()
        .parse()
        .expect("one Debian shim for the pod");

    berthd.kill9();
    berthd.restart().await;
    let cri = berthd.cri().await;
    assert_eq!(state_and_ip(&cri, &id).await, (READY, ip));
    remove(&cri, &id).await.expect("RemovePodSandbox");
    common::wait_until("the Debian shim to exit", Duration::from_secs(5), || {
        !pid_alive(shim)
    })
    .await;
    assert!(common::dir_entries(&env.state.join("pods")).is_empty());
    assert!(net.allocated().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bandwidth_annotation_is_refused_before_anything_is_made() {
    let Some(mut world) = World::builder().no_image().start().await else {
        return;
    };
    let World { bed, .. } = &mut world;
    let TestBed { cri, env, .. } = bed;
    let mut config = pod_config("shaped", &[]);
    config.annotations.insert(
        "kubernetes.io/ingress-bandwidth".to_string(),
        "lots".to_string(),
    );
    let err = run_pod(cri, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("ingress-bandwidth"), "{err:?}");
    assert!(common::dir_entries(&env.state.join("pods")).is_empty());
    // The name was never taken.
    let mut config = pod_config("shaped", &[]);
    config.annotations.insert(
        "kubernetes.io/ingress-bandwidth".to_string(),
        "10M".to_string(),
    );
    let id = run_pod(cri, config)
        .await
        .expect("a valid bandwidth is fine");
    stop(cri, &id).await.unwrap();
    remove(cri, &id).await.unwrap();
}

/// The kubelet's pod CIDR reaches host-local as the `ipRanges` capability: with a
/// conflist whose bridge declares it and names no range of its own, pods get
/// addresses from the node's CIDR, before and after a berthd restart.
#[tokio::test(flavor = "multi_thread")]
async fn pod_cidr_reaches_host_local_as_ip_ranges() {
    let ranges_from_cidr = |env: &TestEnv| {
        let conflist = env.path().join("net.d/10-test.conflist");
        let mut conf: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&conflist).unwrap()).unwrap();
        let bridge = &mut conf["plugins"][0];
        bridge["ipam"].as_object_mut().unwrap().remove("ranges");
        bridge["capabilities"] = serde_json::json!({"ipRanges": true});
        std::fs::write(&conflist, conf.to_string()).unwrap();
    };
    let Some(mut world) = World::builder()
        .no_image()
        .before_start(ranges_from_cidr)
        .start()
        .await
    else {
        return;
    };
    let World { net, bed, .. } = &mut world;
    let TestBed { cri, berthd, .. } = bed;

    // No CIDR yet: host-local has no range at all.
    let err = run_pod(cri, pod_config("early", &[])).await.unwrap_err();
    assert!(err.message().contains("no IP ranges"), "{err:?}");
    // The failed ADD left the bridge up without an address; Debian's bridge
    // plugin then fails to give it one ("could not set bridge's mac").
    Command::new("ip")
        .args(["link", "del", &net.bridge])
        .status()
        .unwrap();

    for bad in ["10.196.0.0/24,10.195.0.0/24", "10.196.0.0", "fd00::/200"] {
        let err = cri
            .runtime_client()
            .update_runtime_config(common::pod_cidr_request(bad))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}: {err:?}");
        assert!(
            err.message()
                .contains("runtime_config.network_config.pod_cidr"),
            "{err:?}"
        );
    }
    let octet = net.octet;
    let in_cidr = |ip: &str| ip.starts_with(&format!("10.196.{octet}."));
    cri.runtime_client()
        .update_runtime_config(common::pod_cidr_request(&format!("10.196.{octet}.0/24")))
        .await
        .expect("UpdateRuntimeConfig");
    let first = run_pod(cri, pod_config("first", &[]))
        .await
        .expect("RunPodSandbox");
    let (_, ip) = state_and_ip(cri, &first).await;
    assert!(in_cidr(&ip), "{ip} is not in 10.196.{octet}.0/24");

    berthd.restart().await;
    let cri = berthd.cri().await;
    let second = run_pod(&cri, pod_config("second", &[]))
        .await
        .expect("RunPodSandbox after a restart");
    let (_, ip) = state_and_ip(&cri, &second).await;
    assert!(in_cidr(&ip), "after a restart, {ip} is not in the pod CIDR");

    for id in [first, second] {
        remove(&cri, &id).await.unwrap();
    }
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
}
