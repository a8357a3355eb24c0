//! `--perf`: `perf record` of a daemon while a scenario phase runs, one file per
//! runtime and phase in the output directory, to see where the time goes
//! (`perf report -i <file>`). berthd needs its symbols for that: a build with
//! `CARGO_PROFILE_RELEASE_STRIP=false` (see the README).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::runtimes::Runtime;

/// Where recordings go; `None` when profiling is off.
#[derive(Debug, Clone, Default)]
pub struct Profiler {
    pub out: Option<PathBuf>,
    /// What to record, as `perf record` options (`-F 999 -g`, or tracepoints:
    /// `-e syscalls:sys_enter_fdatasync -e syscalls:sys_exit_fdatasync`).
    pub events: Vec<String>,
}

pub struct Recording {
    child: Child,
}

impl Profiler {
    /// Starts recording `rt`'s daemon, and the processes it starts from now on,
    /// into `perf-<runtime>-<phase>.data`.
    pub fn start(&self, rt: &Runtime, phase: &str) -> Option<Recording> {
        let out: &Path = self.out.as_deref()?;
        let pid = rt.pid()?;
        let file = out.join(format!("perf-{}-{phase}.data", rt.name()));
        let child = Command::new("perf")
            .args(["record", "-q"])
            .args(&self.events)
            .args(["-p", &pid.to_string(), "-o"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("perf record: {e}"))
            .ok()?;
        // perf attaches asynchronously; give it a moment before the phase runs.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Some(Recording { child })
    }
}

impl Recording {
    /// SIGINT (perf then writes its file), and wait.
    pub fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.child.wait();
    }
}
