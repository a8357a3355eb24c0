//! A berthd ready to run containers: a pod network of the test's own, a registry
//! holding Debian's static busybox as an image, and that image pulled. Shared by
//! the container and workload tests; `World` methods wrap the CRI container calls
//! the tests repeat.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;

use super::TestBed;
use super::daemon::TestEnv;
use super::image::{Image, Layer};
use super::pod::{self, PodNet};
use super::registry::RegistryOpts;

pub const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;
pub const EXITED: i32 = cri::ContainerState::ContainerExited as i32;

/// A [`TestBed`] (its fields read through `Deref`: `w.cri`, `w.berthd`,
/// `w.env`, `w.registry`) with a pod network, a busybox image in its registry,
/// and that image pulled.
pub struct World {
    /// Torn down after berthd is killed (see `Drop`), before the root goes.
    pub net: PodNet,
    pub bed: TestBed,
    pub image: String,
    pub logs: PathBuf,
}

impl Deref for World {
    type Target = TestBed;

    fn deref(&self) -> &TestBed {
        &self.bed
    }
}

impl DerefMut for World {
    fn deref_mut(&mut self) -> &mut TestBed {
        &mut self.bed
    }
}

impl Drop for World {
    /// berthd goes first, as in a plain [`TestBed`], so the network's teardown
    /// never races it; then `net`, then the bed's root and registry.
    fn drop(&mut self) {
        if self.bed.berthd.is_running() {
            self.bed.berthd.kill9();
        }
    }
}

impl World {
    pub async fn start() -> Option<World> {
        World::builder().start().await
    }

    /// A world whose pod network has `plugins` after the bridge, and whose
    /// [`World::image`] is `image`.
    pub async fn start_with(plugins: &[serde_json::Value], image: Image) -> Option<World> {
        World::builder().plugins(plugins).image(image).start().await
    }

    /// Like [`World::start_with`], with `extra_config` (TOML tables) appended to
    /// berthd's config.
    pub async fn start_configured(
        plugins: &[serde_json::Value],
        image: Image,
        extra_config: &str,
    ) -> Option<World> {
        World::builder()
            .plugins(plugins)
            .image(image)
            .before_start(|env| {
                if !extra_config.is_empty() {
                    let config = std::fs::read_to_string(&env.config).unwrap();
                    std::fs::write(&env.config, format!("{config}\n{extra_config}")).unwrap();
                }
            })
            .start()
            .await
    }

    /// The way to a world that differs from [`World::start`]'s.
    pub fn builder<'a>() -> WorldBuilder<'a> {
        WorldBuilder {
            plugins: Vec::new(),
            plugin_dir: None,
            image: Some(busybox_image()),
            before_start: None,
        }
    }

    /// Pushes `image` as `test/<name>:1` and pulls it; returns the reference.
    pub async fn add_image(&self, image: &Image, name: &str) -> String {
        let repo = format!("test/{name}");
        image.push(&self.registry, &repo, "1").await;
        let reference = self.registry.reference(&repo, "1");
        self.cri
            .pull(&reference)
            .await
            .expect("pull an added image");
        reference
    }

    pub fn pod_config(&self, name: &str) -> cri::PodSandboxConfig {
        let mut config = pod::pod_config(name, &[]);
        config.log_directory = self.logs.join(name).display().to_string();
        config
    }

    pub async fn run_pod(&self, name: &str) -> (String, cri::PodSandboxConfig) {
        self.run_pod_with(self.pod_config(name)).await
    }

    pub async fn run_pod_with(
        &self,
        config: cri::PodSandboxConfig,
    ) -> (String, cri::PodSandboxConfig) {
        let id = pod::run_pod(&self.cri, config.clone())
            .await
            .expect("RunPodSandbox");
        (id, config)
    }

    pub fn container_config(&self, name: &str, script: &str) -> cri::ContainerConfig {
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

    pub async fn create(
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

    pub async fn start_container(&self, id: &str) {
        self.cri
            .runtime_client()
            .start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .expect("StartContainer");
    }

    pub async fn run(
        &self,
        pod: &(String, cri::PodSandboxConfig),
        name: &str,
        script: &str,
    ) -> String {
        let id = self
            .create(pod, self.container_config(name, script))
            .await
            .expect("CreateContainer");
        self.start_container(&id).await;
        id
    }

    /// The host pid of a running container's process, from the verbose status.
    pub async fn container_pid(&self, id: &str) -> u32 {
        self.container_info(id).await["pid"].as_u64().expect("pid") as u32
    }

    /// The `info` JSON of a container's verbose status.
    pub async fn container_info(&self, id: &str) -> serde_json::Value {
        let info = self
            .cri
            .runtime_client()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: true,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .info;
        serde_json::from_str(&info["info"]).expect("info JSON")
    }

    pub async fn status(&self, id: &str) -> cri::ContainerStatus {
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

    pub async fn wait_exited(&self, id: &str) -> cri::ContainerStatus {
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

    pub async fn exec(
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

    pub async fn stop(&self, id: &str, timeout: i64) {
        self.cri
            .runtime_client()
            .stop_container(cri::StopContainerRequest {
                container_id: id.to_string(),
                timeout,
            })
            .await
            .expect("StopContainer");
    }

    pub async fn remove(&self, id: &str) -> Result<(), tonic::Status> {
        self.cri
            .runtime_client()
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await?;
        Ok(())
    }

    pub async fn list(&self, filter: cri::ContainerFilter) -> Vec<String> {
        let mut ids: Vec<String> = self
            .list_items(filter)
            .await
            .into_iter()
            .map(|c| c.id)
            .collect();
        ids.sort();
        ids
    }

    /// ListContainers' items, in the order berthd sent them.
    pub async fn list_items(&self, filter: cri::ContainerFilter) -> Vec<cri::Container> {
        self.cri
            .runtime_client()
            .list_containers(cri::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .expect("ListContainers")
            .into_inner()
            .containers
    }

    /// The entries of a container's CRI log: (stream, tag, content).
    pub fn log_entries(&self, pod: &str, name: &str) -> Vec<(String, String, String)> {
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

    pub async fn wait_log(&self, pod: &str, name: &str, content: &str) {
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

/// The applets [`busybox_image`] has.
pub const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "id", "tail", "true", "ls", "hostname",
];
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n";
pub const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Debian's static busybox with the applets the tests run as hard links.
pub fn busybox_image() -> Image {
    Image::oci()
        .layer(busybox_layer(APPLETS, PASSWD, GROUP).gzip())
        .env("PATH=/bin")
        .cmd(&["sh"])
        .build()
}

/// An image whose command sleeps for good, for a `sandbox_image` of the test's
/// own (its process is recognised by its command line, `sleep 1000000`).
pub fn sleeper_image() -> Image {
    Image::oci()
        .layer(busybox_layer(&["sleep"], "root:x:0:0::/:/bin/sh\n", "root:x:0:\n").gzip())
        .cmd(&["sleep", "1000000"])
        .build()
}

/// /bin/busybox with `applets` hard-linked to it, /tmp, and these account files.
pub fn busybox_layer(applets: &[&str], passwd: &str, group: &str) -> Layer {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut layer = Layer::new()
        .dir("bin")
        .dir("tmp")
        .file_with("bin/busybox", busybox, 0o755, 0, 0)
        .file("etc/passwd", passwd)
        .file("etc/group", group);
    for applet in applets {
        layer = layer.hardlink(&format!("bin/{applet}"), "bin/busybox");
    }
    layer
}

/// Makes a plugin directory on the root and says where it is.
type MakePluginDir<'a> = Box<dyn FnOnce(&TestEnv) -> PathBuf + 'a>;
/// Prepares the root before berthd starts.
type OnRoot<'a> = Box<dyn FnOnce(&TestEnv) + 'a>;

/// How a [`World`] is made: its pod network's plugins, its image (or none, for
/// pod-only tests), and what to do to its root before berthd starts.
pub struct WorldBuilder<'a> {
    plugins: Vec<serde_json::Value>,
    plugin_dir: Option<MakePluginDir<'a>>,
    image: Option<Image>,
    before_start: Option<OnRoot<'a>>,
}

impl<'a> WorldBuilder<'a> {
    /// CNI plugins after the bridge.
    pub fn plugins(mut self, plugins: &[serde_json::Value]) -> Self {
        self.plugins = plugins.to_vec();
        self
    }

    /// A plugin directory of the test's own, made by `make` on the root (it
    /// returns the directory); searched before the system's.
    pub fn plugin_dir(mut self, make: impl FnOnce(&TestEnv) -> PathBuf + 'a) -> Self {
        self.plugin_dir = Some(Box::new(make));
        self
    }

    /// The image pushed and pulled as [`World::image`].
    pub fn image(mut self, image: Image) -> Self {
        self.image = Some(image);
        self
    }

    /// No image at all ([`World::image`] is empty): for tests of pods alone.
    pub fn no_image(mut self) -> Self {
        self.image = None;
        self
    }

    /// Runs `configure` on the root once the network is there, before berthd
    /// starts (a config of the test's own).
    pub fn before_start(mut self, configure: impl FnOnce(&TestEnv) + 'a) -> Self {
        self.before_start = Some(Box::new(configure));
        self
    }

    /// `None` (after printing why) when the machine cannot run pods.
    pub async fn start(self) -> Option<World> {
        if !pod::prerequisites_met() {
            return None;
        }
        let WorldBuilder {
            plugins,
            plugin_dir,
            image,
            before_start,
        } = self;
        let mut net = None;
        let bed = TestBed::launch(RegistryOpts::default(), |env| {
            let dir = plugin_dir.map(|make| make(env));
            net = Some(PodNet::configure(env, &plugins, dir.as_deref()));
            if let Some(configure) = before_start {
                configure(env);
            }
        })
        .await;
        let net = net.expect("configured before berthd started");
        let image = match image {
            Some(image) => {
                image.push(&bed.registry, "test/busybox", "1").await;
                let image = format!("{}/test/busybox:1", bed.registry.host());
                bed.cri.pull(&image).await.expect("pull busybox");
                image
            }
            None => String::new(),
        };
        let logs = bed.env.path().join("pod-logs");
        Some(World {
            net,
            bed,
            image,
            logs,
        })
    }
}
