//! `berth bench`: the benchmark lives in its own crate (`tests/bench`, binary
//! `berth-bench`) so that it, its registry, image builder and chart libraries
//! stay out of the product. `make build` puts `berth-bench` beside `berth`; this
//! replaces the process with it, so its options, output and exit code are the
//! benchmark's own.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// The benchmark binary's name, beside `berth`.
const BENCH_BIN: &str = "berth-bench";

/// Runs `berth-bench args...` in place of this process; returns only on failure.
pub fn exec(args: &[OsString]) -> String {
    let bin = match bench_binary() {
        Ok(bin) => bin,
        Err(e) => return e,
    };
    let err = Command::new(&bin).args(args).exec();
    format!("{}: {err}", bin.display())
}

fn bench_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating berth: {e}"))?;
    let bin = exe.with_file_name(BENCH_BIN);
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} missing: build it with `make build` (or `cargo build --release -p berth-bench`)",
            bin.display()
        ))
    }
}
