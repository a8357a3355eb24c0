//! The task table's records: containers, and exits not yet matched to one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::Cgroup;
use crate::error::{Error, Result};
use crate::process::Process;
use crate::reaper::Exit;
use crate::runtime::Runtime;

/// How long an exit of an unknown pid is kept for a create/exec that has not
/// yet read its pid file.
pub(super) const UNMATCHED_TTL: Duration = Duration::from_secs(60);

pub(super) struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: Arc<Runtime>,
    pub rootfs_mounted: bool,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    pub cgroup: Option<Cgroup>,
    pub paused: bool,
    /// The init exit, held back until the exec processes' exits are out.
    pub deferred_init_exit: Option<Exit>,
}

impl Container {
    pub fn process(&self, exec_id: &str) -> Result<&Process> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id} in container {}", self.id)))
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Result<&mut Process> {
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
pub(super) struct Table {
    pub containers: HashMap<String, Container>,
    /// Exits reaped before their create/exec learned the pid.
    pub unmatched: Vec<Exit>,
}

impl Table {
    pub fn get(&self, id: &str) -> Result<&Container> {
        self.containers
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    pub fn get_mut(&mut self, id: &str) -> Result<&mut Container> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    pub fn take_unmatched(&mut self, pid: u32) -> Option<Exit> {
        let i = self.unmatched.iter().position(|e| e.pid == pid as i32)?;
        Some(self.unmatched.swap_remove(i))
    }
}
