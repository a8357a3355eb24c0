//! Pods in user namespaces of their own (CRI `userns_options` mode POD, the
//! kubelet's `hostUsers: false`) against a real berthd, runc 1.1, CNI and an image
//! from a real registry: the container is root inside and the mapped id outside,
//! writes its rootfs, a volume (id-mapped: the host's root owns what it writes
//! there), /etc/hosts, /dev/shm and its log; more containers join after a berthd
//! restart; nothing stays mounted after removal; bad modes and mappings are
//! refused, naming the field.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::daemon::TestEnv;
use common::pod;
use common::world::{RUNNING, World};
use k8s_cri::v1 as cri;

/// The kubelet's kind of range: container 0.. to a multiple of 65536 on the host.
const HOST_BASE: u32 = 65536 * 37;
const LENGTH: u32 = 65536;
const FIELD: &str = "namespace_options.userns_options";

/// A World whose test directory (the parent of berthd's state directory) has
/// `mode`: 0711 lets a pod's root reach its files there, as /run does.
async fn world(mode: u32) -> Option<World> {
    World::builder()
        .before_start(move |env| {
            std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(mode)).unwrap()
        })
        .start()
        .await
}

fn mapping(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
    cri::IdMapping {
        host_id,
        container_id,
        length,
    }
}

fn userns(mode: cri::NamespaceMode, ids: Vec<cri::IdMapping>) -> cri::UserNamespace {
    cri::UserNamespace {
        mode: mode as i32,
        uids: ids.clone(),
        gids: ids,
    }
}

fn pod_userns() -> cri::UserNamespace {
    userns(cri::NamespaceMode::Pod, vec![mapping(0, HOST_BASE, LENGTH)])
}

fn with_userns(mut config: cri::PodSandboxConfig, ns: cri::UserNamespace) -> cri::PodSandboxConfig {
    let linux = config.linux.get_or_insert_default();
    let sc = linux.security_context.get_or_insert_default();
    sc.namespace_options.get_or_insert_default().userns_options = Some(ns);
    config
}

fn container_with_userns(mut config: cri::ContainerConfig) -> cri::ContainerConfig {
    let linux = config.linux.get_or_insert_default();
    let sc = linux.security_context.get_or_insert_default();
    sc.namespace_options.get_or_insert_default().userns_options = Some(pod_userns());
    config
}

/// Mount points under this berthd's state directory (its id-mapped views, user
/// and network namespaces, rootfs and shm mounts).
fn mounts_under(env: &TestEnv) -> Vec<String> {
    let state = env.state.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&state))
        .collect()
}

fn host_uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const SCRIPT: &str = "set -e; cat /proc/self/uid_map; echo id:$(id -u):$(id -g); \
    echo rootfs > /written; cat /written; echo vol > /vol/by-container; ls -ln /vol/by-host; \
    echo x >> /etc/hosts; echo shm > /dev/shm/f; echo all-written; exec sleep 1000";

/// The container's log lines, each with its runs of blanks made one space.
fn log_lines(w: &World, pod: &str, name: &str) -> Vec<String> {
    w.log_entries(pod, name)
        .into_iter()
        .map(|(_, _, c)| c.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn userns_pod_runs_as_mapped_root_with_idmapped_rootfs_and_volume() {
    let Some(mut w) = world(0o711).await else {
        return;
    };
    let status = w
        .cri
        .runtime_client()
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status
            .runtime_handlers
            .iter()
            .all(|h| h.features.as_ref().is_some_and(|f| f.user_namespaces)),
        "{:?}",
        status.runtime_handlers
    );

    let volume = w.env.outside.join("vol");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(volume.join("by-host"), "host").unwrap();

    let pod = w
        .run_pod_with(with_userns(w.pod_config("userns"), pod_userns()))
        .await;
    let mut config = container_with_userns(w.container_config("app", SCRIPT));
    config.mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        host_path: volume.display().to_string(),
        ..Default::default()
    }];
    let id = w.create(&pod, config).await.expect("CreateContainer");
    w.start_container(&id).await;
    w.wait_log("userns", "app", "all-written").await;
    let log = log_lines(&w, "userns", "app");
    let want_map = format!("0 {HOST_BASE} {LENGTH}");
    for want in [&want_map, "id:0:0", "rootfs"] {
        assert!(log.iter().any(|l| l == want), "{want:?} not in {log:?}");
    }
    // The host's root owns the volume's file: root inside sees it as its own.
    let listed = log
        .iter()
        .find(|l| l.ends_with("by-host"))
        .expect("ls line");
    let fields: Vec<&str> = listed.split(' ').collect();
    assert_eq!((fields[2], fields[3]), ("0", "0"), "{listed}");
    assert_eq!(w.status(&id).await.state, RUNNING);
    let out = w
        .exec(&id, &["sh", "-c", "id -u; cat /written"], 10)
        .await
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.exit_code),
        (&b"0\nrootfs\n"[..], 0)
    );
    // Root inside, the mapped id outside.
    assert_eq!(host_uid_of(w.container_pid(&id).await), HOST_BASE);
    // Through the id-mapped volume, what container root writes is the host's root's.
    let written = std::fs::metadata(volume.join("by-container")).unwrap();
    assert_eq!((written.uid(), written.gid()), (0, 0));

    // A second pod may not share the first one's host ids.
    let err = pod::run_pod(&w.cri, with_userns(w.pod_config("twin"), pod_userns()))
        .await
        .unwrap_err();
    common::assert_error(&err, tonic::Code::InvalidArgument, &[FIELD, "overlap"]);

    // After berthd is killed and restarted, a new container joins the same namespace.
    w.berthd.kill9();
    w.berthd.restart().await;
    w.cri = w.berthd.cri().await;
    let second = container_with_userns(w.container_config(
        "second",
        "cat /proc/self/uid_map; echo second-up; exec sleep 1000",
    ));
    let second = w
        .create(&pod, second)
        .await
        .expect("CreateContainer after restart");
    w.start_container(&second).await;
    w.wait_log("userns", "second", "second-up").await;
    assert!(log_lines(&w, "userns", "second").contains(&want_map));
    assert_eq!(host_uid_of(w.container_pid(&second).await), HOST_BASE);
    let app_ns = std::fs::read_link(format!("/proc/{}/ns/user", w.container_pid(&id).await));
    let second_ns = std::fs::read_link(format!("/proc/{}/ns/user", w.container_pid(&second).await));
    assert_eq!(
        app_ns.unwrap(),
        second_ns.unwrap(),
        "one user namespace per pod"
    );

    for c in [&id, &second] {
        w.stop(c, 0).await;
        w.remove(c).await.unwrap();
    }
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
    common::wait_until("no mounts left", Duration::from_secs(5), || {
        mounts_under(&w.env).iter().all(|m| m.ends_with("/netns"))
    })
    .await;
    assert!(
        std::fs::read_dir(w.env.state.join("u"))
            .unwrap()
            .next()
            .is_none(),
        "the pod's user namespace directory is gone"
    );
    // The volume's files outlive the views.
    assert!(volume.join("by-host").exists() && volume.join("by-container").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_user_namespace_modes_and_mappings_are_refused_naming_the_field() {
    let Some(w) = world(0o711).await else {
        return;
    };
    use cri::NamespaceMode::{Container, Node, Pod, Target};
    let cases: Vec<(cri::UserNamespace, &[&str])> = vec![
        (
            userns(Container, vec![mapping(0, HOST_BASE, LENGTH)]),
            &["userns_options.mode", "Container"],
        ),
        (
            userns(Target, vec![mapping(0, HOST_BASE, LENGTH)]),
            &["userns_options.mode", "Target"],
        ),
        (
            userns(Node, vec![mapping(0, HOST_BASE, LENGTH)]),
            &["userns_options.uids", "NODE"],
        ),
        (userns(Pod, vec![]), &["userns_options.uids", "empty"]),
        (
            userns(Pod, vec![mapping(0, HOST_BASE, 0)]),
            &["userns_options.uids[0].length"],
        ),
        (
            userns(Pod, vec![mapping(1, HOST_BASE, LENGTH)]),
            &["userns_options.uids", "container id 0"],
        ),
        (
            userns(Pod, vec![mapping(0, 0, LENGTH)]),
            &["userns_options.uids[0].host_id", "host's root"],
        ),
        (
            userns(
                Pod,
                vec![
                    mapping(0, HOST_BASE, 100),
                    mapping(50, HOST_BASE + 1000, 100),
                ],
            ),
            &["userns_options.uids[1].container_id", "overlaps"],
        ),
        (
            userns(
                Pod,
                vec![
                    mapping(0, HOST_BASE, 100),
                    mapping(100, HOST_BASE + 50, 100),
                ],
            ),
            &["userns_options.uids[1].host_id", "overlaps"],
        ),
        (
            userns(Pod, vec![mapping(0, u32::MAX - 5, LENGTH)]),
            &["userns_options.uids[0].host_id"],
        ),
    ];
    for (ns, needles) in cases {
        let err = pod::run_pod(&w.cri, with_userns(w.pod_config("bad"), ns.clone()))
            .await
            .unwrap_err();
        common::assert_error(&err, tonic::Code::InvalidArgument, needles);
    }
    let host_net = with_userns(pod::host_network(w.pod_config("hostnet")), pod_userns());
    let err = pod::run_pod(&w.cri, host_net).await.unwrap_err();
    common::assert_error(&err, tonic::Code::InvalidArgument, &[FIELD, "host network"]);

    // Two pods run at once with the same host ids: one runs, one is refused.
    let (a, b) = tokio::join!(
        pod::run_pod(&w.cri, with_userns(w.pod_config("race-a"), pod_userns())),
        pod::run_pod(&w.cri, with_userns(w.pod_config("race-b"), pod_userns())),
    );
    let (ran, refused) = match (a, b) {
        (Ok(id), Err(e)) | (Err(e), Ok(id)) => (id, e),
        other => panic!("exactly one of two overlapping pods must run: {other:?}"),
    };
    common::assert_error(&refused, tonic::Code::InvalidArgument, &[FIELD, "overlap"]);
    pod::stop(&w.cri, &ran).await.unwrap();
    pod::remove(&w.cri, &ran).await.unwrap();

    // A container may not leave its pod's user namespace, nor ask for another.
    let pod = w.run_pod_with(w.pod_config("plain")).await;
    let config = container_with_userns(w.container_config("app", "true"));
    let err = w.create(&pod, config).await.unwrap_err();
    common::assert_error(
        &err,
        tonic::Code::InvalidArgument,
        &[FIELD, "host's user namespace"],
    );
    assert!(pod::list(&w.cri, Default::default()).await.len() == 1);
    assert!(mounts_under(&w.env).iter().all(|m| !m.contains("/u/")));
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn userns_is_neither_advertised_nor_run_where_the_probe_fails() {
    // A state directory under a 0700 directory, which a pod's root could not
    // traverse: the start-up probe says no.
    let Some(w) = world(0o700).await else {
        return;
    };
    let status = w
        .cri
        .runtime_client()
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status
            .runtime_handlers
            .iter()
            .all(|h| h.features.as_ref().is_some_and(|f| !f.user_namespaces)),
        "{:?}",
        status.runtime_handlers
    );
    let err = pod::run_pod(&w.cri, with_userns(w.pod_config("refused"), pod_userns()))
        .await
        .unwrap_err();
    common::assert_error(&err, tonic::Code::FailedPrecondition, &[FIELD, "id-map"]);
    assert!(pod::list(&w.cri, Default::default()).await.is_empty());
    assert!(mounts_under(&w.env).iter().all(|m| !m.contains("/u/")));
}

#[tokio::test(flavor = "multi_thread")]
async fn userns_pod_with_a_sandbox_image_runs_its_infra_as_the_mapped_root() {
    let Some(mut w) = world(0o711).await else {
        return;
    };
    let sleeper = common::world::sleeper_image();
    sleeper.push(&w.registry, "test/sleeper", "1").await;
    let reference = w.registry.reference("test/sleeper", "1");
    let config = std::fs::read_to_string(&w.env.config).unwrap();
    std::fs::write(
        &w.env.config,
        format!("sandbox_image = {reference:?}\n{config}"),
    )
    .unwrap();
    w.berthd.restart().await;
    w.cri = w.berthd.cri().await;

    let pod = w
        .run_pod_with(with_userns(w.pod_config("infra-image"), pod_userns()))
        .await;
    let infra = pod::info(&w.cri, &pod.0).await["pid"]
        .as_u64()
        .expect("pid") as u32;
    assert_eq!(
        host_uid_of(infra),
        HOST_BASE,
        "the infra runs as the mapped root"
    );
    let id = w
        .run(
            &pod,
            "app",
            "echo written > /file && cat /file && exec sleep 1000",
        )
        .await;
    w.wait_log("infra-image", "app", "written").await;
    assert_eq!(host_uid_of(w.container_pid(&id).await), HOST_BASE);

    w.stop(&id, 0).await;
    w.remove(&id).await.unwrap();
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
    common::wait_until("no mounts left", Duration::from_secs(5), || {
        mounts_under(&w.env).iter().all(|m| m.ends_with("/netns"))
    })
    .await;
}
