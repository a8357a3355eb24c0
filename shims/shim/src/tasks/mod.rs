//! The shim's containers and their processes: one table, one lock, and the
//! operations the Task service exposes, in domain types.
//!
//! The lock is never held while the OCI runtime runs. Instead a process is
//! moved to `Creating`/`Starting` first, and exits reaped meanwhile are parked
//! (`Process::pending_exit`, or `Table::unmatched` while the pid is unknown)
//! and applied after the create/start event, so containerd always sees
//! create, start, exit in that order.

mod exec;
mod exits;
mod lifecycle;
mod table;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use containerd_shim_protos::api::Mount;
use containerd_shim_protos::protobuf::well_known_types::any::Any;

use crate::cgroup;
use crate::error::{Context, Error, Result};
use crate::events::Publisher;
use crate::oom::OomWatcher;
use crate::process::{ProcState, ProcessStatus};
use crate::reaper::Reaper;
use crate::stdio::StdioPaths;
use table::Table;

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
    /// Stops the shim once Shutdown was asked for and no container is left.
    shutdown: ShutdownLatch,
}

/// Shutdown, once asked for, stays asked: the pod is gone, and a container still
/// in the shim then (one whose create raced the pod's removal) is the last thing
/// the shim waits for, rather than a reason to live on with no task.
struct ShutdownLatch {
    asked: AtomicBool,
    stop: Mutex<Option<Sender<()>>>,
}

impl ShutdownLatch {
    fn new(stop: Sender<()>) -> Self {
        ShutdownLatch {
            asked: AtomicBool::new(false),
            stop: Mutex::new(Some(stop)),
        }
    }

    fn ask(&self) {
        self.asked.store(true, Ordering::SeqCst);
    }

    /// Stops the shim (once) if Shutdown was asked for and it serves no container.
    fn stop_if(&self, no_container: bool) {
        if self.asked.load(Ordering::SeqCst)
            && no_container
            && let Some(tx) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            let _ = tx.send(());
        }
    }
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
            shutdown: ShutdownLatch::new(shutdown),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
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
            return runtime.kill(id, signal, all).map_err(|e| {
                // The process may have exited between the check and the call.
                let exited = self.lock().get(id).is_ok_and(|c| c.init.exited().is_some());
                if exited {
                    Error::NotFound(format!("process of {id}: already finished"))
                } else {
                    e
                }
            });
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
            .map(cgroup::stats)
            .ok_or_else(|| Error::NotFound(format!("cgroup of container {id}")))
    }

    pub fn init_pid(&self, id: &str) -> u32 {
        self.lock().get(id).map_or(0, |c| c.init.pid)
    }

    /// Shutdown: stop the shim once it serves no container, now or, if some are
    /// left, when the last one is deleted, so that a shim never outlives its pod
    /// with no task to serve.
    pub fn shutdown(&self) {
        self.shutdown.ask();
        self.exit_if_done();
    }

    /// Stops the shim if Shutdown was asked for and no container is left.
    fn exit_if_done(&self) {
        let empty = self.lock().containers.is_empty();
        self.shutdown.stop_if(empty);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_waits_for_the_last_container_then_stops_once() {
        let (tx, rx) = std::sync::mpsc::channel();
        let latch = ShutdownLatch::new(tx);
        // Not asked: an empty shim (between a pod's start steps) stays.
        latch.stop_if(true);
        assert!(rx.try_recv().is_err());
        // Asked while a container is left: the shim stays for it...
        latch.ask();
        latch.stop_if(false);
        assert!(rx.try_recv().is_err());
        // ...and stops when it is deleted, without being asked again.
        latch.stop_if(true);
        assert!(rx.try_recv().is_ok());
        latch.stop_if(true);
        assert!(rx.try_recv().is_err());
    }
}
