//! Crash windows inside operations (issue 10, item 2): berthd killed between the
//! shim's start of a container and its record (`BERTH_FAULT=after-shim-start`, see
//! `src/fault.rs`), a RemoveContainer on a container whose process still runs, a
//! half-created pod whose undoing fails at start, and a PullImage cancelled while a
//! layer unpacks.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pod::{self, binaries, list};
use common::world::{EXITED, RUNNING, World};
use common::{Cri, Image, Layer, TestBed, TestEnv};
use k8s_cri::v1 as cri;

const CREATED: i32 = cri::ContainerState::ContainerCreated as i32;
const NOT_READY: i32 = cri::PodSandboxState::SandboxNotready as i32;

/// Runs a berthd that aborts at the crash point `fault`, hands it to `act`, and
/// waits for the abort.
async fn with_faulty_berthd<F, Fut>(env: &TestEnv, fault: &str, act: F)
where
    F: FnOnce(Cri) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&env.log)
        .unwrap();
    let mut child = env
        .berthd_command()
        .env("BERTH_FAULT", fault)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn berthd");
    let deadline = Instant::now() + Duration::from_secs(10);
    let cri = loop {
        if let Ok(cri) = Cri::connect(&env.socket).await
            && cri.try_version().await.is_ok()
        {
            break cri;
        }
        assert!(Instant::now() < deadline, "the faulty berthd did not start");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    act(cri).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "berthd did not abort at {fault}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
}

async fn start_via(cri: &Cri, id: &str) -> Result<(), tonic::Status> {
    cri.runtime_client()
        .start_container(cri::StartContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .map(|_| ())
}

async fn remove_container(w: &World, id: &str) -> Result<(), tonic::Status> {
    w.cri
        .runtime_client()
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .map(|_| ())
}

fn alive(pid: u32) -> bool {
    // Signal 0 checks existence; a zombie of a reaped container is gone too.
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) == 0 };
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_started_before_a_crash_is_recovered_as_it_is() {
    let Some(mut w) = World::start().await else {
        return;
    };
    let pod = w.run_pod("crashy").await;
    let runner = w
        .create(
            &pod,
            // It prints only once told to, after the restart: output read by the
            // berthd that is killed and not yet written is lost with it, a window
            // no test should depend on.
            w.container_config(
                "runner",
                "while [ ! -e /go ]; do sleep 0.1; done; echo up; exec sleep 1000",
            ),
        )
        .await
        .unwrap();
    let quitter = w
        .create(&pod, w.container_config("quitter", "exit 3"))
        .await
        .unwrap();
    w.berthd.kill9();

    // Each start reaches the shim, then berthd dies before recording it.
    for id in [&runner, &quitter] {
        with_faulty_berthd(&w.env, "after-shim-start", |cri| async move {
            start_via(&cri, id)
                .await
                .expect_err("berthd aborts before it answers");
        })
        .await;
    }
    w.berthd.restart().await;
    w.cri = w.berthd.cri().await;

    let st = w.status(&runner).await;
    assert_eq!(st.state, RUNNING, "{st:?}");
    // From the process's start tick: as precise as a tick, and after the create.
    assert!(st.started_at > st.created_at - 100_000_000, "{st:?}");
    let out = w
        .exec(&runner, &["sh", "-c", "echo inside; echo > /go"], 10)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"inside\n");
    // Its output reaches the log through the restarted berthd.
    w.wait_log("crashy", "runner", "up").await;
    // Its waiter is back: a stop is recorded.
    w.stop(&runner, 0).await;
    assert_eq!(w.status(&runner).await.state, EXITED);

    let st = w.wait_exited(&quitter).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"), "{st:?}");
    assert!(
        st.started_at > 0 && st.finished_at >= st.started_at,
        "{st:?}"
    );

    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
    assert!(w.list(cri::ContainerFilter::default()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_keeps_a_container_whose_process_still_runs() {
    let Some(mut w) = World::start().await else {
        return;
    };
    let pod = w.run_pod("stubborn").await;
    let id = w
        .create(&pod, w.container_config("runner", "exec sleep 1000"))
        .await
        .unwrap();
    // The shim starts the task behind berthd's back: berthd's record says Created
    // while the process runs, as a crash between start and record leaves it.
    let address = std::fs::read_to_string(w.env.state.join("pods").join(&pod.0).join("address"))
        .expect("the pod's shim address");
    let shim = berth::shim::connect(address.trim()).await.unwrap();
    let pid = shim.start(&id, "").await.expect("start through the shim");
    assert_eq!(w.status(&id).await.state, CREATED);

    let err = remove_container(&w, &id)
        .await
        .expect_err("a running process is not removed");
    common::assert_error(&err, tonic::Code::FailedPrecondition, &[&id]);
    let bundle = w.env.state.join("containers").join(&id);
    assert!(bundle.join("config.json").exists(), "bundle kept");
    assert!(alive(pid), "process left alone");
    assert_eq!(w.status(&id).await.state, CREATED, "record kept");
    assert_eq!(
        w.list(cri::ContainerFilter::default()).await,
        vec![id.clone()]
    );

    // Once berthd knows it runs (recovery asks the shim), removal stops it first.
    w.berthd.kill9();
    w.berthd.restart().await;
    w.cri = w.berthd.cri().await;
    assert_eq!(w.status(&id).await.state, RUNNING);
    remove_container(&w, &id).await.unwrap();
    assert!(!bundle.exists());
    common::wait_until("the process to go", Duration::from_secs(10), || !alive(pid)).await;
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}

/// What a crash in the middle of RunPodSandbox leaves (a Creating record, the
/// bundle, a netns), with a mount in the bundle that makes its removal fail.
fn half_created_pod(env: &TestEnv, name: &str, blocker_source: &Path) -> (String, PathBuf) {
    let id = format!("{:0>64}", hex_name(name));
    let bundle = env.state.join("pods").join(&id);
    let blocker = bundle.join("blocker");
    std::fs::create_dir_all(&blocker).unwrap();
    berth::network::netns::create(&env.state.join("netns"), &id).unwrap();
    run(Command::new("mount")
        .arg("--bind")
        .arg(blocker_source)
        .arg(&blocker));
    let store = berth::store::Store::open(&env.root.join("meta.redb")).unwrap();
    let record = berth::store::SandboxRecord {
        id: id.clone(),
        config: berth::domain::config::SandboxConfig {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            ..Default::default()
        },
        phase: berth::domain::SandboxPhase::Creating,
        bundle,
        shim: binaries().0.clone(),
        ..Default::default()
    };
    store.write(|tx| tx.put(&record)).unwrap();
    (id, blocker)
}

fn hex_name(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

fn run(cmd: &mut Command) {
    let status = cmd.stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "{cmd:?}: {status}");
}

async fn pod_states(cri: &Cri) -> Vec<(String, i32)> {
    let mut out: Vec<(String, i32)> = cri
        .runtime_client()
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| (p.id, p.state))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_created_pod_that_cannot_be_undone_is_retried_until_gone() {
    let Some(mut world) = World::builder().no_image().start().await else {
        return;
    };
    let TestBed { berthd, env, .. } = &mut world.bed;
    berthd.kill9();
    let (kept, kept_blocker) = half_created_pod(env, "kept", &env.outside);
    let (removed, removed_blocker) = half_created_pod(env, "removed", &env.outside);

    // Undoing fails at each start: both stay, listed NotReady.
    let mut cri = None;
    for start in 0..2 {
        if start > 0 {
            berthd.kill9();
        }
        berthd.restart().await;
        let client = berthd.cri().await;
        assert_eq!(
            pod_states(&client).await,
            vec![(kept.clone(), NOT_READY), (removed.clone(), NOT_READY)]
        );
        cri = Some(client);
    }
    let cri = cri.unwrap();
    run(Command::new("umount").arg(&kept_blocker));
    run(Command::new("umount").arg(&removed_blocker));

    // RemovePodSandbox finishes one; the next start finishes the other.
    pod::remove(&cri, &removed).await.unwrap();
    assert_eq!(list(&cri, Default::default()).await, vec![kept.clone()]);
    berthd.kill9();
    berthd.restart().await;
    let cri = berthd.cri().await;
    assert!(pod_states(&cri).await.is_empty());
    assert!(common::dir_entries(&env.state.join("pods")).is_empty());
    assert!(common::dir_entries(&env.state.join("netns")).is_empty());
    // Their names are free.
    for name in ["kept", "removed"] {
        let id = pod::run_pod(&cri, pod::pod_config(name, &[]))
            .await
            .expect("RunPodSandbox");
        pod::remove(&cri, &id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_cancelled_while_unpacking_leaves_no_orphan_snapshot() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    // Enough files that unpacking takes a while to catch.
    let mut layer = Layer::new();
    for d in 0..50 {
        layer = layer.dir(&format!("d{d}"));
    }
    for i in 0..5_000 {
        layer = layer.file(&format!("d{}/f{i}", i % 50), b"x");
    }
    let image = Image::oci().layer(layer.gzip()).build();
    let reference = bed.push(&image, "test/many", "1").await;

    let mut client = bed.cri.image_client();
    let request = cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: reference.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pull = tokio::spawn(async move { client.pull_image(request).await });
    let snapshots = bed.env.snapshots_dir();
    let staging = || {
        common::dir_entries(&snapshots)
            .iter()
            .any(|n| n.starts_with("staging-"))
    };
    common::wait_until("the layer to unpack", Duration::from_secs(20), staging).await;
    pull.abort();
    assert!(pull.await.unwrap_err().is_cancelled());
    common::wait_until("the unpack to end", Duration::from_secs(30), || !staging()).await;
    // Whatever the cancelled pull made is owned: once the image is pulled and
    // removed, no snapshot is left.
    bed.cri.pull(&reference).await.expect("pull again");
    bed.cri.remove(&reference).await.unwrap();
    assert!(
        common::dir_entries(&snapshots).is_empty(),
        "{:?}",
        common::dir_entries(&snapshots)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_of_a_container_half_created_by_a_crash_are_undone() {
    let image = Image::oci()
        .layer(
            common::world::busybox_layer(
                common::world::APPLETS,
                common::world::PASSWD,
                common::world::GROUP,
            )
            .gzip(),
        )
        .layer(Layer::new().file("data/seed", "seed\n").gzip())
        .env("PATH=/bin")
        .volume("/data")
        .build();
    let Some(mut w) = World::start_with(&[], image).await else {
        return;
    };
    let artifact = Image::oci()
        .layer(Layer::new().file("hello", "hi\n").gzip())
        .build();
    let artifact_ref = w.add_image(&artifact, "artifact").await;
    let pod = w.run_pod("halfvol").await;
    let mut config = w.container_config("app", "exec sleep 1000");
    config.mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: artifact_ref.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    w.berthd.kill9();
    let request = cri::CreateContainerRequest {
        pod_sandbox_id: pod.0.clone(),
        config: Some(config),
        sandbox_config: Some(pod.1.clone()),
    };
    with_faulty_berthd(&w.env, "after-volumes", |cri| async move {
        cri.runtime_client()
            .create_container(request)
            .await
            .expect_err("berthd aborts before it answers");
    })
    .await;
    let containers = w.env.state.join("containers");
    let bundles: Vec<PathBuf> = std::fs::read_dir(&containers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(bundles.len(), 1, "the crash left a bundle");
    let bundle = bundles[0].display().to_string();
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&bundle)
    };
    assert!(mounted(), "and its image volume mounted");
    let id = bundles[0].file_name().unwrap().to_owned();
    let data = w.env.root.join("containers").join(&id);
    assert!(
        data.join("volumes/0/seed").exists(),
        "and its filled volume"
    );

    w.berthd.restart().await;
    w.cri = w.berthd.cri().await;
    assert!(w.list(cri::ContainerFilter::default()).await.is_empty());
    assert!(!mounted(), "recovery unmounts the image volume");
    assert!(!bundles[0].exists(), "and removes the bundle");
    assert!(!data.exists(), "and the image-declared volumes");
    w.cri
        .remove(&artifact_ref)
        .await
        .expect("the image is no longer held");
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}
