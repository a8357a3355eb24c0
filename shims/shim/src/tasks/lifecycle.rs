//! The init process's lifecycle: Create (mount, runtime create, stdio or
//! console), Start, and Delete (runtime delete, unmount).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use super::exec::file_safe;
use super::table::Container;
use super::{CreateRequest, Tasks};
use crate::cgroup;
use crate::console::{Console, ConsoleSocket};
use crate::error::{Context, Error, Result};
use crate::mount;
use crate::options;
use crate::process::{ProcState, Process};
use crate::runtime::{Runtime, SpawnOpts};
use crate::stdio::{self, LogTarget, StdioPaths};

impl Tasks {
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
                let cgroup = cgroup::of_pid(pid);
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
    pub(super) fn spawn(
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
        let result = run(SpawnOpts {
            pid_file: &pid_file,
            log_file: &log_file,
            console_socket: socket.as_ref().map(|s| s.path()),
            stdio: process_stdio,
        })
        .and_then(|()| read_pid(&pid_file));
        if !exec_id.is_empty() {
            // Probes exec every few seconds for the container's lifetime;
            // their files must not pile up in the bundle.
            let _ = std::fs::remove_file(&pid_file);
            let _ = std::fs::remove_file(&log_file);
        }
        let pid = result?;
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
        drop(t);
        self.exit_if_done();
        Ok((c.init.pid, status, at))
    }
}

fn read_pid(path: &Path) -> Result<u32> {
    let text =
        std::fs::read_to_string(path).context(|| format!("read pid file {}", path.display()))?;
    text.trim().parse().map_err(|_| {
        Error::FailedPrecondition(format!("pid file {} holds {text:?}", path.display()))
    })
}
