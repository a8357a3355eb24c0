//! An in-memory shim for unit tests: tasks with a status, pid and exit, a log of
//! the calls made, and failures on demand. A task killed with SIGTERM or SIGKILL
//! exits at once with 128 + the signal, as a process with no handler does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use oci_spec::runtime::LinuxResources;
use tokio::sync::watch;

use super::task::{Connect, CreateTask, ExecTask, Exit, TaskClient, TaskState, TaskStatus, Tasks};
use crate::error::{Error, Result};

/// The first pid the fake hands out; any nonzero value would do.
const FIRST_PID: u32 = 1000;

type Key = (String, String);

#[derive(Default)]
struct Inner {
    tasks: HashMap<Key, TaskState>,
    calls: Vec<String>,
    /// Method name -> the error its next calls return.
    failures: HashMap<&'static str, fn() -> Error>,
    /// Every call fails Unavailable, as with a shim that is gone.
    gone: bool,
    /// Tasks whose process survives every signal (stuck in the kernel).
    unkillable: std::collections::HashSet<String>,
    next_pid: u32,
}

pub struct FakeTasks {
    inner: Mutex<Inner>,
    /// Bumped on every change, so that waiters look again.
    changed: watch::Sender<u64>,
}

impl FakeTasks {
    pub fn new() -> Arc<FakeTasks> {
        Arc::new(FakeTasks {
            inner: Mutex::new(Inner {
                next_pid: FIRST_PID,
                ..Default::default()
            }),
            changed: watch::channel(0).0,
        })
    }

    /// The same fake, as the services hold a shim.
    pub fn client(self: &Arc<Self>) -> TaskClient {
        self.clone()
    }

    /// Calls made so far, e.g. "start c1", "kill c1 15".
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Calls of method `name` return `error()` from now on.
    pub fn fail(&self, name: &'static str, error: fn() -> Error) {
        self.lock().failures.insert(name, error);
    }

    /// Task `id`'s process survives every signal from now on, as one stuck in an
    /// uninterruptible sleep does.
    pub fn make_unkillable(&self, id: &str) {
        self.lock().unkillable.insert(id.to_string());
    }

    /// The shim goes away: every call fails Unavailable.
    pub fn go_away(&self) {
        self.lock().gone = true;
        self.bump();
    }

    /// Puts a task in place, as a shim that outlived berthd would hold it.
    pub fn set_task(&self, id: &str, state: TaskState) {
        self.lock()
            .tasks
            .insert((id.to_string(), String::new()), state);
        self.bump();
    }

    pub fn task(&self, id: &str) -> Option<TaskState> {
        self.lock()
            .tasks
            .get(&(id.to_string(), String::new()))
            .copied()
    }

    /// The task's process exits with `status`.
    pub fn exit(&self, id: &str, status: u32) {
        if let Some(task) = self.lock().tasks.get_mut(&(id.to_string(), String::new())) {
            finish(task, status);
        }
        self.bump();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Logs the call, then fails it if the shim is gone or the method is set to.
    fn enter(&self, call: String) -> Result<()> {
        let mut inner = self.lock();
        let name = call.split(' ').next().unwrap_or_default().to_string();
        inner.calls.push(call);
        if inner.gone {
            return Err(Error::Unavailable("shim at fake: connection closed".into()));
        }
        match inner.failures.get(name.as_str()) {
            Some(error) => Err(error()),
            None => Ok(()),
        }
    }

    fn with_task<T>(
        &self,
        id: &str,
        exec_id: &str,
        f: impl FnOnce(&mut TaskState) -> Result<T>,
    ) -> Result<T> {
        let out = {
            let mut inner = self.lock();
            let task = inner
                .tasks
                .get_mut(&(id.to_string(), exec_id.to_string()))
                .ok_or_else(|| Error::NotFound(format!("shim: task {id}/{exec_id} not found")))?;
            f(task)
        };
        self.bump();
        out
    }

    fn add(&self, id: &str, exec_id: &str) -> Result<u32> {
        let mut inner = self.lock();
        let key = (id.to_string(), exec_id.to_string());
        if inner.tasks.contains_key(&key) {
            return Err(Error::AlreadyExists(format!("shim: task {id} exists")));
        }
        inner.next_pid += 1;
        let pid = inner.next_pid;
        inner.tasks.insert(
            key,
            TaskState {
                pid,
                status: TaskStatus::Created,
                exit: Exit::default(),
            },
        );
        Ok(pid)
    }
}

/// "c1" for a task, "c1/e1" for one of its exec processes.
fn who(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        id.to_string()
    } else {
        format!("{id}/{exec_id}")
    }
}

fn finish(task: &mut TaskState, status: u32) {
    task.status = TaskStatus::Stopped;
    task.exit = Exit { status, at: 1 };
}

#[async_trait]
impl Tasks for FakeTasks {
    async fn create(&self, request: &CreateTask) -> Result<u32> {
        self.enter(format!("create {}", request.id))?;
        self.add(&request.id, "")
    }

    async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        self.enter(format!("start {}", who(id, exec_id)))?;
        self.with_task(id, exec_id, |t| {
            t.status = TaskStatus::Running;
            Ok(t.pid)
        })
    }

    async fn kill(&self, id: &str, exec_id: &str, signal: u32, _all: bool) -> Result<()> {
        self.enter(format!("kill {} {signal}", who(id, exec_id)))?;
        if exec_id.is_empty() && self.lock().unkillable.contains(id) {
            return Ok(());
        }
        self.with_task(id, exec_id, |t| {
            let deadly = [libc::SIGTERM as u32, libc::SIGKILL as u32].contains(&signal);
            // runc kills a created task's waiting init as well.
            let alive = matches!(t.status, TaskStatus::Created | TaskStatus::Running);
            if alive && deadly {
                finish(t, 128 + signal);
            }
            Ok(())
        })
    }

    async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        self.enter(format!("wait {}", who(id, exec_id)))?;
        let mut changes = self.changed.subscribe();
        loop {
            let state = {
                let inner = self.lock();
                if inner.gone {
                    return Err(Error::Unavailable("shim at fake: connection closed".into()));
                }
                inner
                    .tasks
                    .get(&(id.to_string(), exec_id.to_string()))
                    .copied()
            };
            match state {
                None => return Err(Error::NotFound(format!("shim: task {id} not found"))),
                Some(s) if s.status == TaskStatus::Stopped => return Ok(s.exit),
                Some(_) => {}
            }
            if changes.changed().await.is_err() {
                return Err(Error::Unavailable("shim at fake: dropped".into()));
            }
        }
    }

    async fn state(&self, id: &str, exec_id: &str) -> Result<TaskState> {
        self.enter(format!("state {}", who(id, exec_id)))?;
        self.with_task(id, exec_id, |t| Ok(*t))
    }

    async fn delete(&self, id: &str, exec_id: &str) -> Result<Exit> {
        self.enter(format!("delete {}", who(id, exec_id)))?;
        let exit = self.with_task(id, exec_id, |t| match t.status {
            TaskStatus::Running => Err(Error::FailedPrecondition(format!(
                "shim: task {id} is running"
            ))),
            _ => Ok(t.exit),
        })?;
        self.lock()
            .tasks
            .remove(&(id.to_string(), exec_id.to_string()));
        Ok(exit)
    }

    async fn exec(&self, request: &ExecTask) -> Result<()> {
        self.enter(format!("exec {}", who(&request.id, &request.exec_id)))?;
        self.add(&request.id, &request.exec_id).map(|_| ())
    }

    async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        self.enter(format!("close_stdin {}", who(id, exec_id)))
    }

    async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        self.enter(format!("resize_pty {} {width}x{height}", who(id, exec_id)))
    }

    async fn update(&self, id: &str, _resources: &LinuxResources) -> Result<()> {
        self.enter(format!("update {id}"))
    }

    async fn shutdown(&self, id: &str) -> Result<()> {
        self.enter(format!("shutdown {id}"))
    }
}

/// Fake shims by address: what the sandbox service connects to in tests. An
/// address nobody registered is a shim that is gone.
#[derive(Default)]
pub struct FakeShims {
    shims: Mutex<HashMap<String, Arc<FakeTasks>>>,
}

impl FakeShims {
    /// `shim` answers at `address` from now on.
    pub fn serve(&self, address: &str, shim: &Arc<FakeTasks>) {
        self.shims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address.to_string(), shim.clone());
    }
}

#[async_trait]
impl Connect for FakeShims {
    async fn connect(&self, address: &str) -> Result<TaskClient> {
        let shims = self.shims.lock().unwrap_or_else(|e| e.into_inner());
        match shims.get(address) {
            Some(shim) => Ok(shim.client()),
            None => Err(Error::Unavailable(format!(
                "connecting to shim at {address}: no such shim"
            ))),
        }
    }
}
