//! Containers against a real berthd, the berth shim, runc, CNI and an image pulled
//! from a real registry: create/start/status/list/stop/remove, CRI logs, ExecSync
//! with a deadline, exit codes and reasons, OOM kills, names, and a berthd killed
//! with a running container and one that exits while it is down.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::daemon::{Berthd, Cri, TestEnv};
use common::image::{Image, Layer};
use common::pod::{self, PodNet};
use common::registry::{Registry, RegistryOpts};
use k8s_cri::v1 as cri;

const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;
const EXITED: i32 = cri::ContainerState::ContainerExited as i32;

/// A berthd with a pod network, a registry holding a busybox image, and that image
/// pulled.
struct World {
    cri: Cri,
    berthd: Berthd,
    _net: PodNet,
    env: TestEnv,
    _registry: Registry,
    image: String,
    logs: PathBuf,
}

impl World {
    async fn start() -> Option<World> {
        if !pod::prerequisites_met() {
            return None;
        }
        let registry = Registry::start(RegistryOpts::default()).await;
        let env = TestEnv::new();
        let net = PodNet::configure(&env, &[], None);
        let berthd = Berthd::start(&env).await;
        let cri = berthd.cri().await;
        busybox_image().push(&registry, "test/busybox", "1").await;
        let image = format!("{}/test/busybox:1", registry.host());
        cri.pull(&image).await.expect("pull busybox");
        let logs = env.path().join("pod-logs");
        Some(World {
            cri,
            berthd,
            _net: net,
            env,
            _registry: registry,
            image,
            logs,
        })
    }

    fn pod_config(&self, name: &str) -> cri::PodSandboxConfig {
        let mut config = pod::pod_config(name, &[]);
        config.log_directory = self.logs.join(name).display().to_string();
        config
    }

    async fn run_pod(&self, name: &str) -> (String, cri::PodSandboxConfig) {
        let config = self.pod_config(name);
        let id = pod::run_pod(&self.cri, config.clone())
            .await
            .expect("RunPodSandbox");
        (id, config)
    }

    fn container_config(&self, name: &str, script: &str) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into(), script.into()],
            log_path: format!("{name}.log"),
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    async fn create(
        &self,
        pod: &(String, cri::PodSandboxConfig),
        config: cri::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: pod.0.clone(),
            config: Some(config),
            sandbox_config: Some(pod.1.clone()),
        };
        Ok(self
            .cri
            .runtime_client()
            .create_container(request)
            .await?
            .into_inner()
            .container_id)
    }

    async fn start_container(&self, id: &str) {
        self.cri
            .runtime_client()
            .start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .expect("StartContainer");
    }

    async fn run(&self, pod: &(String, cri::PodSandboxConfig), name: &str, script: &str) -> String {
        let id = self
            .create(pod, self.container_config(name, script))
            .await
            .expect("CreateContainer");
        self.start_container(&id).await;
        id
    }

    async fn status(&self, id: &str) -> cri::ContainerStatus {
        self.cri
            .runtime_client()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("a status")
    }

    async fn wait_exited(&self, id: &str) -> cri::ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.status(id).await;
            if st.state == EXITED {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} did not exit: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse, tonic::Status> {
        Ok(self
            .cri
            .runtime_client()
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await?
            .into_inner())
    }

    async fn stop(&self, id: &str, timeout: i64) {
        self.cri
            .runtime_client()
            .stop_container(cri::StopContainerRequest {
                container_id: id.to_string(),
                timeout,
            })
            .await
            .expect("StopContainer");
    }

    async fn remove(&self, id: &str) -> Result<(), tonic::Status> {
        self.cri
            .runtime_client()
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await?;
        Ok(())
    }

    async fn list(&self, filter: cri::ContainerFilter) -> Vec<String> {
        let mut ids: Vec<String> = self
            .cri
            .runtime_client()
            .list_containers(cri::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .expect("ListContainers")
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect();
        ids.sort();
        ids
    }

    /// The entries of a container's CRI log: (stream, tag, content).
    fn log_entries(&self, pod: &str, name: &str) -> Vec<(String, String, String)> {
        let path = self.logs.join(pod).join(format!("{name}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .map(|line| {
                let parts: Vec<&str> = line.splitn(4, ' ').collect();
                assert_eq!(parts.len(), 4, "malformed log line {line:?}");
                assert!(parts[0].ends_with('Z'), "timestamp in {line:?}");
                (parts[1].into(), parts[2].into(), parts[3].into())
            })
            .collect()
    }

    async fn wait_log(&self, pod: &str, name: &str, content: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .log_entries(pod, name)
            .iter()
            .any(|(_, _, c)| c == content)
        {
            assert!(
                Instant::now() < deadline,
                "{content:?} not in the log of {name}: {:?}",
                self.log_entries(pod, name)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Debian's static busybox with the applets the tests run as hard links.
fn busybox_image() -> Image {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut layer = Layer::new()
        .dir("bin")
        .dir("tmp")
        .file_with("bin/busybox", busybox, 0o755, 0, 0)
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        )
        .file("etc/group", "root:x:0:\nnogroup:x:65534:\n");
    for applet in [
        "sh", "echo", "sleep", "cat", "id", "tail", "true", "ls", "hostname",
    ] {
        layer = layer.hardlink(&format!("bin/{applet}"), "bin/busybox");
    }
    Image::oci()
        .layer(layer.gzip())
        .env("PATH=/bin")
        .cmd(&["sh"])
        .build()
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
    assert!(st.image_ref.starts_with("sha256:"), "{}", st.image_ref);
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

    // Removing the pod removes its remaining container.
    pod::stop(&w.cri, &pod.0).await.unwrap();
    assert_eq!(w.status(&other).await.state, EXITED);
    pod::remove(&w.cri, &pod.0).await.unwrap();
    assert!(w.list(cri::ContainerFilter::default()).await.is_empty());
    assert!(common::dir_entries(&w.env.state.join("containers")).is_empty());
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
    w.wait_log("survivor", "runner", "before").await;

    w.berthd.kill9();
    // The quitter exits and the runner writes while berthd is away.
    tokio::time::sleep(Duration::from_secs(3)).await;
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
