//! Opening a process's stdio as containerd describes it.
//!
//! Non-tty output goes straight to the destination: the fifo (or log file, or
//! logging binary's pipe) is the container's own stdout/stderr, so the shim
//! copies nothing, holds no buffers, and a slow reader blocks the writer
//! (back-pressure) instead of losing output. The fifo's reader sees EOF once
//! every process holding it has exited.
//!
//! stdin is a fifo read by the container. A fifo reader sees EOF whenever no
//! writer is open, which would happen before containerd attaches its writer;
//! so the shim holds a writer of its own ([`ProcessIo::stdin_keepalive`]) until
//! CloseIO, after which the container sees EOF as soon as containerd closes.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::pipe2;

/// How long a `binary://` logger may take to say it is ready.
const LOGGER_READY_TIMEOUT_MS: u16 = 10_000;

use crate::error::{Context, Error, Result};
use crate::reaper::Reaper;
use crate::runtime::ProcessStdio;

/// The stdio paths or URIs of one process, as given in Create or Exec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Where output goes, parsed from a stdout/stderr string.
#[derive(Debug, PartialEq)]
enum Output<'a> {
    Null,
    Fifo(&'a str),
    File(&'a str),
    Binary { path: &'a str, args: Vec<String> },
}

fn parse_output(s: &str) -> Result<Output<'_>> {
    if s.is_empty() {
        return Ok(Output::Null);
    }
    if let Some(rest) = s.strip_prefix("fifo://") {
        return Ok(Output::Fifo(rest));
    }
    if let Some(rest) = s.strip_prefix("file://") {
        return Ok(Output::File(rest));
    }
    if let Some(rest) = s.strip_prefix("binary://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        // containerd passes each query pair as `key value` arguments.
        let args = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .flat_map(|kv| match kv.split_once('=') {
                Some((k, v)) => vec![k.to_string(), v.to_string()],
                None => vec![kv.to_string()],
            })
            .collect();
        return Ok(Output::Binary { path, args });
    }
    if s.contains("://") {
        return Err(Error::InvalidArgument(format!(
            "unsupported stdio URI {s:?}"
        )));
    }
    Ok(Output::Fifo(s))
}

/// What the shim keeps open for a process after the runtime started it.
#[derive(Default)]
pub struct ProcessIo {
    /// The shim's own writer on the stdin fifo; dropped by CloseIO.
    pub stdin_keepalive: Option<OwnedFd>,
}

fn dev_null(write: bool) -> Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .context(|| "open /dev/null".to_string())?;
    Ok(f.into())
}

/// Opens a fifo for writing without waiting for a reader: O_RDWR never blocks
/// on a fifo, and the write end is what the process gets.
pub fn open_fifo_writer(path: &str) -> Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .context(|| format!("open output fifo {path}"))?;
    Ok(f.into())
}

/// Opens the stdin fifo's read end for the process, plus the shim's writer
/// that keeps it from reading EOF before containerd attaches.
pub fn open_stdin(path: &str) -> Result<(OwnedFd, OwnedFd)> {
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .context(|| format!("open stdin fifo {path}"))?;
    let keepalive = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .context(|| format!("open stdin fifo {path} for writing"))?;
    // The process reads blocking; the flag belongs to this open file only.
    fcntl(reader.as_fd(), FcntlArg::F_SETFL(OFlag::empty()))
        .context(|| format!("clear O_NONBLOCK on {path}"))?;
    Ok((reader.into(), keepalive.into()))
}

/// Context a logging binary receives in its environment.
pub struct LogTarget<'a> {
    pub namespace: &'a str,
    pub container_id: &'a str,
}

/// Opens stdio for a process without a terminal.
pub fn open(
    paths: &StdioPaths,
    target: &LogTarget,
    reaper: &Reaper,
) -> Result<(ProcessStdio, ProcessIo)> {
    let mut io = ProcessIo::default();
    let stdin = if paths.stdin.is_empty() {
        dev_null(false)?
    } else {
        let (reader, keepalive) = open_stdin(&paths.stdin)?;
        io.stdin_keepalive = Some(keepalive);
        reader
    };
    let (stdout, stderr) = match parse_output(&paths.stdout)? {
        Output::File(path) => {
            let f = append_file(path)?;
            let dup = f.try_clone().context(|| format!("dup {path}"))?;
            (f.into(), dup.into())
        }
        Output::Binary { path, args } => start_logger(path, &args, target, reaper)?,
        out => {
            let stdout = open_output(&out)?;
            let stderr = open_output(&parse_output(&paths.stderr)?)?;
            (stdout, stderr)
        }
    };
    Ok((
        ProcessStdio {
            stdin,
            stdout,
            stderr,
        },
        io,
    ))
}

fn open_output(out: &Output) -> Result<OwnedFd> {
    match out {
        Output::Null => dev_null(true),
        Output::Fifo(path) => open_fifo_writer(path),
        Output::File(path) => Ok(append_file(path)?.into()),
        Output::Binary { .. } => Err(Error::InvalidArgument(
            "a binary:// logger must be given as stdout".to_string(),
        )),
    }
}

fn append_file(path: &str) -> Result<File> {
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir)
            .context(|| format!("create log directory {}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .context(|| format!("open log file {path}"))
}

/// Starts a containerd-style logging binary: fd 3 and 4 read the process's
/// stdout and stderr, and the binary closes fd 5 once it is ready.
fn start_logger(
    path: &str,
    args: &[String],
    target: &LogTarget,
    reaper: &Reaper,
) -> Result<(OwnedFd, OwnedFd)> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;

    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).context(|| "pipe".to_string())?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).context(|| "pipe".to_string())?;
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).context(|| "pipe".to_string())?;
    let fds = [out_r, err_r, ready_w];
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env("CONTAINER_ID", target.container_id)
        .env("CONTAINER_NAMESPACE", target.namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let raw: Vec<i32> = fds.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    // SAFETY: only async-signal-safe fcntl/dup2 calls run between fork and
    // exec. Each fd is first moved above 5 so no dup2 clobbers a later source.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0; 3];
            for (h, fd) in high.iter_mut().zip(&raw) {
                *h = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if *h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let logger = reaper
        .spawn_unwatched(&mut cmd)
        .context(|| format!("start logging binary {path}"))?;
    drop(cmd);
    drop(fds);
    // Wait until the logger writes to or closes its end of the ready pipe,
    // but not forever: a logger that never signals must not hang Create.
    let mut fds = [PollFd::new(ready_r.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, PollTimeout::from(LOGGER_READY_TIMEOUT_MS)).unwrap_or(0);
    if ready == 0 {
        // Through the reaper: `Child::kill` does not know the pid may have
        // been reaped (and reused) already.
        reaper.kill(logger.id());
        return Err(Error::FailedPrecondition(format!(
            "logging binary {path} did not signal readiness on fd 5"
        )));
    }
    let mut buf = [0u8; 1];
    let _ = File::from(ready_r).read(&mut buf);
    Ok((out_w, err_w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_output_uris() {
        assert_eq!(parse_output("").unwrap(), Output::Null);
        assert_eq!(
            parse_output("/run/x/stdout").unwrap(),
            Output::Fifo("/run/x/stdout")
        );
        assert_eq!(parse_output("fifo:///a").unwrap(), Output::Fifo("/a"));
        assert_eq!(
            parse_output("file:///var/log/c.log").unwrap(),
            Output::File("/var/log/c.log")
        );
        assert_eq!(
            parse_output("binary:///usr/bin/logger?level=debug&x").unwrap(),
            Output::Binary {
                path: "/usr/bin/logger",
                args: vec!["level".into(), "debug".into(), "x".into()]
            }
        );
        assert!(parse_output("tcp://1.2.3.4:5").is_err());
    }
}
