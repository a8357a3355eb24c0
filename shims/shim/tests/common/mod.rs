//! Test harness: a busybox rootfs, OCI bundles with an overlay rootfs, fifos,
//! an events sink standing in for containerd, and the shim started exactly as
//! containerd starts it. Needs root, runc and busybox; tests skip otherwise.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{
    CreateTaskRequest, DeleteRequest, DeleteResponse, KillRequest, Mount, StartRequest,
    StateRequest, StateResponse, WaitRequest,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::ttrpc::{self, Server, TtrpcContext};
use containerd_shim_protos::{Events, TaskClient, create_events};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The shim under test; BERTH_SHIM_BINARY picks another build (e.g. release,
/// for the memory measurement).
pub fn shim_binary() -> String {
    std::env::var("BERTH_SHIM_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_containerd-shim-berth-v2").to_string())
}
pub const NAMESPACE: &str = "berth-test";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "sleep", "seq", "tail", "head", "stty", "tty", "true", "false", "wc",
    "ls", "ps", "kill",
];

/// A topic and the event's type URL, as containerd would receive them.
pub type Received = (String, String, Vec<u8>);

struct Sink(Arc<Mutex<Vec<Received>>>);

impl Events for Sink {
    fn forward(&self, _: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let env = req.envelope.into_option().unwrap_or_default();
        let ev = env.event.into_option().unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .push((env.topic, ev.type_url, ev.value));
        Ok(Empty::new())
    }
}

pub struct Env {
    pub dir: TempDir,
    pub events: Arc<Mutex<Vec<Received>>>,
    _events_server: Server,
    pub ttrpc_address: String,
    lower: PathBuf,
    spec: Value,
}

/// What the shim's tests run: the runtime, and the busybox the containers hold.
const PREREQUISITES: [&str; 2] = ["/usr/sbin/runc", BUSYBOX];

impl Env {
    /// None (after saying why) when this machine cannot run containers; under
    /// CI that is a failure instead, as for the integration tests.
    pub fn new() -> Option<Env> {
        if !berth_testkit::prerequisites_met_for(PREREQUISITES) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-shim-")
            .tempdir_in("/tmp")
            .unwrap();
        let lower = dir.path().join("lower");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        std::fs::copy(BUSYBOX, lower.join("bin/busybox")).unwrap();
        for a in APPLETS {
            symlink("busybox", lower.join("bin").join(a)).unwrap();
        }
        let spec_dir = dir.path().join("spec");
        std::fs::create_dir_all(&spec_dir).unwrap();
        let ok = Command::new("runc")
            .arg("spec")
            .current_dir(&spec_dir)
            .status()
            .unwrap();
        assert!(ok.success(), "runc spec");
        let spec: Value =
            serde_json::from_slice(&std::fs::read(spec_dir.join("config.json")).unwrap()).unwrap();

        let events = Arc::new(Mutex::new(Vec::new()));
        let ttrpc_address = dir
            .path()
            .join("containerd.sock.ttrpc")
            .display()
            .to_string();
        let mut server = Server::new()
            .bind(&format!("unix://{ttrpc_address}"))
            .unwrap()
            .register_service(create_events(Arc::new(Sink(Arc::clone(&events)))));
        server.start().unwrap();
        Some(Env {
            dir,
            events,
            _events_server: server,
            ttrpc_address,
            lower,
            spec,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// This test's own parent cgroup: tests run in parallel, and one removing a
    /// shared parent could race another's runc creating a child in it.
    pub fn cgroup_parent(&self) -> String {
        let dir = self
            .path()
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        format!("berth-shim-test-{dir}")
    }

    pub fn runc_root(&self) -> PathBuf {
        self.path().join("runc")
    }

    /// A bundle running `args`; `edit` adjusts the OCI spec.
    pub fn bundle(&self, id: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> Bundle {
        let path = self.path().join("bundles").join(id);
        let upper = self.path().join("layers").join(id);
        for d in [path.join("rootfs"), upper.join("fs"), upper.join("work")] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut spec = self.spec.clone();
        spec["process"]["args"] = json!(args);
        spec["process"]["terminal"] = json!(false);
        spec["root"] = json!({"path": "rootfs", "readonly": false});
        spec["hostname"] = json!(id);
        spec["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", self.cgroup_parent()));
        edit(&mut spec);
        std::fs::write(
            path.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        // containerd creates a `log` fifo in the bundle and copies the shim's
        // log from it; keep a copy beside it for assertion messages.
        let log = mkfifo(&path.join("log"));
        let copy = path.join("shim.log");
        thread::spawn(move || {
            if let (Ok(mut from), Ok(mut to)) =
                (std::fs::File::open(&log), std::fs::File::create(&copy))
            {
                let _ = std::io::copy(&mut from, &mut to);
            }
        });
        let mount = Mount {
            type_: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={}", self.lower.display()),
                format!("upperdir={}", upper.join("fs").display()),
                format!("workdir={}", upper.join("work").display()),
            ],
            ..Default::default()
        };
        Bundle {
            id: id.to_string(),
            path,
            mounts: vec![mount],
        }
    }

    /// Runs `shim start` as containerd does: bundle as cwd, TTRPC_ADDRESS set.
    pub fn start_shim(&self, bundle: &Bundle) -> String {
        start_with(self.shim_command(bundle, "start"))
    }

    /// Starts the shim the way containerd 1.6 does without TTRPC_ADDRESS:
    /// events go through the publish binary.
    pub fn start_shim_publishing_through(&self, bundle: &Bundle, binary: &Path) -> String {
        let mut cmd = Command::new(shim_binary());
        cmd.args(["-namespace", NAMESPACE, "-address"])
            .arg(self.path().join("containerd.sock"))
            .arg("-publish-binary")
            .arg(binary)
            .args(["-id", &bundle.id, "start"])
            .current_dir(&bundle.path)
            .env_remove("TTRPC_ADDRESS")
            .env("BERTH_SHIM_SOCKET_DIR", self.path().join("s"));
        start_with(cmd)
    }
}

fn start_with(mut cmd: Command) -> String {
    {
        let out = cmd.stdin(Stdio::null()).output().expect("run shim start");
        assert!(
            out.status.success(),
            "shim start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let address = String::from_utf8(out.stdout).unwrap();
        assert!(address.starts_with("unix://"), "address {address:?}");
        address
    }
}

impl Env {
    pub fn shim_command(&self, bundle: &Bundle, action: &str) -> Command {
        let mut cmd = Command::new(shim_binary());
        cmd.args(["-namespace", NAMESPACE, "-address"])
            .arg(self.path().join("containerd.sock"))
            .args([
                "-debug",
                "-publish-binary",
                "/nonexistent/containerd",
                "-id",
                &bundle.id,
                action,
            ])
            .current_dir(&bundle.path)
            .env("TTRPC_ADDRESS", &self.ttrpc_address)
            .env("BERTH_SHIM_SOCKET_DIR", self.path().join("s"));
        cmd
    }

    pub fn options(&self) -> Any {
        let opts = Options {
            binary_name: "runc".into(),
            root: self.runc_root().display().to_string(),
            ..Default::default()
        };
        Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: opts.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    pub fn create_request(&self, bundle: &Bundle, stdio: &Stdio3) -> CreateTaskRequest {
        CreateTaskRequest {
            id: bundle.id.clone(),
            bundle: bundle.path.display().to_string(),
            rootfs: bundle.mounts.clone(),
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            terminal: stdio.terminal,
            options: Some(self.options()).into(),
            ..Default::default()
        }
    }

    /// Topics received for `id` so far (events carry the id in field 1).
    pub fn topics(&self) -> Vec<String> {
        topics_of(&self.events)
    }

    /// Waits until `topic` has been received `n` times.
    pub fn wait_topic(&self, topic: &str, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.topics().iter().filter(|t| *t == topic).count() >= n {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

pub struct Bundle {
    pub id: String,
    pub path: PathBuf,
    pub mounts: Vec<Mount>,
}

impl Bundle {
    /// What the shim logged so far (for assertion messages).
    pub fn shim_log(&self) -> String {
        std::fs::read_to_string(self.path.join("shim.log")).unwrap_or_default()
    }

    pub fn rootfs_mounted(&self) -> bool {
        let rootfs = self.path.join("rootfs");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(rootfs.to_str().unwrap()))
    }
}

/// Stdio paths for a process, fifos created in `dir`.
#[derive(Default, Clone)]
pub struct Stdio3 {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

pub fn mkfifo(path: &Path) -> String {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    path.display().to_string()
}

impl Stdio3 {
    pub fn fifos(dir: &Path, name: &str, stdin: bool) -> Stdio3 {
        std::fs::create_dir_all(dir).unwrap();
        Stdio3 {
            stdin: if stdin {
                mkfifo(&dir.join(format!("{name}-stdin")))
            } else {
                String::new()
            },
            stdout: mkfifo(&dir.join(format!("{name}-stdout"))),
            stderr: mkfifo(&dir.join(format!("{name}-stderr"))),
            terminal: false,
        }
    }
}

/// Reads a fifo to EOF on a thread, as containerd's copier does (the open
/// blocks until the shim opens the write side). `delay` simulates a slow reader.
pub fn read_fifo(path: &str, delay: Duration) -> JoinHandle<String> {
    let path = path.to_string();
    thread::spawn(move || {
        let mut f = OpenOptions::new().read(true).open(&path).unwrap();
        thread::sleep(delay);
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if !delay.is_zero() {
                        thread::sleep(Duration::from_micros(50));
                    }
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// Writes `data` into a fifo once the shim opens its read side, then closes.
pub fn write_fifo(path: &str, data: &'static [u8]) -> JoinHandle<()> {
    let path = path.to_string();
    thread::spawn(move || {
        let mut f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all(data).unwrap();
    })
}

pub fn connect(address: &str) -> TaskClient {
    TaskClient::new(ttrpc::Client::connect(address).expect("connect to shim"))
}

pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(30_000_000_000)
}

pub fn start(client: &TaskClient, id: &str, exec_id: &str) -> u32 {
    let req = StartRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    client.start(ctx(), &req).expect("start").pid
}

pub fn wait(client: &TaskClient, id: &str, exec_id: &str) -> u32 {
    let req = WaitRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    client.wait(ctx(), &req).expect("wait").exit_status
}

pub fn kill(client: &TaskClient, id: &str, exec_id: &str, signal: u32) -> ttrpc::Result<Empty> {
    let req = KillRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        signal,
        ..Default::default()
    };
    client.kill(ctx(), &req)
}

pub fn state(client: &TaskClient, id: &str, exec_id: &str) -> StateResponse {
    let req = StateRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    client.state(ctx(), &req).expect("state")
}

pub fn delete(client: &TaskClient, id: &str, exec_id: &str) -> ttrpc::Result<DeleteResponse> {
    let req = DeleteRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    client.delete(ctx(), &req)
}

/// The exit status the runtime reports in its state for `id`, if it knows it.
pub fn runc_knows(env: &Env, id: &str) -> bool {
    Command::new("runc")
        .arg("--root")
        .arg(env.runc_root().join(NAMESPACE))
        .args(["state", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Private memory of a process in KiB, from smaps_rollup.
pub fn private_kib(pid: u32) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kib = v.trim().trim_end_matches(" kB").trim().parse().ok()?;
            Some((k.to_string(), kib))
        })
        .collect()
}

/// Leaves nothing running or mounted, whether the test passed or not.
impl Drop for Env {
    fn drop(&mut self) {
        let root = self.runc_root().join(NAMESPACE);
        let ids = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", id])
                .status();
        }
        let bundles = self.path().join("bundles");
        for entry in std::fs::read_dir(&bundles).into_iter().flatten().flatten() {
            let pid = std::fs::read_to_string(entry.path().join("shim.pid"));
            if let Some(pid) = pid.ok().and_then(|p| p.trim().parse::<i32>().ok()) {
                // Only if that pid is still this test's shim, not a reused pid.
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let env_dir = self.path().display().to_string();
                let ours = String::from_utf8_lossy(&cmdline).contains(&env_dir);
                if ours {
                    // SAFETY: kill(2) on a shim this test started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let _ = nix::mount::umount2(
                &entry.path().join("rootfs"),
                nix::mount::MntFlags::MNT_DETACH,
            );
        }
        // This test's parent cgroup goes with it.
        for controller in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(controller.path().join(self.cgroup_parent()));
        }
    }
}

/// A standalone events endpoint, started when a test decides containerd is up.
pub struct EventSink {
    _server: Server,
    events: Arc<Mutex<Vec<Received>>>,
}

impl EventSink {
    pub fn serve(path: &Path) -> EventSink {
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut server = Server::new()
            .bind(&format!("unix://{}", path.display()))
            .unwrap()
            .register_service(create_events(Arc::new(Sink(Arc::clone(&events)))));
        server.start().unwrap();
        EventSink {
            _server: server,
            events,
        }
    }

    pub fn topics(&self) -> Vec<String> {
        topics_of(&self.events)
    }
}

/// The topics of the events received so far, in order.
fn topics_of(events: &Mutex<Vec<Received>>) -> Vec<String> {
    events
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _, _)| t.clone())
        .collect()
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}
