//! The serving shim: wires the reaper, event publisher, OOM watcher and task
//! table together and serves ttrpc until Shutdown or SIGTERM.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use containerd_shim_protos::ttrpc::Server;
use nix::sys::socket::{UnixAddr, getsockname};

use crate::args::Args;
use crate::error::{Context, Error, Result};
use crate::events::{Publisher, Transport};
use crate::oom::OomWatcher;
use crate::reaper::Reaper;
use crate::service;
use crate::tasks::Tasks;
use crate::{fds, logger, signals};

/// The listening socket `start` hands over (close-on-exec cleared, so it
/// survives the exec; [`fds::close_inherited_on_exec`] sets it again).
const LISTENER_FD: RawFd = 3;

pub fn serve(args: Args) -> Result<()> {
    // First, while no thread exists: the listener on fd 3 and anything else
    // inherited must not reach the runtime, hooks or containers.
    fds::close_inherited_on_exec()?;
    // One malloc arena for all threads: the shim is never contended, and
    // glibc's default of an arena per thread costs tens of KiB each.
    // SAFETY: mallopt before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    redirect_logs();
    logger::init(args.debug);
    signals::block()?;
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(Error::io(
            "become subreaper",
            std::io::Error::last_os_error(),
        ));
    }
    let (listener, socket_path) = listener(&args)?;

    let (exits_tx, exits_rx) = mpsc::channel();
    let reaper = Reaper::new(exits_tx);
    let (stop_tx, stop_rx) = mpsc::channel();
    signals::spawn(Arc::clone(&reaper), Some(stop_tx.clone()))?;

    let publisher = Publisher::start(
        transport(&args),
        args.namespace.clone(),
        Arc::clone(&reaper),
    )
    .context(|| "start event publisher".to_string())?;
    let oom = OomWatcher::start(publisher.clone())?;
    let tasks = Arc::new(Tasks::new(
        args.namespace.clone(),
        Arc::clone(&reaper),
        publisher,
        oom,
        stop_tx,
    ));

    let t = Arc::clone(&tasks);
    thread::Builder::new()
        .name("exits".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            for exit in exits_rx {
                t.handle_exit(exit);
            }
        })
        .context(|| "spawn exit thread".to_string())?;

    // Idle worker threads per connection (containerd opens one per task):
    // the library's 3..5 is generous for a pod's handful of calls, and a
    // blocked Wait does not count as idle, so calls never starve.
    let mut server = Server::new()
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(3)
        .add_listener(listener)
        .map_err(|e| Error::io("ttrpc listener", std::io::Error::other(e.to_string())))?
        .register_service(service::methods(tasks));
    server
        .start()
        .map_err(|e| Error::io("start ttrpc server", std::io::Error::other(e.to_string())))?;
    log::info!(
        "serving {} for namespace {}",
        socket_path.display(),
        args.namespace
    );

    let _ = stop_rx.recv();
    let _ = std::fs::remove_file(&socket_path);
    // Let the Shutdown reply reach containerd before the process goes away.
    thread::sleep(Duration::from_millis(20));
    log::info!("shim exiting");
    Ok(())
}

/// fd 3 from `start`, or `-socket PATH` when run by hand.
fn listener(args: &Args) -> Result<(RawFd, PathBuf)> {
    if let Some(path) = &args.socket {
        let path = path.strip_prefix("unix://").unwrap_or(path);
        let _ = std::fs::remove_file(path);
        let l = std::os::unix::net::UnixListener::bind(path).context(|| format!("bind {path}"))?;
        let fd = l.as_raw_fd();
        std::mem::forget(l);
        return Ok((fd, PathBuf::from(path)));
    }
    let addr: UnixAddr =
        getsockname(LISTENER_FD).context(|| "no listening socket on fd 3".to_string())?;
    let path = addr.path().map(PathBuf::from).ok_or_else(|| {
        Error::InvalidArgument("fd 3 is not a unix socket with a path".to_string())
    })?;
    Ok((LISTENER_FD, path))
}

fn transport(args: &Args) -> Transport {
    match std::env::var("TTRPC_ADDRESS") {
        Ok(a) if !a.is_empty() => Transport::Ttrpc(a),
        _ if !args.publish_binary.is_empty() => Transport::Binary {
            binary: args.publish_binary.clone(),
            address: args.address.clone(),
        },
        _ => Transport::None,
    }
}

/// Points stdout/stderr at the bundle's `log`: the fifo containerd creates
/// and reads, or a plain file a caller created to collect the log. Opened
/// non-blocking, so a stalled fifo reader costs log lines, never a stuck RPC.
fn redirect_logs() {
    let usable = std::fs::metadata("log").is_ok_and(|m| m.file_type().is_fifo() || m.is_file());
    if !usable {
        return;
    }
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log")
    {
        // SAFETY: dup2 onto the standard descriptors of this process.
        unsafe {
            libc::dup2(f.as_raw_fd(), 1);
            libc::dup2(f.as_raw_fd(), 2);
        }
    }
}
