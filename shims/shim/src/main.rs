//! `containerd-shim-berth-v2`: containerd's shim v2 protocol over runc-like
//! OCI runtimes, one process per pod. This file only parses flags and hands
//! off to `start`, `delete` or the serving shim.

mod args;
mod cgroup;
mod cleanup;
mod console;
mod error;
mod events;
mod fds;
mod logger;
mod mount;
mod oom;
mod options;
mod process;
mod reaper;
mod runtime;
mod serve;
mod service;
mod signals;
mod start;
mod stdio;
mod tasks;

use std::io::Write;
use std::process::ExitCode;

/// The runtime type containerd maps to this binary.
const RUNTIME_TYPE: &str = "io.containerd.berth.v2";

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    if args.version {
        println!(
            "containerd-shim-berth-v2 ({RUNTIME_TYPE}) {}",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    let result = match args.action.as_deref() {
        Some("start") => start::start(&args).map(String::into_bytes),
        Some("delete") => {
            logger::init(args.debug);
            cleanup::delete(&args)
        }
        Some(other) => Err(error::Error::InvalidArgument(format!(
            "unknown action {other:?}"
        ))),
        None => serve::serve(args).map(|()| Vec::new()),
    };
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout();
            if stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &error::Error) -> ExitCode {
    eprintln!("containerd-shim-berth-v2: {e}");
    ExitCode::FAILURE
}
