//! The two runtimes under test, each on a root, state, socket, config, CNI
//! network and log directory of its own below the bench's work directory:
//! berthd (release build, its own shim, built-in pause) and, when installed,
//! Debian's containerd 1.6 with its runc shim and the bench's pause image.
//!
//! Daemons run in process groups of their own, so a ^C reaches only the bench,
//! which then tears the pods down through CRI while the daemons still serve.
//! Whatever is left after that (a daemon that died, a failed teardown) is swept
//! by pid and by path: the shims carrying the work directory in their flags,
//! runc containers in the runtime's own runc root, mounts below its directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::daemon::{NotServing, wait_serving};

use super::Result;
use super::client::Cri;
use super::network::{CNI_BIN, PodNetwork};
use super::procfs;

pub const CONTAINERD_BIN: &str = "/usr/bin/containerd";
const CONTAINERD_SHIM: &str = "containerd-shim-runc-v2";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Berth,
    Containerd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Berth => "berth",
            Kind::Containerd => "containerd",
        }
    }
}

/// berthd and the binaries it runs, as `make build` leaves them side by side.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub berthd: PathBuf,
    pub shim: PathBuf,
    /// The static pause: berth's infra process, and containerd's sandbox image.
    pub pause: PathBuf,
}

pub struct Runtime {
    pub kind: Kind,
    /// Everything of this runtime lives below it.
    pub dir: PathBuf,
    pub state: PathBuf,
    pub net: PodNetwork,
    /// Pod log directories go below it.
    pub logs: PathBuf,
    /// `runtime_name runtime_version` from CRI Version.
    pub version: String,
    pub cri: Cri,
    child: Option<Child>,
    /// The daemon's command line, to start it again after a kill.
    argv: Vec<std::ffi::OsString>,
    log_path: PathBuf,
    socket: PathBuf,
    /// The daemon's root: its content and snapshot stores.
    root: PathBuf,
    shim_exe: String,
    /// runc's state directory for this runtime's containers.
    runc_root: PathBuf,
}

impl Runtime {
    pub async fn start_berth(dir: &Path, bins: &Binaries, certs_d: &Path) -> Result<Runtime> {
        let net = PodNetwork::new(0, "berth", dir);
        net.write()?;
        let (root, state, socket) = (dir.join("root"), dir.join("state"), dir.join("berth.sock"));
        let config = format!(
            "log_level = \"info\"\npause_binary = \"{}\"\n\n\
             [runtimes.berth]\nshim = \"{}\"\nruntime = \"runc\"\n\n\
             [registry]\nconfig_path = \"{}\"\n\n\
             [cni]\nconf_dir = \"{}\"\nbin_dirs = [\"{CNI_BIN}\"]\n",
            bins.pause.display(),
            bins.shim.display(),
            certs_d.display(),
            net.conf_dir.display(),
        );
        let config_path = dir.join("config.toml");
        write(&config_path, &config)?;
        let mut cmd = Command::new(&bins.berthd);
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .arg("--socket")
            .arg(&socket);
        let shim_exe = file_name(&bins.shim);
        let runc_root = state.join("runc/k8s.io");
        Self::launch(
            Kind::Berth,
            dir,
            cmd,
            root,
            state,
            socket,
            net,
            shim_exe,
            runc_root,
        )
        .await
    }

    pub async fn start_containerd(
        dir: &Path,
        certs_d: &Path,
        pause_image: &str,
    ) -> Result<Runtime> {
        let net = PodNetwork::new(1, "containerd", dir);
        net.write()?;
        let (root, state, socket) = (
            dir.join("root"),
            dir.join("state"),
            dir.join("containerd.sock"),
        );
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        // Debian's defaults but for what must differ: paths, the pause image from
        // the bench's registry, no oom_score_adj below our own (root lacks
        // CAP_SYS_RESOURCE here), network namespaces under the state dir, runc's
        // state in our directory, an ephemeral streaming port.
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\n\
             [grpc]\n  address = \"{socket}\"\n\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n\n\
             [{cri}]\n  sandbox_image = \"{pause_image}\"\n  restrict_oom_score_adj = true\n  \
             netns_mounts_under_state_dir = true\n  stream_server_address = \"127.0.0.1\"\n  \
             stream_server_port = \"0\"\n\
             [{cri}.containerd]\n  default_runtime_name = \"runc\"\n\
             [{cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
             [{cri}.containerd.runtimes.runc.options]\n  Root = \"{runc}\"\n\
             [{cri}.cni]\n  bin_dir = \"{CNI_BIN}\"\n  conf_dir = \"{conf}\"\n\
             [{cri}.registry]\n  config_path = \"{certs}\"\n",
            root = root.display(),
            state = state.display(),
            socket = socket.display(),
            opt = dir.join("opt").display(),
            runc = dir.join("runc").display(),
            conf = net.conf_dir.display(),
            certs = certs_d.display(),
        );
        let config_path = dir.join("config.toml");
        write(&config_path, &config)?;
        let mut cmd = Command::new(CONTAINERD_BIN);
        cmd.arg("--config").arg(&config_path);
        let runc_root = dir.join("runc/k8s.io");
        let shim_exe = CONTAINERD_SHIM.to_string();
        Self::launch(
            Kind::Containerd,
            dir,
            cmd,
            root,
            state,
            socket,
            net,
            shim_exe,
            runc_root,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn launch(
        kind: Kind,
        dir: &Path,
        cmd: Command,
        root: PathBuf,
        state: PathBuf,
        socket: PathBuf,
        net: PodNetwork,
        shim_exe: String,
        runc_root: PathBuf,
    ) -> Result<Runtime> {
        let log_path = dir.join(format!("{}.log", kind.name()));
        let argv: Vec<_> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_os_string())
            .collect();
        let (child, cri) = spawn_ready(kind, &argv, &log_path, &socket).await?;
        let version = cri.version().await?;
        Ok(Runtime {
            kind,
            dir: dir.to_path_buf(),
            state,
            logs: dir.join("pod-logs"),
            net,
            version,
            cri,
            child: Some(child),
            argv,
            log_path,
            socket,
            root,
            shim_exe,
            runc_root,
        })
    }

    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// kill -9 of the daemon alone (its shims live on), reaped.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again, as it was started, and waits until it is ready.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9();
        let (child, cri) = spawn_ready(self.kind, &self.argv, &self.log_path, &self.socket).await?;
        self.child = Some(child);
        self.cri = cri;
        Ok(())
    }

    /// Snapshot directories in the daemon's overlay snapshotter.
    pub fn snapshots(&self) -> Vec<String> {
        let dir = match self.kind {
            Kind::Berth => self.root.join("snapshots"),
            Kind::Containerd => self
                .root
                .join("io.containerd.snapshotter.v1.overlayfs/snapshots"),
        };
        procfs::entries(&dir)
    }

    /// containerd's leases in the CRI namespace (`ctr leases ls`): what a killed
    /// pull or create left holding snapshots and blobs until the lease's
    /// `containerd.io/gc.expire` (24 h). None for berth, or without ctr.
    pub fn containerd_leases(&self) -> Option<usize> {
        if self.kind != Kind::Containerd {
            return None;
        }
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io", "leases", "ls", "--quiet"])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        Some(String::from_utf8_lossy(&out.stdout).lines().count())
    }

    /// Committed blobs in the daemon's content store.
    pub fn blobs(&self) -> Vec<String> {
        let dir = match self.kind {
            Kind::Berth => self.root.join("content/blobs/sha256"),
            Kind::Containerd => self
                .root
                .join("io.containerd.content.v1.content/blobs/sha256"),
        };
        procfs::entries(&dir)
    }

    /// This runtime's shim processes.
    pub fn shims(&self) -> Vec<u32> {
        procfs::processes(&self.shim_exe, &self.dir)
    }

    /// Containers runc still knows in this runtime's runc root.
    pub fn runc_containers(&self) -> Vec<String> {
        procfs::entries(&self.runc_root)
    }

    /// Tears every pod down through CRI, stops the daemon (SIGTERM, SIGKILL
    /// after 15 s) and sweeps what is left.
    pub async fn shut_down(&mut self) {
        self.cri.remove_everything().await;
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.sweep();
    }

    /// Kills the daemon if it still runs, then removes by pid and by path what
    /// its pods left: shims, runc containers, mounts, the bridge.
    pub fn sweep(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.shims() {
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let runc_root = self.runc_root.to_string_lossy().into_owned();
        for id in self.runc_containers() {
            let _ = Command::new("runc")
                .args(["--root", &runc_root, "delete", "--force", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for mount in procfs::mounts_under(&self.dir) {
            let _ = nix::mount::umount2(mount.point.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        self.net.remove_bridge();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.sweep();
    }
}

/// Starts the daemon `argv` in a process group of its own, its output appended
/// to `log_path`, and waits until its CRI says RuntimeReady and NetworkReady.
async fn spawn_ready(
    kind: Kind,
    argv: &[std::ffi::OsString],
    log_path: &Path,
    socket: &Path,
) -> Result<(Child, Cri)> {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", kind.name()))?;
    let serving = wait_serving(&mut child, READY_TIMEOUT, || async {
        match Cri::connect(socket).await {
            Ok(cri) => cri.ready().await == Ok(true),
            Err(_) => false,
        }
    })
    .await;
    match serving {
        Ok(()) => {}
        Err(NotServing::Exited(status)) => {
            return Err(format!(
                "{} exited with {status} while starting; its log:\n{}",
                kind.name(),
                tail(log_path, 20)
            ));
        }
        Err(NotServing::TimedOut(after)) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} not ready (RuntimeReady and NetworkReady) after {after:?}; its log:\n{}",
                kind.name(),
                tail(log_path, 20)
            ));
        }
    }
    // The probe's client is dropped with its closure; this one is the caller's.
    let cri = Cri::connect(socket).await?;
    Ok((child, cri))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
