//! The shim's containers and their processes: one table, one lock, and the
//! operations the Task service exposes, in domain types.
//!
//! The lock is never held while the OCI runtime runs. Instead a process is
//! moved to `Creating`/`Starting` first, and exits reaped meanwhile are parked
//! (`Process::pending_exit`, or `Table::unmatched` while the pid is unknown)
//! and applied after the create/start event, so containerd always sees
//! create, start, exit in that order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api::Mount;
use containerd_shim_protos::protobuf::well_known_types::any::Any;

use crate::cgroup::Cgroup;
use crate::console::{Console, ConsoleSocket};
use crate::error::{Context, Error, Result};
use crate::events::Publisher;
use crate::mount;
use crate::oom::OomWatcher;
use crate::options;
use crate::process::{ProcState, Process, ProcessStatus};
use crate::reaper::{Exit, Reaper};
use crate::runtime::{Runtime, SpawnOpts};
use crate::stdio::{self, LogTarget, StdioPaths};

/// How long an exit of an unknown pid is kept for a create/exec that has not
/// yet read its pid file.
const UNMATCHED_TTL: Duration = Duration::from_secs(60);

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    runtime: Arc<Runtime>,
    rootfs_mounted: bool,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    cgroup: Option<Cgroup>,
    paused: bool,
    /// The init exit, held back until the exec processes' exits are out.
    deferred_init_exit: Option<Exit>,
}

impl Container {
    fn process(&self, exec_id: &str) -> Result<&Process> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id} in container {}", self.id)))
    }

    fn process_mut(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        let id = &self.id;
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id} in container {id}")))
    }
}

#[derive(Default)]
struct Table {
    containers: HashMap<String, Container>,
    unmatched: Vec<Exit>,
}

impl Table {
    fn get(&self, id: &str) -> Result<&Container> {
        self.containers
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    fn get_mut(&mut self, id: &str) -> Result<&mut Container> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    fn take_unmatched(&mut self, pid: u32) -> Option<Exit> {
        let i = self.unmatched.iter().position(|e| e.pid == pid as i32)?;
        Some(self.unmatched.swap_remove(i))
    }
}

/// What Create needs.
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<Mount>,
    pub stdio: StdioPaths,
    pub options: Option<Any>,
}

pub struct Tasks {
    table: Mutex<Table>,
    exited: Condvar,
    namespace: String,
    reaper: Arc<Reaper>,
    publisher: Publisher,
    oom: Arc<OomWatcher>,
    /// Told when the last container is gone and Shutdown asked to stop.
    shutdown: Mutex<Option<Sender<()>>>,
}

impl Tasks {
    pub fn new(
        namespace: String,
        reaper: Arc<Reaper>,
        publisher: Publisher,
        oom: Arc<OomWatcher>,
        shutdown: Sender<()>,
    ) -> Self {
        Tasks {
            table: Mutex::new(Table::default()),
            exited: Condvar::new(),
            namespace,
            reaper,
            publisher,
            oom,
            shutdown: Mutex::new(Some(shutdown)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn create(&self, req: CreateRequest) -> Result<u32> {
        let config = options::from_any(req.options.as_ref(), &self.namespace)?;
        let runtime = Arc::new(Runtime::new(config, Arc::clone(&self.reaper)));
        {
            let mut t = self.lock();
            if t.containers.contains_key(&req.id) {
                return Err(Error::AlreadyExists(format!("container {}", req.id)));
            }
            let placeholder = Container {
                id: req.id.clone(),
                bundle: req.bundle.clone(),
                runtime: Arc::clone(&runtime),
                rootfs_mounted: false,
                init: Process::new("", req.stdio.clone()),
                execs: HashMap::new(),
                cgroup: None,
                paused: false,
                deferred_init_exit: None,
            };
            t.containers.insert(req.id.clone(), placeholder);
        }
        match self.create_init(&req, &runtime) {
            Ok((pid, console, io, mounted)) => {
                let cgroup = Cgroup::of_pid(pid);
                if let Some(cg) = &cgroup
                    && let Err(e) = self.oom.watch(&req.id, cg)
                {
                    log::warn!("container {}: no OOM events: {e}", req.id);
                }
                let mut t = self.lock();
                let early = t.take_unmatched(pid);
                let c = t.get_mut(&req.id)?;
                c.rootfs_mounted = mounted;
                c.cgroup = cgroup;
                c.init.pid = pid;
                c.init.console = console;
                c.init.io = io;
                c.init.state = ProcState::Created;
                self.publisher.task_create(
                    &req.id,
                    &req.bundle.to_string_lossy(),
                    containerd_shim_protos::events::task::TaskIO {
                        stdin: req.stdio.stdin.clone(),
                        stdout: req.stdio.stdout.clone(),
                        stderr: req.stdio.stderr.clone(),
                        terminal: req.stdio.terminal,
                        ..Default::default()
                    },
                    pid,
                );
                if let Some(exit) = early {
                    self.apply_exit(&mut t, &req.id, "", exit);
                }
                Ok(pid)
            }
            Err(e) => {
                self.lock().containers.remove(&req.id);
                Err(e)
            }
        }
    }

    /// The runtime side of Create; undoes its mount on failure.
    fn create_init(
        &self,
        req: &CreateRequest,
        runtime: &Runtime,
    ) -> Result<(u32, Option<Console>, stdio::ProcessIo, bool)> {
        options::save(&req.bundle, runtime.config())?;
        let rootfs = req.bundle.join("rootfs");
        mount::mount_rootfs(&req.rootfs, &rootfs)?;
        let mounted = !req.rootfs.is_empty();
        let result = self.spawn(&req.id, &req.bundle, "", &req.stdio, |opts| {
            runtime.create(&req.id, &req.bundle, opts)
        });
        match result {
            Ok((pid, console, io)) => Ok((pid, console, io, mounted)),
            Err(e) => {
                if mounted {
                    let _ = mount::unmount_all(&rootfs);
                }
                Err(e)
            }
        }
    }

    /// Runs `create` or `exec` with the process's stdio or console and
    /// returns its pid with what the shim keeps open for it.
    fn spawn(
        &self,
        id: &str,
        bundle: &Path,
        exec_id: &str,
        paths: &StdioPaths,
        run: impl FnOnce(SpawnOpts) -> Result<()>,
    ) -> Result<(u32, Option<Console>, stdio::ProcessIo)> {
        let tag = if exec_id.is_empty() {
            "init".to_string()
        } else {
            format!("exec-{}", file_safe(exec_id))
        };
        let pid_file = bundle.join(format!("{tag}.pid"));
        let log_file = bundle.join(format!("{tag}.log.json"));
        let _ = std::fs::remove_file(&log_file);
        let target = LogTarget {
            namespace: &self.namespace,
            container_id: id,
        };
        let socket = if paths.terminal {
            Some(ConsoleSocket::new()?)
        } else {
            None
        };
        // A terminal process gets the pty as stdio; the runtime's own stdio
        // is then only for its messages.
        let terminal_paths = StdioPaths::default();
        let (process_stdio, io) = stdio::open(
            if paths.terminal {
                &terminal_paths
            } else {
                paths
            },
            &target,
            &self.reaper,
        )?;
        run(SpawnOpts {
            pid_file: &pid_file,
            log_file: &log_file,
            console_socket: socket.as_ref().map(|s| s.path()),
            stdio: process_stdio,
        })?;
        let pid = read_pid(&pid_file)?;
        let console = match &socket {
            Some(s) => Some(Console::start(
                s.receive_master()?,
                &paths.stdin,
                &paths.stdout,
            )?),
            None => None,
        };
        Ok((pid, console, io))
    }

    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        if !exec_id.is_empty() {
            return self.start_exec(id, exec_id);
        }
        let runtime = {
            let mut t = self.lock();
            let c = t.get_mut(id)?;
            if c.init.state != ProcState::Created {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is not created"
                )));
            }
            c.init.state = ProcState::Starting;
            Arc::clone(&c.runtime)
        };
        let result = runtime.start(id);
        let mut t = self.lock();
        let c = t.get_mut(id)?;
        if let Err(e) = result {
            c.init.state = ProcState::Created;
            if let Some(exit) = c.init.pending_exit.take() {
                self.apply_exit(&mut t, id, "", exit);
            }
            return Err(e);
        }
        c.init.state = ProcState::Running;
        let pid = c.init.pid;
        self.publisher.task_start(id, pid);
        if let Some(exit) = c.init.pending_exit.take() {
            self.apply_exit(&mut t, id, "", exit);
        }
        Ok(pid)
    }

    pub fn add_exec(&self, id: &str, exec_id: &str, stdio: StdioPaths, spec: &[u8]) -> Result<()> {
        let mut t = self.lock();
        let c = t.get_mut(id)?;
        if c.init.exited().is_some() {
            return Err(Error::FailedPrecondition(format!(
                "container {id} has exited"
            )));
        }
        if c.execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {exec_id} in container {id}"
            )));
        }
        let spec_path = c.bundle.join(format!("exec-{}.json", file_safe(exec_id)));
        std::fs::write(&spec_path, spec).context(|| format!("write {}", spec_path.display()))?;
        let mut p = Process::new(exec_id, stdio);
        p.state = ProcState::Created;
        c.execs.insert(exec_id.to_string(), p);
        self.publisher.exec_added(id, exec_id);
        Ok(())
    }

    fn start_exec(&self, id: &str, exec_id: &str) -> Result<u32> {
        let (runtime, bundle, paths) = {
            let mut t = self.lock();
            let c = t.get_mut(id)?;
            if !c.init.is_running() {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is not running"
                )));
            }
            let (runtime, bundle) = (Arc::clone(&c.runtime), c.bundle.clone());
            let p = c.process_mut(exec_id)?;
            if p.state != ProcState::Created {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id} was already started"
                )));
            }
            p.state = ProcState::Starting;
            (runtime, bundle, p.stdio.clone())
        };
        let spec_path = bundle.join(format!("exec-{}.json", file_safe(exec_id)));
        let result = self.spawn(id, &bundle, exec_id, &paths, |opts| {
            runtime.exec(id, &spec_path, opts)
        });
        let _ = std::fs::remove_file(&spec_path);
        let mut t = self.lock();
        let (pid, console, io) = match result {
            Ok(v) => v,
            Err(e) => {
                if let Ok(p) = t.get_mut(id).and_then(|c| c.process_mut(exec_id)) {
                    p.state = ProcState::Exited {
                        status: 255,
                        at: SystemTime::now(),
                    };
                }
                self.exited.notify_all();
                return Err(e);
            }
        };
        let early = t.take_unmatched(pid);
        let p = t.get_mut(id)?.process_mut(exec_id)?;
        p.pid = pid;
        p.console = console;
        p.io = io;
        p.state = ProcState::Running;
        let pending = p.pending_exit.take().or(early);
        self.publisher.exec_started(id, exec_id, pid);
        if let Some(exit) = pending {
            self.apply_exit(&mut t, id, exec_id, exit);
        }
        Ok(pid)
    }

    /// Called with every reaped exit that is not a command the shim ran.
    pub fn handle_exit(&self, exit: Exit) {
        let mut t = self.lock();
        let found = t.containers.values().find_map(|c| {
            if c.init.owns(exit.pid) {
                Some((c.id.clone(), String::new()))
            } else {
                c.execs
                    .values()
                    .find(|p| p.owns(exit.pid))
                    .map(|p| (c.id.clone(), p.exec_id.clone()))
            }
        });
        match found {
            Some((id, exec_id)) => self.apply_exit(&mut t, &id, &exec_id, exit),
            None => {
                let now = SystemTime::now();
                t.unmatched
                    .retain(|e| now.duration_since(e.at).unwrap_or_default() < UNMATCHED_TTL);
                t.unmatched.push(exit);
            }
        }
    }

    fn apply_exit(&self, t: &mut Table, id: &str, exec_id: &str, exit: Exit) {
        let Ok(c) = t.get_mut(id) else { return };
        let Ok(p) = c.process_mut(exec_id) else {
            return;
        };
        if p.state == ProcState::Starting {
            p.pending_exit = Some(exit);
            return;
        }
        p.pid = exit.pid as u32;
        p.set_exited(exit);
        if exec_id.is_empty() {
            let running: Vec<u32> = c
                .execs
                .values()
                .filter(|p| p.is_running())
                .map(|p| p.pid)
                .collect();
            if !running.is_empty() {
                // containerd expects exec exits before the init exit; execs
                // die with the pid namespace, or now if it is shared.
                for pid in running {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::SIGKILL,
                    );
                }
                c.deferred_init_exit = Some(exit);
                return;
            }
            self.publisher
                .task_exit(id, "", exit.pid as u32, exit.status, exit.at);
        } else {
            self.publisher
                .task_exit(id, exec_id, exit.pid as u32, exit.status, exit.at);
            if c.execs.values().all(|p| !p.is_running())
                && let Some(init_exit) = c.deferred_init_exit.take()
            {
                self.publisher.task_exit(
                    id,
                    "",
                    init_exit.pid as u32,
                    init_exit.status,
                    init_exit.at,
                );
            }
        }
        self.exited.notify_all();
    }

    pub fn state(&self, id: &str, exec_id: &str) -> Result<(ProcessStatus, PathBuf)> {
        let t = self.lock();
        let c = t.get(id)?;
        let mut status = ProcessStatus::from(c.process(exec_id)?);
        // A deferred init exit is not visible until it is published.
        if exec_id.is_empty() && c.deferred_init_exit.is_some() {
            status.state = ProcState::Running;
        }
        status.paused = c.paused;
        Ok((status, c.bundle.clone()))
    }

    /// Blocks until the process has exited.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<(u32, SystemTime)> {
        let mut t = self.lock();
        loop {
            let c = t.get(id)?;
            if let Some(done) = c.process(exec_id)?.exited()
                && !(exec_id.is_empty() && c.deferred_init_exit.is_some())
            {
                return Ok(done);
            }
            t = self.exited.wait(t).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let (runtime, pid) = {
            let t = self.lock();
            let c = t.get(id)?;
            let p = c.process(exec_id)?;
            if p.exited().is_some() && !all {
                return Err(Error::NotFound(format!(
                    "process {} of {id}: already finished",
                    p.pid
                )));
            }
            if p.pid == 0 {
                return Err(Error::FailedPrecondition(format!(
                    "process of {id} is not created"
                )));
            }
            (Arc::clone(&c.runtime), p.pid)
        };
        if exec_id.is_empty() {
            return runtime.kill(id, signal, all);
        }
        let sig = nix::sys::signal::Signal::try_from(signal as i32)
            .map_err(|_| Error::InvalidArgument(format!("signal {signal}")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).map_err(|e| match e {
            nix::errno::Errno::ESRCH => {
                Error::NotFound(format!("exec {exec_id} of {id}: already finished"))
            }
            e => Error::io(format!("kill exec {exec_id}"), e),
        })
    }

    pub fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, u32, Option<SystemTime>)> {
        if !exec_id.is_empty() {
            let mut t = self.lock();
            let c = t.get_mut(id)?;
            let p = c.process(exec_id)?;
            if p.is_running() {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id} of {id} is running"
                )));
            }
            let p = c
                .execs
                .remove(exec_id)
                .ok_or_else(|| Error::NotFound(exec_id.to_string()))?;
            self.exited.notify_all();
            let (status, at) = p.exited().map_or((0, None), |(s, a)| (s, Some(a)));
            return Ok((p.pid, status, at));
        }
        let (runtime, bundle, mounted) = {
            let t = self.lock();
            let c = t.get(id)?;
            if c.init.is_running() || c.init.state == ProcState::Creating {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is running"
                )));
            }
            (Arc::clone(&c.runtime), c.bundle.clone(), c.rootfs_mounted)
        };
        if let Err(e) = runtime.delete(id, true) {
            log::warn!("{e}");
        }
        if mounted {
            mount::unmount_all(&bundle.join("rootfs"))?;
        }
        self.oom.forget(id);
        let mut t = self.lock();
        let c = t
            .containers
            .remove(id)
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        let (status, at) = c.init.exited().map_or((0, None), |(s, a)| (s, Some(a)));
        self.publisher.task_delete(id, c.init.pid, status, at);
        self.exited.notify_all();
        Ok((c.init.pid, status, at))
    }

    pub fn pids(&self, id: &str) -> Result<Vec<(u32, Option<String>)>> {
        let (runtime, execs) = {
            let t = self.lock();
            let c = t.get(id)?;
            let execs: HashMap<u32, String> = c
                .execs
                .values()
                .map(|p| (p.pid, p.exec_id.clone()))
                .collect();
            (Arc::clone(&c.runtime), execs)
        };
        let pids = runtime.ps(id)?;
        Ok(pids
            .into_iter()
            .map(|pid| (pid, execs.get(&pid).cloned()))
            .collect())
    }

    pub fn set_paused(&self, id: &str, paused: bool) -> Result<()> {
        let runtime = Arc::clone(&self.lock().get(id)?.runtime);
        if paused {
            runtime.pause(id)?;
        } else {
            runtime.resume(id)?;
        }
        self.lock().get_mut(id)?.paused = paused;
        Ok(())
    }

    pub fn close_io(&self, id: &str, exec_id: &str) -> Result<()> {
        let mut t = self.lock();
        t.get_mut(id)?.process_mut(exec_id)?.close_stdin();
        Ok(())
    }

    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let t = self.lock();
        let p = t.get(id)?.process(exec_id)?;
        match &p.console {
            Some(c) => c.resize(width, height),
            None => Err(Error::FailedPrecondition(format!(
                "process of {id} has no terminal"
            ))),
        }
    }

    /// Applies an OCI LinuxResources JSON document.
    pub fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        let (runtime, bundle) = {
            let t = self.lock();
            let c = t.get(id)?;
            (Arc::clone(&c.runtime), c.bundle.clone())
        };
        let path = bundle.join("resources.json");
        std::fs::write(&path, resources).context(|| format!("write {}", path.display()))?;
        let result = runtime.update(id, &path);
        let _ = std::fs::remove_file(&path);
        result
    }

    pub fn stats(&self, id: &str) -> Result<Any> {
        let t = self.lock();
        let c = t.get(id)?;
        c.cgroup
            .as_ref()
            .map(Cgroup::stats)
            .ok_or_else(|| Error::NotFound(format!("cgroup of container {id}")))
    }

    pub fn init_pid(&self, id: &str) -> u32 {
        self.lock().get(id).map_or(0, |c| c.init.pid)
    }

    /// Shutdown: stop the shim once it serves no container.
    pub fn shutdown(&self) {
        if self.lock().containers.is_empty()
            && let Some(tx) = self
                .shutdown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
        {
            let _ = tx.send(());
        }
    }
}

fn read_pid(path: &Path) -> Result<u32> {
    let text =
        std::fs::read_to_string(path).context(|| format!("read pid file {}", path.display()))?;
    text.trim().parse().map_err(|_| {
        Error::FailedPrecondition(format!("pid file {} holds {text:?}", path.display()))
    })
}

/// Exec ids come from clients; keep them from naming paths outside the bundle.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_ids_cannot_escape_the_bundle() {
        assert_eq!(file_safe("../../etc/passwd"), "______etc_passwd");
        assert_eq!(file_safe("abc-1_2"), "abc-1_2");
    }
}
