//! The OCI runtime command line (runc, crun, youki: they share it).
//!
//! Every call runs through the [`Reaper`] so the shim, a subreaper reaping all
//! children, still learns each command's exit status. `create` and `exec` hand
//! the runtime the process's stdio as its own, so their errors are read from
//! the runtime's JSON log file instead of stderr.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::error::{Context, Error, Result};
use crate::reaper::Reaper;

/// Which runtime binary to run and where it keeps its state.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    pub binary: String,
    pub root: PathBuf,
    pub systemd_cgroup: bool,
}

/// The stdio a created or executed process starts with.
pub struct ProcessStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// What `create` and `exec` need besides the container id.
pub struct SpawnOpts<'a> {
    pub pid_file: &'a Path,
    pub log_file: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub stdio: ProcessStdio,
}

pub struct Runtime {
    config: RuntimeConfig,
    reaper: Arc<Reaper>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig, reaper: Arc<Reaper>) -> Self {
        Runtime { config, reaper }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    fn command(&self, log_file: Option<&Path>) -> Command {
        let mut cmd = Command::new(&self.config.binary);
        cmd.arg("--root").arg(&self.config.root);
        if let Some(log) = log_file {
            cmd.arg("--log").arg(log).arg("--log-format").arg("json");
        }
        if self.config.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd
    }

    pub fn create(&self, id: &str, bundle: &Path, opts: SpawnOpts) -> Result<()> {
        let mut cmd = self.command(Some(opts.log_file));
        cmd.arg("create").arg("--bundle").arg(bundle);
        self.spawn_process(cmd, "create", id, opts)
    }

    /// Starts a process described by `process_json` in the running container
    /// `id`, detached: the runtime exits once the process runs.
    pub fn exec(&self, id: &str, process_json: &Path, opts: SpawnOpts) -> Result<()> {
        let mut cmd = self.command(Some(opts.log_file));
        cmd.arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(process_json);
        self.spawn_process(cmd, "exec", id, opts)
    }

    fn spawn_process(
        &self,
        mut cmd: Command,
        what: &'static str,
        id: &str,
        opts: SpawnOpts,
    ) -> Result<()> {
        cmd.arg("--pid-file").arg(opts.pid_file);
        if let Some(sock) = opts.console_socket {
            cmd.arg("--console-socket").arg(sock);
        }
        cmd.arg(id)
            .stdin(Stdio::from(opts.stdio.stdin))
            .stdout(Stdio::from(opts.stdio.stdout))
            .stderr(Stdio::from(opts.stdio.stderr));
        let (child, exit) = self
            .reaper
            .spawn(&mut cmd)
            .map_err(|e| self.spawn_error(what, id, e))?;
        // Drop our copies of the stdio so only the process holds them.
        drop(cmd);
        drop(child);
        let status = exit.recv().map(|e| e.status).unwrap_or(255);
        if status != 0 {
            return Err(self.failed(what, id, last_log_error(opts.log_file, status)));
        }
        Ok(())
    }

    pub fn start(&self, id: &str) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("start").arg(id);
        self.run(cmd, "start", id).map(drop)
    }

    pub fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(id).arg(signal.to_string());
        self.run(cmd, "kill", id).map(drop)
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("delete");
        if force {
            cmd.arg("--force");
        }
        cmd.arg(id);
        self.run(cmd, "delete", id).map(drop)
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("pause").arg(id);
        self.run(cmd, "pause", id).map(drop)
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("resume").arg(id);
        self.run(cmd, "resume", id).map(drop)
    }

    /// Applies an OCI `LinuxResources` JSON document.
    pub fn update(&self, id: &str, resources_json: &Path) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("update")
            .arg("--resources")
            .arg(resources_json)
            .arg(id);
        self.run(cmd, "update", id).map(drop)
    }

    /// Pids of every process in the container.
    pub fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let mut cmd = self.command(None);
        cmd.arg("ps").arg("--format").arg("json").arg(id);
        let out = self.run(cmd, "ps", id)?;
        let pids: Option<Vec<u32>> = serde_json::from_slice(&out).unwrap_or_default();
        Ok(pids.unwrap_or_default())
    }

    /// Runs a runtime command to completion, returning its stdout.
    fn run(&self, mut cmd: Command, what: &'static str, id: &str) -> Result<Vec<u8>> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (mut child, exit) = self
            .reaper
            .spawn(&mut cmd)
            .map_err(|e| self.spawn_error(what, id, e))?;
        let mut stdout = Vec::new();
        let mut stderr = String::new();
        // Small outputs: reading stdout then stderr cannot fill both pipes
        // for the commands used here (ps output stays far below a pipe).
        if let Some(mut out) = child.stdout.take() {
            out.read_to_end(&mut stdout)
                .context(|| format!("read {} {what} output", self.config.binary))?;
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        let status = exit.recv().map(|e| e.status).unwrap_or(255);
        if status != 0 {
            let message = if stderr.trim().is_empty() {
                format!("exit status {status}")
            } else {
                stderr.trim().to_string()
            };
            return Err(self.failed(what, id, message));
        }
        Ok(stdout)
    }

    fn spawn_error(&self, what: &'static str, id: &str, e: std::io::Error) -> Error {
        self.failed(what, id, format!("cannot run: {e}"))
    }

    fn failed(&self, command: &'static str, id: &str, message: String) -> Error {
        Error::Runtime {
            binary: self.config.binary.clone(),
            command,
            id: id.to_string(),
            message,
        }
    }
}

/// The last error-level message of a runtime JSON log, the most useful line
/// when `create` or `exec` fails.
fn last_log_error(log_file: &Path, status: u32) -> String {
    #[derive(serde::Deserialize)]
    struct Line {
        level: Option<String>,
        msg: Option<String>,
    }
    let text = std::fs::read_to_string(log_file).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .find(|l| matches!(l.level.as_deref(), Some("error" | "fatal")))
        .and_then(|l| l.msg)
        .unwrap_or_else(|| format!("exit status {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_last_error_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        std::fs::write(
            &log,
            "{\"level\":\"error\",\"msg\":\"first\"}\n{\"level\":\"warning\",\"msg\":\"w\"}\n\
             {\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": not found\"}\n{\"level\":\"info\"}\n",
        )
        .unwrap();
        assert_eq!(last_log_error(&log, 1), "exec: \"nope\": not found");
        assert_eq!(
            last_log_error(&dir.path().join("missing"), 2),
            "exit status 2"
        );
    }
}
