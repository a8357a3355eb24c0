//! A `berthd` on a temporary root, and CRI clients over its unix socket.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    AuthConfig, Image, ImageFsInfoRequest, ImageFsInfoResponse, ImageSpec, ImageStatusRequest,
    ImageStatusResponse, ListImagesRequest, PullImageRequest, RemoveImageRequest, VersionRequest,
    VersionResponse,
};
use tonic::transport::Channel;

use berth_testkit::daemon::{NotServing, wait_serving};
use berth_testkit::tail;

pub const BERTHD: &str = env!("CARGO_BIN_EXE_berthd");
pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// How long a single CRI call may take before the test fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A temporary directory with everything one berthd needs:
/// `root/`, `state/`, `berthd.sock`, `config.toml`, `certs.d/`, and
/// `outside/`, a place outside the root for canaries.
pub struct TestEnv {
    dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub certs_d: PathBuf,
    pub outside: PathBuf,
    pub log: PathBuf,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path();
        let env = TestEnv {
            root: path.join("root"),
            state: path.join("state"),
            socket: path.join("berthd.sock"),
            config: path.join("config.toml"),
            certs_d: path.join("certs.d"),
            outside: path.join("outside"),
            log: path.join("berthd.log"),
            dir,
        };
        for d in [&env.root, &env.state, &env.certs_d, &env.outside] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(
            &env.config,
            format!("[registry]\nconfig_path = \"{}\"\n", env.certs_d.display()),
        )
        .unwrap();
        env
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `certs.d/<host>/hosts.toml` (containerd layout): `server`, and
    /// each mirror as a `[host."<url>"]` with pull and resolve capabilities.
    pub fn write_hosts_toml(&self, host: &str, server: &str, mirrors: &[&str]) {
        let mut toml = format!("server = \"{server}\"\n");
        for mirror in mirrors {
            toml.push_str(&format!(
                "\n[host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ));
        }
        let dir = self.certs_d.join(host);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("hosts.toml"), toml).unwrap();
    }

    pub fn remove_hosts_toml(&self, host: &str) {
        fs::remove_dir_all(self.certs_d.join(host)).unwrap();
    }

    /// `content/blobs/sha256/<hex>` under the root.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("content/blobs/sha256")
            .join(super::hex_of(digest))
    }

    pub fn ingest_dir(&self) -> PathBuf {
        self.root.join("content/ingest")
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Every `snapshots/<n>/fs` directory.
    pub fn snapshot_fs_dirs(&self) -> Vec<PathBuf> {
        super::dir_entries(&self.snapshots_dir())
            .into_iter()
            .map(|n| self.snapshots_dir().join(n).join("fs"))
            .filter(|p| p.is_dir())
            .collect()
    }

    /// The `snapshots/<n>/fs` that contains `marker` (a path inside the layer).
    pub fn find_snapshot(&self, marker: &str) -> Option<PathBuf> {
        let found: Vec<PathBuf> = self
            .snapshot_fs_dirs()
            .into_iter()
            .filter(|fs| fs.join(marker).symlink_metadata().is_ok())
            .collect();
        assert!(
            found.len() <= 1,
            "marker {marker} in several snapshots: {found:?}"
        );
        found.into_iter().next()
    }

    /// Like [`TestEnv::find_snapshot`], panicking with the snapshot list if absent.
    pub fn snapshot_with(&self, marker: &str) -> PathBuf {
        self.find_snapshot(marker).unwrap_or_else(|| {
            panic!(
                "no snapshot contains {marker}; snapshots: {:?}",
                self.snapshot_fs_dirs()
            )
        })
    }

    /// The pid of pod `pod`'s shim, from the pid file the shim writes into the
    /// pod's bundle.
    pub fn shim_pid(&self, pod: &str) -> u32 {
        let path = self.state.join("pods").join(pod).join("shim.pid");
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .expect("a pid")
    }

    /// `berthd` with this env's config, root, state and socket.
    pub fn berthd_command(&self) -> Command {
        self.berthd_command_on(&self.socket)
    }

    /// `berthd` with this env's config, root and state, on another socket.
    pub fn berthd_command_on(&self, socket: &Path) -> Command {
        berthd_command(&self.config, &self.root, &self.state, socket)
    }
}

fn berthd_command(config: &Path, root: &Path, state: &Path, socket: &Path) -> Command {
    let mut cmd = Command::new(BERTHD);
    cmd.arg("--config")
        .arg(config)
        .arg("--root")
        .arg(root)
        .arg("--state")
        .arg(state)
        .arg("--socket")
        .arg(socket)
        .args(["--log-level", "debug"])
        .stdin(Stdio::null());
    cmd
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// A running berthd. Killed (SIGKILL) on drop; its log is printed if the test
/// is failing.
pub struct Berthd {
    child: Option<Child>,
    config: PathBuf,
    root: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    starts: usize,
}

impl Berthd {
    /// Starts berthd on `env` and waits until it answers CRI `Version`.
    pub async fn start(env: &TestEnv) -> Berthd {
        let mut berthd = Berthd {
            child: None,
            config: env.config.clone(),
            root: env.root.clone(),
            state: env.state.clone(),
            socket: env.socket.clone(),
            log: env.log.clone(),
            starts: 0,
        };
        berthd.launch().await;
        berthd
    }

    async fn launch(&mut self) {
        assert!(self.child.is_none(), "berthd is already running");
        self.starts += 1;
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "===== berthd start #{} =====", self.starts).unwrap();
        let child = berthd_command(&self.config, &self.root, &self.state, &self.socket)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        let socket = &self.socket;
        let child = self.child.insert(child);
        let serving = wait_serving(child, READY_TIMEOUT, || async {
            socket.exists()
                && match Cri::connect(socket).await {
                    Ok(cri) => cri.try_version().await.is_ok(),
                    Err(_) => false,
                }
        })
        .await;
        match serving {
            Ok(()) => {}
            Err(NotServing::Exited(status)) => {
                self.child = None;
                panic!(
                    "berthd exited during startup with {status}; log:\n{}",
                    self.log_tail()
                );
            }
            Err(NotServing::TimedOut(after)) => {
                panic!(
                    "berthd not ready after {after:?}; log:\n{}",
                    self.log_tail()
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("berthd not running").id()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// SIGKILL, like a node crash: no cleanup (the socket file stays).
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("berthd not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits (up to 10 s) for berthd to exit. Returns its status.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("berthd not running");
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "berthd did not exit within 10 s of SIGTERM; log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts berthd again on the same root, state and socket (SIGTERM first
    /// if it is still running).
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop().await;
            assert!(status.success(), "berthd exited with {status} on SIGTERM");
        }
        self.launch().await;
    }

    /// A CRI client (image and runtime services) for this berthd.
    pub async fn cri(&self) -> Cri {
        Cri::connect(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.socket.display()))
    }

    /// Runs the admin CLI: `berth --socket <socket> <args>`.
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        let output = tokio::time::timeout(
            CALL_TIMEOUT,
            tokio::process::Command::new(BERTH)
                .arg("--socket")
                .arg(&self.socket)
                .args(args)
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("berth {args:?} did not finish in {CALL_TIMEOUT:?}"))
        .expect("run berth");
        CliOutput {
            args: args.iter().map(|s| s.to_string()).collect(),
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        tail(&self.log(), 200)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- berthd log ({}) ----\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

/// Output of one `berth` CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Panics (with both outputs) unless the command exited 0. Returns stdout.
    pub fn success(&self) -> &str {
        assert!(
            self.status.success(),
            "berth {:?} exited with {}\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }
}

/// CRI image and runtime service clients over one unix-socket channel.
/// Cheap to clone; methods take `&self` so calls can run concurrently.
#[derive(Clone)]
pub struct Cri {
    images: ImageServiceClient<Channel>,
    runtime: RuntimeServiceClient<Channel>,
}

fn spec(reference: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: reference.to_string(),
        ..Default::default()
    })
}

impl Cri {
    pub async fn connect(socket: &Path) -> Result<Cri, tonic::transport::Error> {
        let channel = berth_testkit::cri::connect(socket, CALL_TIMEOUT).await?;
        Ok(Cri {
            images: ImageServiceClient::new(channel.clone()),
            runtime: RuntimeServiceClient::new(channel),
        })
    }

    pub fn image_client(&self) -> ImageServiceClient<Channel> {
        self.images.clone()
    }

    pub fn runtime_client(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    pub async fn try_version(&self) -> Result<VersionResponse, tonic::Status> {
        let request = VersionRequest {
            version: "v1".into(),
        };
        Ok(self.runtime.clone().version(request).await?.into_inner())
    }

    pub async fn version(&self) -> VersionResponse {
        self.try_version().await.expect("Version")
    }

    /// PullImage; returns the `image_ref` berthd reports.
    pub async fn pull(&self, reference: &str) -> Result<String, tonic::Status> {
        self.pull_with_auth(reference, None).await
    }

    pub async fn pull_with_auth(
        &self,
        reference: &str,
        auth: Option<AuthConfig>,
    ) -> Result<String, tonic::Status> {
        let request = PullImageRequest {
            image: spec(reference),
            auth,
            sandbox_config: None,
        };
        Ok(self
            .images
            .clone()
            .pull_image(request)
            .await?
            .into_inner()
            .image_ref)
    }

    /// ImageStatus (not verbose): `None` when berthd does not know the image.
    /// Tags and digests come sorted.
    pub async fn image(&self, reference: &str) -> Option<Image> {
        self.image_status(reference, false).await.image
    }

    pub async fn image_status(&self, reference: &str, verbose: bool) -> ImageStatusResponse {
        let request = ImageStatusRequest {
            image: spec(reference),
            verbose,
        };
        let mut response = self
            .images
            .clone()
            .image_status(request)
            .await
            .unwrap_or_else(|e| panic!("ImageStatus({reference:?}): {e}"))
            .into_inner();
        if let Some(image) = response.image.as_mut() {
            image.repo_tags.sort();
            image.repo_digests.sort();
        }
        response
    }

    /// Sorted by id, tags and digests sorted, so lists compare with `==`.
    pub async fn list_images(&self) -> Vec<Image> {
        let request = ListImagesRequest { filter: None };
        let mut images = self
            .images
            .clone()
            .list_images(request)
            .await
            .expect("ListImages")
            .into_inner()
            .images;
        images.sort_by(|a, b| a.id.cmp(&b.id));
        for image in &mut images {
            image.repo_tags.sort();
            image.repo_digests.sort();
        }
        images
    }

    pub async fn remove(&self, reference: &str) -> Result<(), tonic::Status> {
        let request = RemoveImageRequest {
            image: spec(reference),
        };
        self.images.clone().remove_image(request).await?;
        Ok(())
    }

    pub async fn image_fs_info(&self) -> ImageFsInfoResponse {
        self.images
            .clone()
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .expect("ImageFsInfo")
            .into_inner()
    }
}
