//! The physical floors berth cannot beat, done the plainest fast way with the
//! same inputs:
//!
//! - a pod: a pinned network namespace, then at once CNI ADD of the same conflist
//!   (plugins exec'd directly, loopback beside the bridge chain) and
//!   `runc create` + `runc start` of a pause bundle (the static pause, a
//!   read-only rootfs) in that namespace;
//! - a container: `runc create` + `runc start` of a busybox bundle joining the
//!   pod's network, IPC and UTS namespaces; ExecSync: `runc exec`; stop and
//!   remove: `runc kill TERM`, wait for the exit, `runc delete`;
//! - a pod's teardown: the pause killed and deleted beside CNI DEL, then the
//!   namespace unpinned;
//! - a pull (see [`pull`]): the layers downloaded at once, each gunzipped and
//!   untarred as it streams into a directory of its own, with and without a
//!   final syncfs.
//!
//! No content store, no metadata, no verification: what is left is the work of
//! the kernel, runc, the CNI plugins, the network and zlib.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::Result;
use super::client::SLEEPER;
use super::images::Tarball;
use super::network::{CNI_BIN, PodNetwork};
use super::procfs;
use super::registry::Registry;
use crate::network::NetNs;
use crate::network::netns as berth_netns;

/// One pod's life on the floor, as the latency scenario times it for the runtimes.
#[derive(Debug, Clone, Default)]
pub struct Cycle {
    pub pod: Duration,
    pub netns: Duration,
    pub cni_add: Duration,
    pub runc_pause: Duration,
    pub create_start: Duration,
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

    /// One pod with one container, run, exec'd into three times, torn down.
    /// Blocking: runs processes and waits for them.
    pub fn cycle(&self, i: usize, execs: usize) -> Result<Cycle> {
        let pod = format!("floor-pod-{i}");
        let ctr = format!("floor-ctr-{i}");
        let mut cycle = Cycle::default();

        let t = Instant::now();
        let netns = berth_netns::create(&self.netns_dir, &pod).map_err(|e| e.to_string())?;
        cycle.netns = t.elapsed();
        let (cni, pause) = std::thread::scope(|s| {
            let cni = s.spawn(|| timed(|| self.cni_add(&pod, &netns)));
            let pause = s.spawn(|| timed(|| self.runc_run(&pod, &self.pause_spec(&netns))));
            (join(cni), join(pause))
        });
        cycle.pod = t.elapsed();
        let (result, cni_add) = cni?;
        let (pause_pid, runc_pause) = pause?;
        (cycle.cni_add, cycle.runc_pause) = (cni_add, runc_pause);

        let t = Instant::now();
        let pid = self.runc_run(&ctr, &self.container_spec(&netns, pause_pid))?;
        cycle.create_start = t.elapsed();

        for _ in 0..execs {
            let t = Instant::now();
            run(self.runc().args(["exec", &ctr, "true"]))?;
            cycle.exec.push(t.elapsed());
        }

        let t = Instant::now();
        self.stop(&ctr, pid, "TERM")?;
        cycle.stop_remove = t.elapsed();

        let t = Instant::now();
        let (killed, deleted) = std::thread::scope(|s| {
            let kill = s.spawn(|| self.stop(&pod, pause_pid, "KILL"));
            let del = s.spawn(|| self.cni_del(&pod, netns.path(), &result));
            (join(kill), join(del))
        });
        killed?;
        deleted?;
        netns.remove().map_err(|e| e.to_string())?;
        cycle.pod_teardown = t.elapsed();
        Ok(cycle)
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(&self.runc_root);
        cmd
    }

    /// Writes the bundle, then `runc create` and `runc start`; returns the pid.
    fn runc_run(&self, id: &str, spec: &Value) -> Result<i32> {
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
        run(self.runc().args(["start", id]))?;
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

    fn container_spec(&self, netns: &NetNs, pause_pid: i32) -> Value {
        let mut spec = self.base_spec(&self.busybox_rootfs, &["sh", "-c", SLEEPER], "PATH=/bin");
        if let Some(spec) = spec.as_object_mut() {
            spec.remove("hostname");
        }
        spec["linux"]["namespaces"] = json!([
            {"type": "pid"}, {"type": "mount"},
            {"type": "network", "path": netns.path()},
            {"type": "ipc", "path": format!("/proc/{pause_pid}/ns/ipc")},
            {"type": "uts", "path": format!("/proc/{pause_pid}/ns/uts")},
        ]);
        spec
    }

    /// CNI ADD: loopback on `lo` beside the conflist's chain on `eth0`; returns
    /// the chain's result.
    fn cni_add(&self, id: &str, netns: &NetNs) -> Result<Value> {
        let netns = netns.path();
        std::thread::scope(|s| {
            let lo = s.spawn(|| loopback("ADD", id, netns));
            let mut prev = Value::Null;
            let chain = self
                .net
                .conflist()
                .get("plugins")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for plugin in &chain {
                prev = plugin_call("ADD", &self.plugin_conf(plugin, &prev), id, netns, "eth0")?;
            }
            join(lo)?;
            Ok(prev)
        })
    }

    /// CNI DEL of the chain in reverse, beside loopback's.
    fn cni_del(&self, id: &str, netns: &Path, result: &Value) -> Result<()> {
        std::thread::scope(|s| {
            let lo = s.spawn(|| loopback("DEL", id, netns));
            let chain = self.net.conflist()["plugins"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for plugin in chain.iter().rev() {
                plugin_call("DEL", &self.plugin_conf(plugin, result), id, netns, "eth0")?;
            }
            join(lo).map(|_| ())
        })
    }

    /// A plugin's stdin as libcni builds it: name and version from the list, the
    /// previous result, the port-mapping capability (empty, as the kubelet sends).
    fn plugin_conf(&self, plugin: &Value, prev: &Value) -> Value {
        let mut conf = plugin.clone();
        conf["name"] = json!(self.net.name);
        conf["cniVersion"] = json!("1.0.0");
        if !prev.is_null() {
            conf["prevResult"] = prev.clone();
        }
        if plugin["capabilities"]["portMappings"] == json!(true) {
            conf["runtimeConfig"] = json!({"portMappings": []});
        }
        conf
    }

    /// What a failed cycle may have left: runc containers, pod networks (their
    /// masquerade rules outlive the namespace), mounts, the bridge.
    pub fn sweep(&self) {
        for pod in procfs::entries(&self.netns_dir) {
            let _ = self.cni_del(&pod, &self.netns_dir.join(&pod), &Value::Null);
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

fn loopback(command: &str, id: &str, netns: &Path) -> Result<Value> {
    let conf = json!({"cniVersion": "0.3.1", "name": "cni-loopback", "type": "loopback"});
    plugin_call(command, &conf, id, netns, "lo")
}

/// Execs one CNI plugin with `conf` on stdin; returns its parsed stdout (null
/// when empty, as DEL's is).
fn plugin_call(command: &str, conf: &Value, id: &str, netns: &Path, ifname: &str) -> Result<Value> {
    use std::io::Write;
    let kind = conf["type"].as_str().unwrap_or_default();
    let mut child = Command::new(Path::new(CNI_BIN).join(kind))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", CNI_BIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("CNI {kind}: {e}"))?;
    let stdin = serde_json::to_vec(conf).map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(&stdin)
        .map_err(|e| format!("CNI {kind} stdin: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "CNI {command} {kind}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("CNI {kind} result: {e}"))
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

/// The pull floor for `repo:tag`: manifest, config, then every layer at once,
/// each gunzipped and untarred into `dest/<n>` as it streams in; with `sync`, a
/// syncfs at the end. Returns the wall time.
pub async fn pull(
    registry: &Registry,
    repo: &str,
    tag: &str,
    dest: &Path,
    sync: bool,
) -> Result<Duration> {
    let http = registry.http();
    let t = Instant::now();
    let manifest = http
        .get(registry.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("manifest: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("manifest: {e}"))?;
    let manifest: Value =
        serde_json::from_slice(&manifest).map_err(|e| format!("manifest: {e}"))?;
    let blob_url =
        |d: &Value| registry.url(&format!("/v2/{repo}/blobs/{}", d.as_str().unwrap_or("")));
    http.get(blob_url(&manifest["config"]["digest"]))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("config: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("config: {e}"))?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let downloads = layers.iter().enumerate().map(|(n, layer)| {
        let url = blob_url(&layer["digest"]);
        let dir = dest.join(n.to_string());
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
            let unpack = std::thread::spawn(move || unpack_stream(rx, &dir));
            let response = http
                .get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("{url}: {e}"))?;
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| format!("{url}: {e}"))?;
                if tx.send(chunk).await.is_err() {
                    break; // the unpacker failed; its error follows
                }
            }
            drop(tx);
            tokio::task::spawn_blocking(move || unpack.join())
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_else(|_| Err("unpack thread panicked".into()))
        }
    });
    futures::future::try_join_all(downloads).await?;
    if sync {
        let dir = std::fs::File::open(dest).map_err(|e| e.to_string())?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
        tokio::task::spawn_blocking(move || {
            let _keep = dir;
            unsafe { libc::syncfs(fd) }
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(t.elapsed())
}

/// gunzip + untar of a layer arriving in chunks.
fn unpack_stream(rx: tokio::sync::mpsc::Receiver<Bytes>, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let reader = ChunkReader {
        rx,
        chunk: Bytes::new(),
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    archive.set_preserve_permissions(true);
    archive
        .unpack(dir)
        .map_err(|e| format!("untar into {}: {e}", dir.display()))
}

struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}
