//! Containers against a real berthd, the berth shim, runc, CNI and an image pulled
//! from a real registry: create/start/status/list/stop/remove, CRI logs, ExecSync
//! with a deadline, exit codes and reasons, OOM kills, names, and a berthd killed
//! with a running container and one that exits while it is down.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::pod;
use common::world::{EXITED, RUNNING, World};
use k8s_cri::v1 as cri;

/// berthd answers ListContainers from kept, pre-encoded items: each item,
/// decoded by the generated client, must say what ContainerStatus says, in
/// an unfiltered List and in one narrowed to the pod, after every change.
async fn list_items_agree_with_status(w: &World, pod: &str, ids: &[&str]) {
    let all = w.list_items(cri::ContainerFilter::default()).await;
    let of_pod = w
        .list_items(cri::ContainerFilter {
            pod_sandbox_id: pod.to_string(),
            ..Default::default()
        })
        .await;
    assert_eq!(all, of_pod, "one pod: the same items either way");
    for id in ids {
        let item = all.iter().find(|c| c.id == *id).expect("listed");
        let st = w.status(id).await;
        assert_eq!(item.pod_sandbox_id, pod);
        assert_eq!(item.metadata, st.metadata);
        assert_eq!(item.image, st.image);
        assert_eq!(item.image_ref, st.image_id);
        assert_eq!(item.image_id, st.image_id);
        assert_eq!(item.state, st.state);
        assert_eq!(item.created_at, st.created_at);
        assert_eq!(item.labels, st.labels);
        assert_eq!(item.annotations, st.annotations);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_logs_exec_and_list() {
    let Some(w) = World::start().await else {
        return;
    };
    let pod = w.run_pod("web").await;
    let id = w
        .run(
            &pod,
            "app",
            "echo out-line; echo err-line >&2; exec sleep 1000",
        )
        .await;

    let st = w.status(&id).await;
    assert_eq!(st.state, RUNNING);
    assert_eq!(st.metadata.as_ref().unwrap().name, "app");
    assert!(st.started_at >= st.created_at && st.created_at > 0);
    // The repo digest, as containerd reports it (`kubectl get pod` shows it as imageID).
    assert!(st.image_ref.contains("@sha256:"), "{}", st.image_ref);
    assert_eq!(st.labels["app"], "app");
    assert!(st.log_path.ends_with("web/app.log"), "{}", st.log_path);

    w.wait_log("web", "app", "out-line").await;
    w.wait_log("web", "app", "err-line").await;
    let entries = w.log_entries("web", "app");
    assert!(
        entries.contains(&("stdout".into(), "F".into(), "out-line".into())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("stderr".into(), "F".into(), "err-line".into())),
        "{entries:?}"
    );

    // ExecSync: output, exit codes, and a deadline that kills.
    let out = w
        .exec(&id, &["sh", "-c", "echo hi; echo oops >&2"], 10)
        .await
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"hi\n"[..], &b"oops\n"[..], 0)
    );
    let out = w.exec(&id, &["sh", "-c", "exit 3"], 10).await.unwrap();
    assert_eq!(out.exit_code, 3);
    let started = Instant::now();
    let err = w.exec(&id, &["sleep", "30"], 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // List with filters.
    let other = w.run(&pod, "other", "exec sleep 1000").await;
    let mut both = vec![id.clone(), other.clone()];
    both.sort();
    assert_eq!(w.list(cri::ContainerFilter::default()).await, both);
    let by_label = cri::ContainerFilter {
        label_selector: HashMap::from([("app".to_string(), "other".to_string())]),
        ..Default::default()
    };
    assert_eq!(w.list(by_label).await, vec![other.clone()]);
    let by_prefix = cri::ContainerFilter {
        id: id[..12].to_string(),
        ..Default::default()
    };
    assert_eq!(w.list(by_prefix).await, vec![id.clone()]);
    list_items_agree_with_status(&w, &pod.0, &[&id, &other]).await;

    // Stop: `sh` exec'd `sleep`, which dies of SIGTERM at once.
    w.stop(&id, 5).await;
    let st = w.status(&id).await;
    assert_eq!(st.state, EXITED);
    assert_eq!(st.exit_code, 143, "{st:?}");
    assert_eq!(st.reason, "Error");
    assert!(st.finished_at >= st.started_at);
    let exited = cri::ContainerFilter {
        state: Some(cri::ContainerStateValue { state: EXITED }),
        ..Default::default()
    };
    assert_eq!(w.list(exited).await, vec![id.clone()]);
    list_items_agree_with_status(&w, &pod.0, &[&id, &other]).await;

    // Remove: the record, the bundle and the writable layer go.
    let snapshots_before = common::dir_entries(&w.env.root.join("snapshots")).len();
    w.remove(&id).await.expect("RemoveContainer");
    assert!(!w.env.state.join("containers").join(&id).exists());
    assert_eq!(
        common::dir_entries(&w.env.root.join("snapshots")).len(),
        snapshots_before - 1
    );
    let err = w
        .cri
        .runtime_client()
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    w.remove(&id).await.expect("removing twice is fine");
    w.stop(&id, 1).await;

    // Removing the pod removes its remaining container. Its image, removed while
    // the container still used it, goes with it.
    w.cri
        .remove(&w.image)
        .await
        .expect("RemoveImage of an image in use");
    assert!(
        !w.env.snapshot_fs_dirs().is_empty(),
        "the container's layers stay"
    );
    pod::stop(&w.cri, &pod.0).await.unwrap();
    assert_eq!(w.status(&other).await.state, EXITED);
    pod::remove(&w.cri, &pod.0).await.unwrap();
    assert!(w.list(cri::ContainerFilter::default()).await.is_empty());
    assert!(common::dir_entries(&w.env.state.join("containers")).is_empty());
    assert_eq!(w.env.snapshot_fs_dirs(), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_reasons_names_and_bad_requests() {
    let Some(w) = World::start().await else {
        return;
    };
    let pod = w.run_pod("jobs").await;
    let failed = w.run(&pod, "failed", "exit 7").await;
    let done = w.run(&pod, "done", "true").await;
    let st = w.wait_exited(&failed).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (7, "Error"));
    let st = w.wait_exited(&done).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));

    // The kernel's OOM killer: reason OOMKilled.
    let mut config = w.container_config("hog", "tail /dev/zero");
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let hog = w.create(&pod, config).await.expect("create hog");
    w.start_container(&hog).await;
    let st = w.wait_exited(&hog).await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (137, "OOMKilled"),
        "{st:?}"
    );

    // The same name in the same pod is taken.
    let err = w
        .create(&pod, w.container_config("failed", "true"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains(&failed), "{err:?}");

    // Unknown pod, image not pulled, no name.
    let err = w
        .create(
            &("nope".into(), pod.1.clone()),
            w.container_config("x", "true"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let mut config = w.container_config("y", "true");
    config.image = Some(cri::ImageSpec {
        image: "127.0.0.1:1/never/pulled:1".into(),
        ..Default::default()
    });
    let err = w.create(&pod, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("never/pulled"), "{err:?}");
    let mut config = w.container_config("z", "true");
    config.metadata = None;
    let err = w.create(&pod, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // Failed creates leave nothing behind.
    assert_eq!(
        common::dir_entries(&w.env.state.join("containers")).len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_survive_a_berthd_kill_9() {
    let Some(mut w) = World::start().await else {
        return;
    };
    let pod = w.run_pod("survivor").await;
    let runner = w
        .run(
            &pod,
            "runner",
            "echo before; sleep 2; echo during; exec sleep 1000",
        )
        .await;
    let quitter = w.run(&pod, "quitter", "sleep 1; exit 5").await;
    let quitter_pid = w.container_pid(&quitter).await;
    let runner_pid = w.container_pid(&runner).await;
    w.wait_log("survivor", "runner", "before").await;

    w.berthd.kill9();
    // The quitter exits and the runner writes while berthd is away: the runner
    // has written "during" once its shell has exec'd the last sleep.
    let quitter_proc = PathBuf::from(format!("/proc/{quitter_pid}"));
    let runner_cmdline = PathBuf::from(format!("/proc/{runner_pid}/cmdline"));
    common::wait_until("the quitter to exit", Duration::from_secs(10), || {
        !quitter_proc.exists()
    })
    .await;
    common::wait_until("the runner to write", Duration::from_secs(10), || {
        std::fs::read(&runner_cmdline).is_ok_and(|c| c == b"sleep\x001000\x00")
    })
    .await;
    w.berthd.restart().await;
    w.cri = w.berthd.cri().await;

    let st = w.status(&quitter).await;
    assert_eq!((st.state, st.exit_code), (EXITED, 5), "{st:?}");
    assert_eq!(w.status(&runner).await.state, RUNNING);
    w.wait_log("survivor", "runner", "during").await;
    let out = w.exec(&runner, &["echo", "still-here"], 10).await.unwrap();
    assert_eq!(out.stdout, b"still-here\n");
    w.stop(&runner, 2).await;
    assert_eq!(w.status(&runner).await.state, EXITED);
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
    assert!(w.list(cri::ContainerFilter::default()).await.is_empty());
}

/// Rewrites the world's config with `top` (top-level keys) first and `tables` last,
/// then restarts berthd so that it reads it.
async fn reconfigure(w: &mut World, top: &str, tables: &str) {
    let config = std::fs::read_to_string(&w.env.config).unwrap();
    std::fs::write(&w.env.config, format!("{top}\n{config}\n{tables}")).unwrap();
    w.berthd.restart().await;
    w.cri = w.berthd.cri().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_image_replaces_the_builtin_pause() {
    let Some(mut w) = World::start().await else {
        return;
    };
    let sleeper = common::world::sleeper_image();
    sleeper.push(&w.registry, "test/sleeper", "1").await;
    let reference = w.registry.reference("test/sleeper", "1");
    reconfigure(&mut w, &format!("sandbox_image = {reference:?}"), "").await;
    let snapshots_before = common::dir_entries(&w.env.root.join("snapshots")).len();

    // Not pulled yet: RunPodSandbox pulls it.
    let pod = w.run_pod("custom-infra").await;
    let info = pod::info(&w.cri, &pod.0).await;
    let pid = info["pid"].as_u64().expect("pid") as u32;
    common::wait_until(
        "the infra process to be sleep",
        Duration::from_secs(5),
        || common::cmdline(pid) == "sleep 1000000",
    )
    .await;
    assert!(
        w.cri.image(&reference).await.is_some(),
        "sandbox_image was not pulled"
    );
    let id = w.run(&pod, "app", "exec sleep 1000").await;
    assert_eq!(w.status(&id).await.state, RUNNING);

    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
    // The image's layer stays; both writable layers (infra and app) are gone.
    assert_eq!(
        common::dir_entries(&w.env.root.join("snapshots")).len(),
        snapshots_before + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_through_debians_runc_shim() {
    let Some(mut w) = World::start().await else {
        return;
    };
    let Some(shim) = ["/usr/bin/containerd-shim-runc-v2"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "containerd-shim-runc-v2 missing under CI"
        );
        eprintln!("SKIPPED: containerd-shim-runc-v2 is not installed");
        return;
    };
    reconfigure(
        &mut w,
        "",
        &format!(
            "[runtimes.runc]\nshim = {:?}\nruntime = \"runc\"\n",
            shim.display().to_string()
        ),
    )
    .await;
    let config = w.pod_config("via-runc");
    let pod_id = w
        .cri
        .runtime_client()
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "runc".into(),
        })
        .await
        .expect("RunPodSandbox with the runc handler")
        .into_inner()
        .pod_sandbox_id;
    let pod = (pod_id, config);
    let id = w
        .run(&pod, "app", "echo through-runc-v2; exec sleep 1000")
        .await;
    w.wait_log("via-runc", "app", "through-runc-v2").await;
    let out = w
        .exec(&id, &["sh", "-c", "echo hi; exit 4"], 10)
        .await
        .unwrap();
    assert_eq!((out.stdout.as_slice(), out.exit_code), (&b"hi\n"[..], 4));
    let quitter = w.run(&pod, "quitter", "exit 9").await;
    assert_eq!(w.wait_exited(&quitter).await.exit_code, 9);
    w.stop(&id, 2).await;
    assert_eq!(w.status(&id).await.state, EXITED);
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
    assert!(w.list(cri::ContainerFilter::default()).await.is_empty());
    assert!(common::dir_entries(&w.env.state.join("pods")).is_empty());
}

/// What the kubelet's evented PLEG reads: the pod's own events (its id as the
/// container id) around its containers' events, each carrying the pod's status
/// and its containers' statuses as they were at that moment.
#[tokio::test(flavor = "multi_thread")]
async fn pod_and_container_events_carry_their_statuses() {
    use cri::ContainerEventType::*;
    const READY: i32 = cri::PodSandboxState::SandboxReady as i32;
    const NOT_READY: i32 = cri::PodSandboxState::SandboxNotready as i32;

    let Some(w) = World::start().await else {
        return;
    };
    let mut events = w
        .cri
        .runtime_client()
        .get_container_events(cri::GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    let pod = w.run_pod("evented").await;
    let id = w.run(&pod, "app", "exec sleep 1000").await;

    // PodSandboxStatus carries the containers and when it was read.
    let before = now_nanos();
    let st = pod::status(&w.cri, &pod.0).await.expect("PodSandboxStatus");
    assert!(
        st.timestamp >= before,
        "timestamp {} < {before}",
        st.timestamp
    );
    let ids: Vec<_> = st.containers_statuses.iter().map(|c| &c.id).collect();
    assert_eq!(ids, [&id]);
    assert_eq!(st.containers_statuses[0].state, RUNNING);

    // Stopping the pod stops its container first; removing it removes both.
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();

    let mut seen = Vec::new();
    let mut last_at = 0;
    while seen.len() < 8 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .unwrap_or_else(|_| panic!("no event after {seen:?}"))
            .expect("event stream")
            .expect("an event");
        assert!(event.created_at >= last_at, "events out of time order");
        last_at = event.created_at;
        let kind = cri::ContainerEventType::try_from(event.container_event_type).unwrap();
        let pod_status = event.pod_sandbox_status.as_ref().expect("the pod's status");
        assert_eq!(pod_status.id, pod.0);
        let states: Vec<(String, i32)> = event
            .containers_statuses
            .iter()
            .map(|c| (c.id.clone(), c.state))
            .collect();
        let who = if event.container_id == pod.0 {
            "pod"
        } else {
            "app"
        };
        if who == "app" {
            assert_eq!(event.container_id, id);
        }
        match (who, kind) {
            ("pod", ContainerCreatedEvent | ContainerStartedEvent) => {
                assert_eq!(pod_status.state, READY);
                assert!(states.is_empty(), "{states:?}");
            }
            ("app", ContainerStartedEvent) => {
                assert_eq!(pod_status.state, READY);
                assert_eq!(states, [(id.clone(), RUNNING)]);
            }
            ("app", ContainerStoppedEvent) | ("pod", ContainerStoppedEvent) => {
                assert_eq!(states, [(id.clone(), EXITED)], "{who} {kind:?}");
            }
            ("app", ContainerDeletedEvent) => assert!(states.is_empty(), "{states:?}"),
            ("pod", ContainerDeletedEvent) => {
                // The status the kubelet needs to drop the pod from its cache.
                assert_eq!(pod_status.state, NOT_READY);
                assert!(states.is_empty(), "{states:?}");
            }
            _ => {}
        }
        if who == "pod" && kind == ContainerStoppedEvent {
            assert_eq!(pod_status.state, NOT_READY);
        }
        seen.push((who, kind));
    }
    assert_eq!(
        seen,
        vec![
            ("pod", ContainerCreatedEvent),
            ("pod", ContainerStartedEvent),
            ("app", ContainerCreatedEvent),
            ("app", ContainerStartedEvent),
            ("app", ContainerStoppedEvent),
            ("pod", ContainerStoppedEvent),
            ("app", ContainerDeletedEvent),
            ("pod", ContainerDeletedEvent),
        ]
    );
    // Nothing more: each transition is sent once.
    let extra = tokio::time::timeout(Duration::from_millis(300), events.message()).await;
    assert!(extra.is_err(), "an extra event: {extra:?}");
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Runs `args` as uid/gid 65534 with no supplementary groups: a local user.
fn as_local_user(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

/// A local user (uid 65534) reaches nothing of a running container's: not a file
/// it wrote, not a setuid-root binary it made, not its env (bundle config.json, the
/// store), not its log. The container itself, running as that same uid, still
/// reads its rootfs, hosts and resolv.conf.
#[tokio::test(flavor = "multi_thread")]
async fn a_local_user_reaches_nothing_of_a_container() {
    use std::ffi::OsStr;
    use std::os::unix::fs::PermissionsExt;

    let Some(w) = World::start().await else {
        return;
    };
    // The test's directory stands for /var/lib, /run and /var/log: open to all.
    std::fs::set_permissions(w.env.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pod = w.run_pod("private").await;
    let mut config = w.container_config(
        "app",
        "echo secret-output-line; echo secret-file-content > /secret.txt; \
         busybox cp /bin/busybox /suid && busybox chmod 4755 /suid && echo > /ready; \
         exec sleep 1000",
    );
    config.envs.push(cri::KeyValue {
        key: "API_TOKEN".into(),
        value: "hunter2-token-value".into(),
    });
    let id = w.create(&pod, config).await.expect("CreateContainer");
    w.start_container(&id).await;
    w.wait_log("private", "app", "secret-output-line").await;
    common::wait_for(
        "the container's setuid copy",
        Duration::from_secs(10),
        || async {
            let out = w.exec(&id, &["cat", "/ready"], 5).await.ok()?;
            (out.exit_code == 0).then_some(())
        },
    )
    .await;

    let mut everything = common::walk(&w.env.root);
    everything.extend(common::walk(&w.env.state));
    let contains = |p: &PathBuf, needle: &[u8]| {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
            && std::fs::read(p).is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
    };
    let written: Vec<_> = everything
        .iter()
        .filter(|p| contains(p, b"secret-file-content"))
        .collect();
    let setuid: Vec<_> = everything
        .iter()
        .filter(|p| {
            std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o4000 != 0)
        })
        .collect();
    let env: Vec<_> = everything
        .iter()
        .filter(|p| contains(p, b"hunter2-token-value"))
        .collect();
    let log = w.logs.join("private/app.log");
    assert!(!written.is_empty(), "the container's file is somewhere");
    assert!(!setuid.is_empty(), "the setuid copy is somewhere");
    assert!(
        env.iter().any(|p| p.ends_with("config.json"))
            && env.iter().any(|p| p.ends_with("meta.redb")),
        "the env is in the bundle and the store: {env:?}"
    );
    for path in written.iter().chain(&env).copied().chain([&log]) {
        let out = as_local_user(&[OsStr::new("cat"), path.as_os_str()]);
        assert!(
            !out.status.success(),
            "uid 65534 read {} ({} bytes)",
            path.display(),
            out.stdout.len()
        );
    }
    for path in setuid {
        let out = as_local_user(&[path.as_os_str(), OsStr::new("true")]);
        assert!(!out.status.success(), "uid 65534 ran {}", path.display());
    }
    let socket = std::fs::metadata(&w.env.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(socket & 0o777, 0o660, "the CRI socket's mode");

    // What berthd made private is still what a non-root container needs.
    let mut nobody = w.container_config(
        "nobody",
        "cat /etc/hosts /etc/resolv.conf /etc/hostname > /dev/null && ls / > /dev/null \
         && echo ok && exec sleep 1000",
    );
    nobody.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 65534 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = w
        .create(&pod, nobody)
        .await
        .expect("CreateContainer as 65534");
    w.start_container(&id).await;
    w.wait_log("private", "nobody", "ok").await;
}

/// Processes in the PID namespace of `pid` (the container's), from the host.
fn processes_beside(pid: u32) -> usize {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("the container's pid ns");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| std::fs::read_link(e.path().join("ns/pid")).is_ok_and(|n| n == ns))
        .count()
}

fn exec_dirs(bundle: &std::path::Path) -> Vec<String> {
    common::dir_entries(bundle)
        .into_iter()
        .filter(|n| n.starts_with("exec-"))
        .collect()
}

/// ExecSync's deadline covers the whole call: a command that exits at once but
/// leaves a writer on its output ends by the deadline, and the writer is killed;
/// a call its client cancels kills its process too; in each case the exec's
/// directory goes. Output past the cap is dropped so the reply fits in the 16 MiB
/// a kubelet accepts.
#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_keeps_its_deadline_cleans_up_and_fits_a_reply() {
    let Some(w) = World::start().await else {
        return;
    };
    let pod = w.run_pod("execs").await;
    let id = w.run(&pod, "app", "exec sleep 1000").await;
    let status = w.status(&id).await;
    let pid = w.container_pid(&id).await;
    assert_eq!(status.state, RUNNING);
    let bundle = w.env.state.join("containers").join(&id);
    let alone = processes_beside(pid);

    // (a) A background writer does not hold the call past its deadline.
    let started = Instant::now();
    let err = w
        .exec(
            &id,
            &["sh", "-c", "(while :; do echo x; sleep .5; done) & exit 0"],
            2,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    common::wait_until(
        "the background writer killed",
        Duration::from_secs(10),
        || processes_beside(pid) == alone,
    )
    .await;
    common::wait_until(
        "the exec directory removed",
        Duration::from_secs(10),
        || exec_dirs(&bundle).is_empty(),
    )
    .await;

    // (b) A call its client gives up on (grpc-timeout) kills what it started.
    let mut request = tonic::Request::new(cri::ExecSyncRequest {
        container_id: id.clone(),
        cmd: vec!["sleep".into(), "300".into()],
        timeout: 0,
    });
    request.set_timeout(Duration::from_secs(1));
    let err = w.cri.runtime_client().exec_sync(request).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        "{err:?}"
    );
    common::wait_until("the cancelled exec killed", Duration::from_secs(10), || {
        processes_beside(pid) == alone
    })
    .await;
    common::wait_until(
        "the cancelled exec's directory removed",
        Duration::from_secs(10),
        || exec_dirs(&bundle).is_empty(),
    )
    .await;

    // (c) 20 MB on each stream: capped, and the reply fits a kubelet's limit.
    let kubelet_limit = 16 << 20;
    let reply = w
        .cri
        .runtime_client()
        .max_decoding_message_size(kubelet_limit)
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "busybox yes | busybox head -c 20000000 & \
                 busybox yes | busybox head -c 20000000 >&2; wait"
                    .into(),
            ],
            timeout: 60,
        })
        .await
        .expect("ExecSync with 40 MB of output")
        .into_inner();
    assert_eq!(reply.exit_code, 0);
    assert!(reply.stdout.len() >= 4 << 20 && reply.stderr.len() >= 4 << 20);
    assert!(
        reply.stdout.len() + reply.stderr.len() < kubelet_limit - 1024,
        "{} + {}",
        reply.stdout.len(),
        reply.stderr.len()
    );
    assert!(reply.stdout.starts_with(b"y\ny\n"));
}

fn localhost_profile(path: &str) -> Option<cri::SecurityProfile> {
    Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Localhost as i32,
        localhost_ref: path.to_string(),
    })
}

/// Files and fields a request names are confined and bounded: a Localhost seccomp
/// profile is read only from the configured roots, only as a regular file of a
/// bounded size (`/dev/zero` used to take berthd to gigabytes); a log path cannot be
/// absolute or climb out of the pod's log directory; host paths, log directories
/// and cgroup parents cannot be relative; a 60,000-character cpuset is refused
/// before the runtime sees it; and no error reply quotes a huge value in full.
#[tokio::test(flavor = "multi_thread")]
async fn files_and_fields_a_request_names_are_confined_and_bounded() {
    let Some(mut w) = World::start().await else {
        return;
    };
    let profiles = w.env.path().join("kubelet-seccomp");
    std::fs::create_dir_all(&profiles).unwrap();
    let allow = profiles.join("allow.json");
    std::fs::write(&allow, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
    let fifo = profiles.join("fifo.json");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = profiles.join("big.json");
    std::fs::write(&big, vec![b' '; 2 << 20]).unwrap();
    reconfigure(
        &mut w,
        &format!(
            "seccomp_profile_roots = [{:?}]",
            profiles.display().to_string()
        ),
        "",
    )
    .await;
    let rss_before = common::anon_rss_kib(w.berthd.pid());

    // Pods: a device as a profile, a file outside the roots, a relative log dir
    // and cgroup parent.
    let with_pod_profile = |w: &World, path: &str| {
        let mut config = w.pod_config("seccomp-pod");
        let linux = config.linux.get_or_insert_with(Default::default);
        linux
            .security_context
            .get_or_insert_with(Default::default)
            .seccomp = localhost_profile(path);
        config
    };
    for (path, needle) in [
        ("/dev/zero", "seccomp profile roots"),
        ("/etc/passwd", "seccomp profile roots"),
        (fifo.to_str().unwrap(), "regular file"),
        (big.to_str().unwrap(), "larger than"),
    ] {
        let err = pod::run_pod(&w.cri, with_pod_profile(&w, path))
            .await
            .unwrap_err();
        common::assert_error(&err, tonic::Code::InvalidArgument, &["seccomp", needle]);
    }
    assert!(
        common::anon_rss_kib(w.berthd.pid()) < rss_before + 64 * 1024,
        "berthd grew from {rss_before} KiB to {} KiB",
        common::anon_rss_kib(w.berthd.pid())
    );
    let mut relative_logs = w.pod_config("relative-logs");
    relative_logs.log_directory = "pod-logs/relative".into();
    let err = pod::run_pod(&w.cri, relative_logs).await.unwrap_err();
    common::assert_error(&err, tonic::Code::InvalidArgument, &["log_directory"]);
    for parent in ["kubepods/pod1", "/kubepods/../../escape"] {
        let mut config = w.pod_config("cgroup-parent");
        config
            .linux
            .get_or_insert_with(Default::default)
            .cgroup_parent = parent.into();
        let err = pod::run_pod(&w.cri, config).await.unwrap_err();
        common::assert_error(&err, tonic::Code::InvalidArgument, &["cgroup_parent"]);
    }

    // Containers.
    let pod = w.run_pod("fields").await;
    let outside = w.env.outside.join("escaped.log");
    for log_path in [
        outside.display().to_string(),
        "../../../outside/escaped.log".into(),
    ] {
        let mut config = w.container_config("logs", "echo hi");
        config.log_path = log_path;
        let err = w.create(&pod, config).await.unwrap_err();
        common::assert_error(&err, tonic::Code::InvalidArgument, &["log_path"]);
    }
    assert!(!outside.exists());
    let mut config = w.container_config("relative-mount", "echo hi");
    config.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: "relative/dir".into(),
        ..Default::default()
    });
    let err = w.create(&pod, config).await.unwrap_err();
    common::assert_error(&err, tonic::Code::InvalidArgument, &["mounts[0].host_path"]);
    let mut config = w.container_config("fifo", "echo hi");
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: localhost_profile(fifo.to_str().unwrap()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = w.create(&pod, config).await.unwrap_err();
    common::assert_error(&err, tonic::Code::InvalidArgument, &["seccomp"]);

    // A profile under the roots works.
    let mut config = w.container_config("allowed", "echo allowed");
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: localhost_profile(&allow.display().to_string()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = w
        .create(&pod, config)
        .await
        .expect("a profile under the roots");
    w.start_container(&id).await;
    w.wait_log("fields", "allowed", "allowed").await;

    // A 60,000-character cpuset: refused at once, quoted briefly.
    let id = w.run(&pod, "update", "exec sleep 1000").await;
    let started = Instant::now();
    let err = w
        .cri
        .runtime_client()
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpuset_cpus: "0,".repeat(30_000),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    common::assert_error(&err, tonic::Code::InvalidArgument, &["cpuset_cpus"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.message().len() < 1024, "{} bytes", err.message().len());
    let mut config = w.container_config("huge-path", "echo hi");
    config.mounts.push(cri::Mount {
        container_path: format!("relative/{}", "x".repeat(100_000)),
        host_path: "/tmp".into(),
        ..Default::default()
    });
    let err = w.create(&pod, config).await.unwrap_err();
    common::assert_error(&err, tonic::Code::InvalidArgument, &["container_path"]);
    assert!(err.message().len() < 1024, "{} bytes", err.message().len());
}

/// Output that does not end in a newline is a partial (`P`) entry, as the CRI log
/// format says: `kubectl logs` must not show a newline the program never wrote.
#[tokio::test(flavor = "multi_thread")]
async fn unterminated_output_is_a_partial_log_entry() {
    let Some(w) = World::start().await else {
        return;
    };
    let pod = w.run_pod("partial").await;
    let id = w.run(&pod, "prompt", "echo whole; echo -n 'abcd'").await;
    w.wait_exited(&id).await;
    w.wait_log("partial", "prompt", "abcd").await;
    assert_eq!(
        w.log_entries("partial", "prompt"),
        vec![
            ("stdout".to_string(), "F".to_string(), "whole".to_string()),
            ("stdout".to_string(), "P".to_string(), "abcd".to_string()),
        ]
    );
}
