//! Reaping: the shim is a subreaper and collects every child that dies.
//!
//! Two kinds of children exist. Commands the shim runs itself (the OCI runtime,
//! logging binaries) are spawned through [`Reaper::spawn`], which registers the
//! pid under the same lock the reaping loop takes before dispatching, so an exit
//! can never be reaped before its waiter exists. Everything else (container and
//! exec processes, reparented to the shim when the runtime exits) goes to the
//! channel handed to [`Reaper::new`], where the task table matches it by pid.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// A reaped child: its pid, shell-style exit status (128+signal when killed)
/// and when it was reaped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exit {
    pub pid: i32,
    pub status: u32,
    pub at: SystemTime,
}

#[derive(Default)]
struct Waiters {
    commands: HashMap<i32, Sender<Exit>>,
    ignored: HashSet<i32>,
}

pub struct Reaper {
    waiters: Mutex<Waiters>,
    others: Sender<Exit>,
}

impl Reaper {
    pub fn new(others: Sender<Exit>) -> Arc<Reaper> {
        Arc::new(Reaper {
            waiters: Mutex::new(Waiters::default()),
            others,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        // A panic elsewhere must not stop reaping: keep using the data.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns `cmd` and returns the child with a receiver for its exit.
    /// Never call `Child::wait` on it: the reaper collects the status.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(Child, Receiver<Exit>)> {
        let mut waiters = self.lock();
        let child = cmd.spawn()?;
        let (tx, rx) = mpsc::channel();
        waiters.commands.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Spawns a helper whose exit nobody needs (a logging binary).
    pub fn spawn_unwatched(&self, cmd: &mut Command) -> std::io::Result<Child> {
        let mut waiters = self.lock();
        let child = cmd.spawn()?;
        waiters.ignored.insert(child.id() as i32);
        Ok(child)
    }

    /// Collects every exited child; called on each SIGCHLD.
    pub fn reap(&self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    return;
                }
                Ok(s) => s,
            };
            let (pid, code) = match status {
                WaitStatus::Exited(pid, code) => (pid, code as u32),
                WaitStatus::Signaled(pid, sig, _) => (pid, 128 + sig as u32),
                _ => continue,
            };
            let exit = Exit {
                pid: pid.as_raw(),
                status: code,
                at: SystemTime::now(),
            };
            self.dispatch(exit);
        }
    }

    fn dispatch(&self, exit: Exit) {
        let mut waiters = self.lock();
        if let Some(tx) = waiters.commands.remove(&exit.pid) {
            let _ = tx.send(exit);
        } else if !waiters.ignored.remove(&exit.pid) {
            drop(waiters);
            let _ = self.others.send(exit);
        }
    }
}
