//! A minimal `log` backend: one line per record on stderr.
//!
//! The serving shim points stderr at the bundle's `log` fifo that containerd
//! reads (or /dev/null), so this is all the logging machinery a shim needs;
//! a full tracing stack would cost more memory than the rest of the shim.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // One write per line so lines from different threads do not interleave.
        let line = format!(
            "time={}.{:03} level={} pid={} msg={:?}\n",
            now.as_secs(),
            now.subsec_millis(),
            record.level().as_str().to_ascii_lowercase(),
            std::process::id(),
            record.args().to_string()
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

pub fn init(debug: bool) {
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(if debug {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    }
}
