//! Exec processes: registered by Exec, run by Start with an exec id.

use std::sync::Arc;
use std::time::SystemTime;

use super::Tasks;
use crate::error::{Context, Error, Result};
use crate::process::{ProcState, Process};
use crate::stdio::StdioPaths;

impl Tasks {
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

    pub(super) fn start_exec(&self, id: &str, exec_id: &str) -> Result<u32> {
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
}

/// Exec ids come from clients; keep them from naming paths outside the bundle.
pub(super) fn file_safe(s: &str) -> String {
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
