//! Reaping: the shim is a subreaper and collects every child that dies.
//!
//! Two kinds of children exist. Commands the shim runs itself (the OCI runtime,
//! logging binaries) are spawned through [`Reaper::spawn`], which registers the
//! pid under the lock the reaping loop holds, so an exit can never be reaped
//! before its waiter exists. Everything else (container and
//! exec processes, reparented to the shim when the runtime exits) goes to the
//! channel handed to [`Reaper::new`], where the task table matches it by pid.
//!
//! Every child's status has exactly one owner. `waitpid(-1)` runs under the
//! same lock as `Command::spawn`, so it can never collect a child that
//! `spawn` is still busy with: when the exec fails, std (fork path) or glibc
//! (posix_spawn path) waits for that child itself, and a status stolen first
//! would make std panic ("wait() should either return Ok") and send a
//! stranger's exit to the task table. The same lock makes [`Reaper::kill`]
//! safe: a pid still registered is alive or an unreaped zombie, never reused.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How long a command killed for overrunning its deadline may take to die
/// before its caller stops waiting: a process stuck in the kernel (a hung
/// mount) acts on SIGKILL only when the call returns.
const KILL_GRACE: Duration = Duration::from_secs(5);

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

    /// Waits up to `limit` for the exit of `pid`, a command from
    /// [`Reaper::spawn`]. Past the deadline the command is killed and `None`
    /// returned once it is collected (or after [`KILL_GRACE`]).
    pub fn wait_for(&self, pid: u32, exit: &Receiver<Exit>, limit: Duration) -> Option<u32> {
        match exit.recv_timeout(limit) {
            Ok(e) => Some(e.status),
            // The reaper never drops a waiter unanswered; keep the old
            // "failed" meaning should it ever happen.
            Err(RecvTimeoutError::Disconnected) => Some(255),
            Err(RecvTimeoutError::Timeout) => {
                self.kill(pid);
                let _ = exit.recv_timeout(KILL_GRACE);
                None
            }
        }
    }

    /// SIGKILLs a command this reaper spawned, unless it was already reaped
    /// (then its pid may belong to someone else by now).
    pub fn kill(&self, pid: u32) {
        let waiters = self.lock();
        let pid = pid as i32;
        if waiters.commands.contains_key(&pid) || waiters.ignored.contains(&pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// SIGKILLs `pid` if it is a child of this process: a container process
    /// a killed runtime left to the subreaper. While the lock is held no
    /// child is reaped, so a pid found to be our child stays ours (alive or
    /// a zombie, never reused) until the signal is sent.
    pub fn kill_child(&self, pid: u32) {
        let _waiters = self.lock();
        if parent_of(pid) == Some(std::process::id()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }

    /// Collects every exited child; called on each SIGCHLD. Holds the lock
    /// throughout, so no `spawn` is in progress meanwhile (module doc).
    pub fn reap(&self) {
        let mut waiters = self.lock();
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
            self.dispatch(&mut waiters, exit);
        }
    }

    fn dispatch(&self, waiters: &mut Waiters, exit: Exit) {
        if let Some(tx) = waiters.commands.remove(&exit.pid) {
            let _ = tx.send(exit);
        } else if !waiters.ignored.remove(&exit.pid) {
            let _ = self.others.send(exit);
        }
    }
}

/// The parent pid of `pid`, from /proc/<pid>/stat (after the command name,
/// which may itself hold spaces and parentheses: fields follow the last ')').
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Reaping in unit tests: `waitpid(-1)` is process-wide, so tests that
    //! reap take turns, and a thread stands in for the SIGCHLD loop.

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::thread::{self, JoinHandle};

    use super::Reaper;

    static EXCLUSIVE: Mutex<()> = Mutex::new(());

    /// A reaper collecting continuously until dropped.
    pub struct Driven {
        pub reaper: Arc<Reaper>,
        pub others: std::sync::mpsc::Receiver<super::Exit>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
        _turn: MutexGuard<'static, ()>,
    }

    pub fn driven() -> Driven {
        let turn = EXCLUSIVE.lock().unwrap_or_else(|p| p.into_inner());
        let (tx, others) = std::sync::mpsc::channel();
        let reaper = Reaper::new(tx);
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&reaper), Arc::clone(&stop));
        // As eager as a SIGCHLD storm: reap again the moment the last pass ends.
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                r.reap();
                thread::yield_now();
            }
        });
        Driven {
            reaper,
            others,
            stop,
            thread: Some(thread),
            _turn: turn,
        }
    }

    /// This test process as a subreaper, like the shim, until dropped (so
    /// orphans of other tests keep going to init). Take it with a `Driven`.
    pub struct Subreaper;

    impl Subreaper {
        pub fn become_one() -> Subreaper {
            set_subreaper(1);
            Subreaper
        }
    }

    impl Drop for Subreaper {
        fn drop(&mut self) {
            set_subreaper(0);
        }
    }

    fn set_subreaper(on: libc::c_ulong) {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, on, 0, 0, 0) },
            0
        );
    }

    impl Drop for Driven {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::time::Instant;

    use super::*;

    /// Spawns that fail to exec, many times, while the reaper reaps as fast
    /// as it can: each failed child must be waited by the spawn that made it
    /// (a stolen one panics inside std or lands in `others`).
    #[test]
    fn failed_execs_are_never_reaped_by_the_reaper() {
        let d = testing::driven();
        for i in 0..300 {
            let mut cmd = Command::new("/nonexistent/berth-test-binary");
            if i % 2 == 0 {
                // pre_exec forces std's fork path and its CLOEXEC error pipe;
                // without it std uses posix_spawn, where glibc waits instead.
                // SAFETY: the closure does nothing.
                unsafe { cmd.pre_exec(|| Ok(())) };
            }
            let err = d.reaper.spawn(&mut cmd).expect_err("exec must fail");
            assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        }
        let stolen: Vec<Exit> = d.others.try_iter().collect();
        assert!(stolen.is_empty(), "exits stolen by the reaper: {stolen:?}");
    }

    #[test]
    fn commands_get_their_own_status() {
        let d = testing::driven();
        let (child, exit) = d
            .reaper
            .spawn(Command::new("/bin/sh").args(["-c", "exit 7"]))
            .unwrap();
        let status = d
            .reaper
            .wait_for(child.id(), &exit, Duration::from_secs(10));
        assert_eq!(status, Some(7));
    }

    #[test]
    fn kill_child_kills_only_children() {
        let d = testing::driven();
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
        let (child, exit) = d.reaper.spawn(Command::new("sleep").arg("100")).unwrap();
        // Not a child of the sleep: left alone (the test process survives).
        d.reaper.kill_child(std::process::id());
        d.reaper.kill_child(child.id());
        let status = d
            .reaper
            .wait_for(child.id(), &exit, Duration::from_secs(10));
        assert_eq!(status, Some(128 + libc::SIGKILL as u32));
    }

    #[test]
    fn overrunning_command_is_killed_and_collected() {
        let d = testing::driven();
        let (child, exit) = d.reaper.spawn(Command::new("sleep").arg("100")).unwrap();
        let started = Instant::now();
        let status = d
            .reaper
            .wait_for(child.id(), &exit, Duration::from_millis(200));
        assert_eq!(status, None, "timed out");
        assert!(started.elapsed() < KILL_GRACE, "not left to run");
        // Dead and collected by the reaper (its waiter is gone), not a zombie.
        assert!(!d.reaper.lock().commands.contains_key(&(child.id() as i32)));
    }
}
