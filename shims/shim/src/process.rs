//! One process of a container (its init, or an exec) and its lifecycle.

use std::time::SystemTime;

use crate::console::Console;
use crate::reaper::Exit;
use crate::stdio::{ProcessIo, StdioPaths};

/// Lifecycle of a process. Legal moves: Created -> Starting -> Running ->
/// Exited, and Created -> Exited when it dies before being started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProcState {
    /// The runtime is still creating it (init only); no pid yet.
    Creating,
    Created,
    /// `start` is running; an exit seen now waits in `pending_exit` so the
    /// start event is published first.
    Starting,
    Running,
    Exited {
        status: u32,
        at: SystemTime,
    },
}

pub struct Process {
    pub exec_id: String,
    pub pid: u32,
    pub stdio: StdioPaths,
    pub state: ProcState,
    pub pending_exit: Option<Exit>,
    pub io: ProcessIo,
    pub console: Option<Console>,
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioPaths) -> Self {
        Process {
            exec_id: exec_id.to_string(),
            pid: 0,
            stdio,
            state: ProcState::Creating,
            pending_exit: None,
            io: ProcessIo::default(),
            console: None,
        }
    }

    pub fn exited(&self) -> Option<(u32, SystemTime)> {
        match self.state {
            ProcState::Exited { status, at } => Some((status, at)),
            _ => None,
        }
    }

    /// Whether a reaped pid belongs to this live process.
    pub fn owns(&self, pid: i32) -> bool {
        self.pid != 0 && self.pid as i32 == pid && self.exited().is_none()
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, ProcState::Running | ProcState::Starting)
    }

    /// Records the exit; stdin is no longer needed by anyone.
    pub fn set_exited(&mut self, exit: Exit) {
        self.state = ProcState::Exited {
            status: exit.status,
            at: exit.at,
        };
        self.io.stdin_keepalive = None;
    }

    pub fn close_stdin(&mut self) {
        self.io.stdin_keepalive = None;
        if let Some(c) = self.console.as_mut() {
            c.close_stdin();
        }
    }
}

/// What State and Delete report about a process.
#[derive(Debug, Clone)]
pub struct ProcessStatus {
    pub pid: u32,
    pub state: ProcState,
    pub paused: bool,
    pub stdio: StdioPaths,
}

impl From<&Process> for ProcessStatus {
    fn from(p: &Process) -> Self {
        ProcessStatus {
            pid: p.pid,
            state: p.state,
            paused: false,
            stdio: p.stdio.clone(),
        }
    }
}
