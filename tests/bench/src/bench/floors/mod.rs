//! The physical floors berth cannot beat, done the plainest fast way with the
//! same inputs:
//!
//! - a pod: a pinned network namespace, then at once CNI ADD of the same conflist
//!   (plugins exec'd directly, see `cni.rs`) and the pod's files (hostname,
//!   hosts, resolv.conf, a tmpfs for /dev/shm) plus `runc create` + `runc start`
//!   of a pause bundle (the static pause, a read-only rootfs) in that namespace;
//! - a container: an overlay on the busybox rootfs, then `runc create` +
//!   `runc start` of a bundle with the mounts a CRI container gets (the pod's
//!   files, its /dev/shm) joining the pod's network, IPC, UTS and PID
//!   namespaces; ExecSync: `runc exec`; stop and remove: `runc kill TERM`, the
//!   exit awaited, `runc delete`, the overlay unmounted;
//! - a pod's teardown: its containers stopped together, then the pause killed
//!   and deleted beside CNI DEL, then /dev/shm unmounted, the namespace unpinned;
//! - many pods (`scale.rs`): the same, pods K at a time on K threads;
//! - a pull (`pull.rs`): every layer downloaded at once, each gunzipped and
//!   untarred as it streams in;
//! - a List (`grpc.rs`): a bare server on berthd's gRPC stack answering with
//!   berth's responses encoded once.
//!
//! No shim, no store, no metadata, no verification: what is left is the work of
//! the kernel, runc, the CNI plugins, the network and zlib.

mod cni;
pub mod grpc;
mod pull;
mod scale;

pub use pull::pull;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Result;
use super::client::SLEEPER;
use super::images::Tarball;
use super::network::PodNetwork;
use super::procfs;
use berth::network::NetNs;
use berth::network::netns as berth_netns;

/// One pod's life on the floor, as the latency scenario times it for the runtimes.
#[derive(Debug, Clone, Default)]
pub struct Cycle {
    pub pod: Duration,
    pub netns: Duration,
    pub cni_add: Duration,
    pub runc_pause: Duration,
    pub create: Duration,
    pub start: Duration,
    pub exec: Vec<Duration>,
    pub stop_remove: Duration,
    pub pod_teardown: Duration,
}

pub struct Floor {
    dir: PathBuf,
    pub net: PodNetwork,
    runc_root: PathBuf,
    netns_dir: PathBuf,
    pause_rootfs: PathBuf,
    busybox_rootfs: PathBuf,
    /// `runc spec`'s default config, the base of both bundles.
    spec: Value,
}

/// A pod running on the floor.
struct Pod {
    id: String,
    /// hostname, hosts, resolv.conf and shm/.
    dir: PathBuf,
    netns: NetNs,
    /// CNI ADD's result, for DEL.
    result: Value,
    pause_pid: i32,
    /// (id, pid) of each container.
    containers: Vec<(String, i32)>,
}

/// How long a pod's start took, in parts.
struct PodTimes {
    netns: Duration,
    cni_add: Duration,
    runc_pause: Duration,
}

impl Floor {
    /// Unpacks the pause and busybox layers into rootfs directories and asks runc
    /// for its default spec.
    pub fn prepare(dir: &Path, pause: &Tarball, busybox: &Tarball) -> Result<Floor> {
        let mut floor = Floor {
            dir: dir.to_path_buf(),
            net: PodNetwork::new(2, "floor", dir),
            runc_root: dir.join("runc"),
            netns_dir: dir.join("netns"),
            pause_rootfs: dir.join("rootfs/pause"),
            busybox_rootfs: dir.join("rootfs/busybox"),
            spec: Value::Null,
        };
        for (layer, rootfs) in [
            (pause, &floor.pause_rootfs),
            (busybox, &floor.busybox_rootfs),
        ] {
            std::fs::create_dir_all(rootfs).map_err(|e| e.to_string())?;
            tar::Archive::new(layer.tar.as_slice())
                .unpack(rootfs)
                .map_err(|e| format!("unpacking into {}: {e}", rootfs.display()))?;
        }
        let spec_dir = dir.join("spec");
        std::fs::create_dir_all(&spec_dir).map_err(|e| e.to_string())?;
        run(Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&spec_dir))?;
        let spec = std::fs::read(spec_dir.join("config.json")).map_err(|e| e.to_string())?;
        floor.spec = serde_json::from_slice(&spec).map_err(|e| format!("runc spec: {e}"))?;
        Ok(floor)
    }

    /// One pod with one container, run, exec'd into `execs` times, torn down.
    /// Blocking: runs processes and waits for them.
    pub fn cycle(&self, i: usize, execs: usize) -> Result<Cycle> {
        let t = Instant::now();
        let (pod, times) = self.pod_up(&format!("floor-pod-{i}"))?;
        let mut cycle = Cycle {
            pod: t.elapsed(),
            netns: times.netns,
            cni_add: times.cni_add,
            runc_pause: times.runc_pause,
            ..Default::default()
        };
        let ctr = format!("floor-ctr-{i}");
        let t = Instant::now();
        let pid = self.create_container(&ctr, &pod)?;
        cycle.create = t.elapsed();
        let t = Instant::now();
        run(self.runc().args(["start", &ctr]))?;
        cycle.start = t.elapsed();

        for _ in 0..execs {
            let t = Instant::now();
            run(self.runc().args(["exec", &ctr, "true"]))?;
            cycle.exec.push(t.elapsed());
        }

        let t = Instant::now();
        self.remove_container(&ctr, pid)?;
        cycle.stop_remove = t.elapsed();

        let t = Instant::now();
        self.pod_down(pod)?;
        cycle.pod_teardown = t.elapsed();
        Ok(cycle)
    }

    /// A pinned namespace, then CNI ADD beside the pause's create and start.
    fn pod_up(&self, id: &str) -> Result<(Pod, PodTimes)> {
        let t = Instant::now();
        let netns = berth_netns::create(&self.netns_dir, id).map_err(|e| e.to_string())?;
        let netns_time = t.elapsed();
        let dir = self.dir.join("pods").join(id);
        let (added, pause) = std::thread::scope(|s| {
            let added = s.spawn(|| timed(|| cni::add(&self.net, id, netns.path())));
            let pause = s.spawn(|| {
                timed(|| {
                    pod_files(&dir, id)?;
                    let pid = self.create(id, &self.pause_spec(&netns))?;
                    run(self.runc().args(["start", id]))?;
                    Ok(pid)
                })
            });
            (join(added), join(pause))
        });
        let failed = added.as_ref().err().or(pause.as_ref().err()).cloned();
        if let Some(e) = failed {
            if let Ok((result, _)) = &added {
                let _ = cni::del(&self.net, id, netns.path(), result);
            }
            if pause.is_ok() {
                let _ = self.runc().args(["delete", "--force", id]).output();
            }
            let _ = nix::mount::umount2(&dir.join("shm"), nix::mount::MntFlags::MNT_DETACH);
            let _ = netns.remove();
            return Err(e);
        }
        let ((result, cni_add), (pause_pid, runc_pause)) = (added?, pause?);
        let pod = Pod {
            id: id.to_string(),
            dir,
            netns,
            result,
            pause_pid,
            containers: Vec::new(),
        };
        let times = PodTimes {
            netns: netns_time,
            cni_add,
            runc_pause,
        };
        Ok((pod, times))
    }

    /// A sleeping busybox container in `pod`, created and started.
    fn container_up(&self, pod: &mut Pod, name: &str) -> Result<()> {
        let id = format!("{}-{name}", pod.id);
        let pid = self.create_container(&id, pod)?;
        run(self.runc().args(["start", &id]))?;
        pod.containers.push((id, pid));
        Ok(())
    }

    /// The container's overlay (a fresh upper layer on the busybox rootfs),
    /// then its bundle and `runc create`; returns the pid.
    fn create_container(&self, id: &str, pod: &Pod) -> Result<i32> {
        let bundle = self.dir.join("bundles").join(id);
        for d in ["rootfs", "upper", "work"] {
            std::fs::create_dir_all(bundle.join(d)).map_err(|e| e.to_string())?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.busybox_rootfs.display(),
            bundle.join("upper").display(),
            bundle.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &bundle.join("rootfs"),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| format!("overlay for {id}: {e}"))?;
        self.create(id, &self.container_spec(pod)).inspect_err(|_| {
            let _ = nix::mount::umount2(&bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
        })
    }

    /// The pod's containers stopped together, then the pause killed and deleted
    /// beside CNI DEL, then the namespace unpinned.
    fn pod_down(&self, pod: Pod) -> Result<()> {
        std::thread::scope(|s| {
            let stops: Vec<_> = pod
                .containers
                .iter()
                .map(|(id, pid)| s.spawn(move || self.remove_container(id, *pid)))
                .collect();
            stops.into_iter().try_for_each(join)
        })?;
        let (killed, deleted) = std::thread::scope(|s| {
            let kill = s.spawn(|| self.stop(&pod.id, pod.pause_pid, "KILL"));
            let del = s.spawn(|| cni::del(&self.net, &pod.id, pod.netns.path(), &pod.result));
            (join(kill), join(del))
        });
        killed?;
        deleted?;
        nix::mount::umount2(&pod.dir.join("shm"), nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| format!("unmounting {}/shm: {e}", pod.dir.display()))?;
        pod.netns.remove().map_err(|e| e.to_string())
    }

    /// Stop (SIGTERM), delete, and the overlay unmounted.
    fn remove_container(&self, id: &str, pid: i32) -> Result<()> {
        self.stop(id, pid, "TERM")?;
        let rootfs = self.dir.join("bundles").join(id).join("rootfs");
        nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| format!("unmounting {}: {e}", rootfs.display()))
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(&self.runc_root);
        cmd
    }

    /// Writes the bundle and runs `runc create`; returns the container's pid.
    fn create(&self, id: &str, spec: &Value) -> Result<i32> {
        let bundle = self.dir.join("bundles").join(id);
        std::fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
        let config = serde_json::to_vec(spec).map_err(|e| e.to_string())?;
        std::fs::write(bundle.join("config.json"), config).map_err(|e| e.to_string())?;
        let pid_file = bundle.join("pid");
        // The container inherits runc create's stdout and stderr: a file, not a
        // pipe that would stay open as long as the container runs.
        let output = bundle.join("create.out");
        let file = std::fs::File::create(&output).map_err(|e| e.to_string())?;
        let status = self
            .runc()
            .arg("create")
            .arg("--bundle")
            .arg(&bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .status()
            .map_err(|e| format!("runc create: {e}"))?;
        if !status.success() {
            let out = std::fs::read_to_string(&output).unwrap_or_default();
            return Err(format!("runc create {id}: {status}: {}", out.trim()));
        }
        std::fs::read_to_string(&pid_file)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", pid_file.display()))
    }

    /// `runc kill`, the exit awaited, `runc delete`.
    fn stop(&self, id: &str, pid: i32, signal: &str) -> Result<()> {
        run(self.runc().args(["kill", id, signal]))?;
        wait_exit(pid, Duration::from_secs(10))?;
        run(self.runc().args(["delete", id]))
    }

    fn base_spec(&self, rootfs: &Path, args: &[&str], env: &str) -> Value {
        let mut spec = self.spec.clone();
        spec["process"]["terminal"] = json!(false);
        spec["process"]["args"] = json!(args);
        spec["process"]["env"] = json!([env]);
        spec["root"] = json!({"path": rootfs, "readonly": true});
        spec
    }

    fn pause_spec(&self, netns: &NetNs) -> Value {
        let mut spec = self.base_spec(&self.pause_rootfs, &["/pause"], "PATH=/");
        spec["linux"]["namespaces"] = json!([
            {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
            {"type": "network", "path": netns.path()},
        ]);
        spec
    }

    /// The container's spec: the busybox overlay, runc's default mounts but
    /// /dev/shm, the pod's files and shm bound in, the pod's namespaces joined
    /// (PID too, as CRI's default namespace mode has it).
    fn container_spec(&self, pod: &Pod) -> Value {
        let mut spec = self.base_spec(Path::new("rootfs"), &["sh", "-c", SLEEPER], "PATH=/bin");
        spec["root"]["readonly"] = json!(false);
        if let Some(spec) = spec.as_object_mut() {
            spec.remove("hostname");
        }
        let mut mounts: Vec<Value> = spec["mounts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m["destination"] != "/dev/shm")
            .collect();
        for (file, destination) in [
            ("hostname", "/etc/hostname"),
            ("hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
            ("shm", "/dev/shm"),
        ] {
            mounts.push(json!({
                "destination": destination,
                "type": "bind",
                "source": pod.dir.join(file),
                "options": ["rbind", "rprivate", "rw"],
            }));
        }
        spec["mounts"] = json!(mounts);
        let ns = |kind: &str| format!("/proc/{}/ns/{kind}", pod.pause_pid);
        spec["linux"]["namespaces"] = json!([
            {"type": "mount"},
            {"type": "network", "path": pod.netns.path()},
            {"type": "uts", "path": ns("uts")},
            {"type": "ipc", "path": ns("ipc")},
            {"type": "pid", "path": ns("pid")},
        ]);
        spec
    }

    /// What a failed run may have left: pod networks (their masquerade rules
    /// outlive the namespace), runc containers, mounts, the bridge.
    pub fn sweep(&self) {
        for pod in procfs::entries(&self.netns_dir) {
            let _ = cni::del(&self.net, &pod, &self.netns_dir.join(&pod), &Value::Null);
        }
        for id in procfs::entries(&self.runc_root) {
            let _ = self
                .runc()
                .args(["delete", "--force", &id])
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

impl Drop for Floor {
    fn drop(&mut self) {
        self.sweep();
    }
}

/// The pod's hostname, hosts and resolv.conf, and a tmpfs for its /dev/shm.
fn pod_files(dir: &Path, hostname: &str) -> Result<()> {
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm).map_err(|e| format!("{}: {e}", shm.display()))?;
    let hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string();
    for (name, content) in [
        ("hostname", format!("{hostname}\n")),
        ("hosts", hosts),
        (
            "resolv.conf",
            "nameserver 10.96.0.10\nsearch bench.svc.cluster.local\n".into(),
        ),
    ] {
        std::fs::write(dir.join(name), content).map_err(|e| format!("{name}: {e}"))?;
    }
    nix::mount::mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(|e| format!("mounting {}: {e}", shm.display()))
}

/// Runs a command to completion, its output discarded unless it fails.
fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let t = Instant::now();
    f().map(|v| (v, t.elapsed()))
}

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err("floor thread panicked".into()))
}

/// Waits for process `pid` (not necessarily our child) to exit, through a pidfd,
/// and reaps it if it is ours (the bench is a child subreaper, see `mod.rs`).
fn wait_exit(pid: i32, timeout: Duration) -> Result<()> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return Ok(()); // already gone
    }
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ready = unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as i32) };
    unsafe { libc::close(fd) };
    if ready != 1 {
        return Err(format!("process {pid} still running after {timeout:?}"));
    }
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    Ok(())
}
