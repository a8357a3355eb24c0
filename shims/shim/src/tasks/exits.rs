//! Matching reaped exits to processes, and publishing them in the order
//! containerd expects.

use std::time::SystemTime;

use super::Tasks;
use super::table::{Table, UNMATCHED_TTL};
use crate::process::ProcState;
use crate::reaper::Exit;

impl Tasks {
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

    pub(super) fn apply_exit(&self, t: &mut Table, id: &str, exec_id: &str, exit: Exit) {
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
}
