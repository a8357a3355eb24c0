//! Prometheus metrics (`[metrics] address`): one registry, owned here, and small
//! functions the rest of berthd calls at its instrumentation points.
//!
//! The families live in a process-wide `OnceLock` set once at start when metrics
//! are on: threading a handle through every service would touch every
//! constructor for a side concern, and with metrics off each call below is one
//! atomic load and a return. No prometheus type leaves this module.

mod families;
mod grpc;
mod inventory;
mod process;
mod server;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use families::Inventory;
pub use grpc::GrpcMetricsLayer;
pub use inventory::NodeInventory;
pub use server::serve;

use families::Families;

static FAMILIES: OnceLock<Families> = OnceLock::new();

/// Turns metrics on for the life of the process. Called once, before serving.
pub fn enable() {
    let _ = FAMILIES.get_or_init(Families::new);
}

fn families() -> Option<&'static Families> {
    FAMILIES.get()
}

/// A CRI (or admin) RPC answered with gRPC `code` after `elapsed`.
pub fn grpc_request(service: &str, method: &str, code: &'static str, elapsed: Duration) {
    if let Some(f) = families() {
        f.grpc_request(service, method, code, elapsed);
    }
}

/// A request to the streaming server answered with HTTP `status`.
pub fn streaming_request(kind: &str, status: u16) {
    if let Some(f) = families() {
        f.streaming_request(kind, status);
    }
}

/// A streaming session (exec, attach, port-forward) that ran for `elapsed`.
pub fn streaming_session(kind: &'static str, elapsed: Duration) {
    if let Some(f) = families() {
        f.streaming_session(kind, elapsed);
    }
}

/// A pull that ended after `elapsed`, successfully or not.
pub fn image_pull(ok: bool, elapsed: Duration) {
    if let Some(f) = families() {
        f.image_pull(ok, elapsed);
    }
}

/// Layer bytes received from a registry.
pub fn image_pull_bytes(bytes: u64) {
    if let Some(f) = families() {
        f.pull_bytes.inc_by(bytes);
    }
}

/// One layer unpacked into its snapshot in `elapsed`.
pub fn layer_unpack(elapsed: Duration) {
    if let Some(f) = families() {
        f.unpack_seconds.observe(elapsed.as_secs_f64());
    }
}

/// A container's exit was recorded; `oom` when the kernel OOM-killed it.
pub fn container_exit(oom: bool) {
    if let Some(f) = families() {
        f.container_exits.inc();
        if oom {
            f.container_ooms.inc();
        }
    }
}

/// A shim process was started for a pod.
pub fn shim_start() {
    if let Some(f) = families() {
        f.shim_starts.inc();
    }
}

/// berthd tried to reconnect to a shim left from before its restart.
pub fn shim_reconnect(ok: bool) {
    if let Some(f) = families() {
        f.shim_reconnect(ok);
    }
}

/// A shim berthd was connected to is gone (its connection broke or it vanished
/// across a restart).
pub fn shim_death() {
    if let Some(f) = families() {
        f.shim_deaths.inc();
    }
}

/// A CNI plugin call (`command` ADD/DEL/CHECK/STATUS) that took `elapsed`.
pub fn cni_call(plugin: &str, command: &'static str, ok: bool, elapsed: Duration) {
    if let Some(f) = families() {
        f.cni_call(plugin, command, ok, elapsed);
    }
}

/// A metadata store write transaction (commit included) that took `elapsed`.
pub fn store_transaction(elapsed: Duration) {
    if let Some(f) = families() {
        f.store_tx_seconds.observe(elapsed.as_secs_f64());
    }
}

/// Times what it wraps: `Timer::start()` now, `.elapsed()` at the end. With
/// metrics off no clock is read.
#[derive(Clone, Copy)]
pub struct Timer(Option<Instant>);

impl Timer {
    pub fn start() -> Timer {
        Timer(families().map(|_| Instant::now()))
    }

    pub fn elapsed(&self) -> Duration {
        self.0.map(|t| t.elapsed()).unwrap_or_default()
    }
}
