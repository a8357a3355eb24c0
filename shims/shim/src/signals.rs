//! Signal handling on one thread: SIGCHLD drives the reaper, SIGTERM and
//! SIGINT ask the shim to stop.
//!
//! The signals are blocked in the main thread before any other thread exists,
//! so every thread inherits the mask and only `sigwait` here receives them.
//! (Rust's `Command` clears the mask in children it spawns.)

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::thread;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use crate::error::{Context, Result};
use crate::reaper::Reaper;

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Blocks the handled signals; call first thing in `main`.
pub fn block() -> Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None)
        .context(|| "block signals".to_string())
}

/// Starts the signal thread. `stop` is told on SIGTERM/SIGINT.
pub fn spawn(reaper: Arc<Reaper>, stop: Option<Sender<()>>) -> Result<()> {
    thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let set = handled();
            // A child may have exited before this thread existed.
            reaper.reap();
            loop {
                match set.wait() {
                    Ok(Signal::SIGCHLD) => reaper.reap(),
                    Ok(sig) => {
                        log::info!("received {sig}, shutting down");
                        if let Some(stop) = &stop {
                            let _ = stop.send(());
                        }
                    }
                    Err(e) => log::warn!("sigwait: {e}"),
                }
            }
        })
        .context(|| "spawn signal thread".to_string())?;
    Ok(())
}
