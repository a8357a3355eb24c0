//! The OCI runtime command line (runc, crun, youki: they share it).
//!
//! Every call runs through the [`Reaper`] so the shim, a subreaper reaping all
//! children, still learns each command's exit status. `create` and `exec` hand
//! the runtime the process's stdio as its own, so their errors are read from
//! the runtime's JSON log file instead of stderr.
//!
//! Every call has a deadline ([`Timeouts`]): a runtime stuck on a hung mount,
//! a frozen cgroup or a hook that never returns is killed, the RPC fails with
//! DeadlineExceeded, and a half-created container is force-deleted, instead
//! of one ttrpc worker (of three) hanging for good. containerd bounds the
//! same calls with the RPC's context; the shim has no cancellation from its
//! client, so each verb gets a fixed bound, at least as long as berthd's own
//! call timeout so that the client's deadline normally fires first.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::memfd::{MFdFlags, memfd_create};

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

/// How long each runtime verb may run before it is killed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub create: Duration,
    pub start: Duration,
    pub exec: Duration,
    pub delete: Duration,
    /// kill, pause, resume, update, ps.
    pub control: Duration,
}

/// create runs the createRuntime/createContainer/prestart hooks (device
/// setup, image or GPU hooks can be slow): kubelet's default
/// runtime-request-timeout, after which kubelet has abandoned the call anyway.
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);
/// start runs the poststart hooks: the same bound as create.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// exec --detach sets up one process (and its console); a probe or
/// `kubectl exec` that waited this long has already failed.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// delete --force kills the processes, waits for the cgroup to empty and runs
/// poststop hooks.
const DELETE_TIMEOUT: Duration = Duration::from_secs(60);
/// kill, pause, resume, update and ps each write a signal or a few cgroup
/// files; even a freezer that retries under load answers well within this.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// Output kept from a runtime command: `ps --format json` of a pod's
/// processes stays far below it (a 4096-pid container prints ~30 KiB).
const OUTPUT_LIMIT: u64 = 1024 * 1024;
/// The end of a failed command's stderr put in the error: runc's reason is
/// its last line, and the reply to berthd must stay small.
const MESSAGE_LIMIT: usize = 4096;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            create: CREATE_TIMEOUT,
            start: START_TIMEOUT,
            exec: EXEC_TIMEOUT,
            delete: DELETE_TIMEOUT,
            control: CONTROL_TIMEOUT,
        }
    }
}

pub struct Runtime {
    config: RuntimeConfig,
    reaper: Arc<Reaper>,
    timeouts: Timeouts,
}

impl Runtime {
    pub fn new(config: RuntimeConfig, reaper: Arc<Reaper>) -> Self {
        Self::with_timeouts(config, reaper, Timeouts::default())
    }

    pub fn with_timeouts(config: RuntimeConfig, reaper: Arc<Reaper>, timeouts: Timeouts) -> Self {
        Runtime {
            config,
            reaper,
            timeouts,
        }
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
        let result = self.spawn_process(cmd, "create", id, opts, self.timeouts.create);
        if let Err(Error::Timeout { .. }) = &result {
            // The killed runtime may have left a created container (and its
            // `runc init`) behind: nobody will ever start or delete it.
            if let Err(e) = self.delete(id, true) {
                log::warn!("cleaning up after {id}'s create timed out: {e}");
            }
        }
        result
    }

    /// Starts a process described by `process_json` in the running container
    /// `id`, detached: the runtime exits once the process runs.
    pub fn exec(&self, id: &str, process_json: &Path, opts: SpawnOpts) -> Result<()> {
        let mut cmd = self.command(Some(opts.log_file));
        cmd.arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(process_json);
        let pid_file = opts.pid_file;
        let result = self.spawn_process(cmd, "exec", id, opts, self.timeouts.exec);
        if let Err(Error::Timeout { .. }) = &result
            && let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
        {
            // The runtime may have started the process before it was killed;
            // the exec is reported failed, so nobody would wait for or signal
            // it: it must not keep running in the container.
            self.reaper.kill_child(pid);
        }
        result
    }

    fn spawn_process(
        &self,
        mut cmd: Command,
        what: &'static str,
        id: &str,
        opts: SpawnOpts,
        limit: Duration,
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
        let status = self
            .reaper
            .wait_for(child.id(), &exit, limit)
            .ok_or_else(|| self.timed_out(what, id, limit))?;
        if status != 0 {
            return Err(self.failed(what, id, last_log_error(opts.log_file, status)));
        }
        Ok(())
    }

    pub fn start(&self, id: &str) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("start").arg(id);
        self.run(cmd, "start", id, self.timeouts.start).map(drop)
    }

    pub fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(id).arg(signal.to_string());
        self.run(cmd, "kill", id, self.timeouts.control).map(drop)
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("delete");
        if force {
            cmd.arg("--force");
        }
        cmd.arg(id);
        self.run(cmd, "delete", id, self.timeouts.delete).map(drop)
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("pause").arg(id);
        self.run(cmd, "pause", id, self.timeouts.control).map(drop)
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("resume").arg(id);
        self.run(cmd, "resume", id, self.timeouts.control).map(drop)
    }

    /// Applies an OCI `LinuxResources` JSON document.
    pub fn update(&self, id: &str, resources_json: &Path) -> Result<()> {
        let mut cmd = self.command(None);
        cmd.arg("update")
            .arg("--resources")
            .arg(resources_json)
            .arg(id);
        self.run(cmd, "update", id, self.timeouts.control).map(drop)
    }

    /// Pids of every process in the container.
    pub fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let mut cmd = self.command(None);
        cmd.arg("ps").arg("--format").arg("json").arg(id);
        let out = self.run(cmd, "ps", id, self.timeouts.control)?;
        let pids: Option<Vec<u32>> = serde_json::from_slice(&out).unwrap_or_default();
        Ok(pids.unwrap_or_default())
    }

    /// Runs a runtime command to completion, returning its stdout.
    ///
    /// Its output goes to memory files, not pipes: a hook the runtime runs may
    /// keep a pipe open after the runtime exits, and reading it to EOF would
    /// outlast any deadline.
    fn run(
        &self,
        mut cmd: Command,
        what: &'static str,
        id: &str,
        limit: Duration,
    ) -> Result<Vec<u8>> {
        let (stdout, stdout_w) = output_file(what)?;
        let (stderr, stderr_w) = output_file(what)?;
        cmd.stdin(Stdio::null()).stdout(stdout_w).stderr(stderr_w);
        let (child, exit) = self
            .reaper
            .spawn(&mut cmd)
            .map_err(|e| self.spawn_error(what, id, e))?;
        drop(cmd);
        let status = self
            .reaper
            .wait_for(child.id(), &exit, limit)
            .ok_or_else(|| self.timed_out(what, id, limit))?;
        let stdout =
            read_output(stdout).context(|| format!("read {} {what} output", self.config.binary))?;
        if status != 0 {
            let stderr = read_output(stderr).unwrap_or_default();
            let tail = stderr.len().saturating_sub(MESSAGE_LIMIT);
            let stderr = String::from_utf8_lossy(&stderr[tail..]);
            let message = if stderr.trim().is_empty() {
                format!("exit status {status}")
            } else {
                stderr.trim().to_string()
            };
            return Err(self.failed(what, id, message));
        }
        Ok(stdout)
    }

    fn timed_out(&self, what: &'static str, id: &str, after: Duration) -> Error {
        Error::Timeout {
            binary: self.config.binary.clone(),
            command: what,
            id: id.to_string(),
            after,
        }
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

/// An anonymous in-memory file for a runtime command's stdout or stderr:
/// the shim's handle to read it back, and the command's.
fn output_file(what: &str) -> Result<(File, Stdio)> {
    let fd = memfd_create(what, MFdFlags::MFD_CLOEXEC)
        .context(|| format!("memfd for runtime {what} output"))?;
    let file = File::from(fd);
    let theirs = file
        .try_clone()
        .context(|| format!("dup runtime {what} output file"))?;
    Ok((file, Stdio::from(theirs)))
}

/// What a command wrote, up to [`OUTPUT_LIMIT`].
fn read_output(mut file: File) -> std::io::Result<Vec<u8>> {
    file.rewind()?;
    let mut out = Vec::new();
    file.take(OUTPUT_LIMIT).read_to_end(&mut out)?;
    Ok(out)
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
    use std::time::Instant;

    use super::*;
    use crate::reaper::testing;

    /// A stand-in runtime: logs its arguments to `calls`, hangs on create
    /// and kill, hangs on exec after starting "the process", prints pids for ps while a "hook" keeps stdout open, and
    /// fails pause with a long stderr.
    const FAKE_RUNTIME: &str = r#"#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
case " $* " in
  *" create "*|*" kill "*) exec sleep 100 ;;
  *" exec "*) sleep 100 & echo $! > "$(dirname "$0")/exec.pid" ; exec sleep 100 ;;
  *" ps "*) (sleep 3 &) ; echo '[11,12]' ;;
  *" pause "*) seq 1 5000 >&2 ; echo 'the reason' >&2 ; exit 1 ;;
esac
"#;

    /// Short deadlines so a hang shows up in well under a second.
    const SHORT: Duration = Duration::from_millis(300);

    fn fake_runtime(dir: &Path, reaper: Arc<Reaper>) -> Runtime {
        use std::os::unix::fs::PermissionsExt;
        let binary = dir.join("runtime");
        std::fs::write(&binary, FAKE_RUNTIME).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = RuntimeConfig {
            binary: binary.display().to_string(),
            root: dir.join("root"),
            systemd_cgroup: false,
        };
        let timeouts = Timeouts {
            create: SHORT,
            start: SHORT,
            exec: SHORT,
            delete: Duration::from_secs(10),
            control: SHORT,
        };
        Runtime::with_timeouts(config, reaper, timeouts)
    }

    fn null_stdio() -> ProcessStdio {
        let null = || {
            OwnedFd::from(
                File::options()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .unwrap(),
            )
        };
        ProcessStdio {
            stdin: null(),
            stdout: null(),
            stderr: null(),
        }
    }

    #[test]
    fn hung_create_is_killed_and_the_container_force_deleted() {
        let d = testing::driven();
        let dir = tempfile::tempdir().unwrap();
        let runtime = fake_runtime(dir.path(), Arc::clone(&d.reaper));
        let opts = SpawnOpts {
            pid_file: &dir.path().join("init.pid"),
            log_file: &dir.path().join("log.json"),
            console_socket: None,
            stdio: null_stdio(),
        };
        let err = runtime.create("c1", dir.path(), opts).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Timeout {
                    command: "create",
                    ..
                }
            ),
            "{err}"
        );
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        assert!(
            calls.lines().any(|l| l.ends_with("delete --force c1")),
            "cleanup after the timeout: {calls}"
        );
    }

    #[test]
    fn hung_exec_is_killed_with_the_process_it_started() {
        let d = testing::driven();
        let _subreaper = testing::Subreaper::become_one();
        let dir = tempfile::tempdir().unwrap();
        let runtime = fake_runtime(dir.path(), Arc::clone(&d.reaper));
        let pid_file = dir.path().join("exec.pid");
        let opts = SpawnOpts {
            pid_file: &pid_file,
            log_file: &dir.path().join("log.json"),
            console_socket: None,
            stdio: null_stdio(),
        };
        let err = runtime
            .exec("c1", &dir.path().join("process.json"), opts)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Timeout {
                    command: "exec",
                    ..
                }
            ),
            "{err}"
        );
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let exit = d
            .others
            .recv_timeout(Duration::from_secs(5))
            .expect("the started process is killed and reaped");
        assert_eq!((exit.pid, exit.status), (pid, 128 + libc::SIGKILL as u32));
        assert!(d.others.try_recv().is_err(), "nothing else was reaped");
    }

    #[test]
    fn hung_control_command_times_out() {
        let d = testing::driven();
        let dir = tempfile::tempdir().unwrap();
        let runtime = fake_runtime(dir.path(), Arc::clone(&d.reaper));
        let err = runtime.kill("c1", 15, false).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Timeout {
                    command: "kill",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn output_is_read_even_when_a_child_keeps_it_open() {
        let d = testing::driven();
        let dir = tempfile::tempdir().unwrap();
        let runtime = fake_runtime(dir.path(), Arc::clone(&d.reaper));
        let started = Instant::now();
        assert_eq!(runtime.ps("c1").unwrap(), [11, 12]);
        // The background sleep holds stdout for 3 s: not waited for.
        assert!(started.elapsed() < Duration::from_secs(2));
        match runtime.pause("c1").unwrap_err() {
            Error::Runtime { message, .. } => {
                assert!(message.len() <= MESSAGE_LIMIT, "bounded message");
                assert!(message.ends_with("the reason"), "{message}");
            }
            e => panic!("{e}"),
        }
    }

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
