//! Crash points for fault-injection tests. `BERTH_FAULT=<point>` in berthd's
//! environment (read once, on the first point reached) makes berthd abort() at that
//! point, as a kill -9 there would leave things; the tests then restart it and check
//! what recovery makes of it. Unset, a point costs one comparison.
//!
//! Points:
//! - `after-shim-start`: StartContainer, after the shim started the task and before
//!   the record says Running.
//! - `after-volumes`: CreateContainer, after the container's image volumes are
//!   mounted and its image-declared volumes filled, before its task exists.

use std::sync::OnceLock;

/// The point named by `BERTH_FAULT`, if any.
fn armed() -> Option<&'static str> {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    FAULT
        .get_or_init(|| std::env::var("BERTH_FAULT").ok().filter(|f| !f.is_empty()))
        .as_deref()
}

/// Aborts berthd here if `BERTH_FAULT` names this point.
pub fn crash_point(name: &str) {
    if armed() == Some(name) {
        eprintln!("BERTH_FAULT={name}: aborting");
        std::process::abort();
    }
}
