//! Memory: the daemon's resident set (VmRSS), and each shim's proportional set
//! (Pss) and private memory (Private_Clean + Private_Dirty) from smaps_rollup.
//!
//! Dirty page-cache pages of a freshly built binary count as Private_Dirty in
//! every process mapping them, so the page cache is written back first.

use super::procfs;
use super::report::{Report, Side};
use super::runtimes::{Kind, Runtime};

const KIB_PER_MIB: f64 = 1024.0;

pub fn side(kind: Kind) -> Side {
    match kind {
        Kind::Berth => Side::Berth,
        Kind::Containerd => Side::Containerd,
    }
}

/// Records the daemon's RSS as metric `key`; returns it in MiB.
pub fn record_daemon(rt: &Runtime, report: &mut Report, key: &str) -> Option<f64> {
    match rt.pid().and_then(procfs::rss_kib) {
        Some(kib) => {
            let mib = kib as f64 / KIB_PER_MIB;
            report.record(key, side(rt.kind), mib);
            let part = |field| {
                rt.pid()
                    .and_then(|p| procfs::status_kib(p, field))
                    .map_or(0.0, |k| k as f64 / KIB_PER_MIB)
            };
            report.note(format!(
                "{} {key}: {mib:.1} MiB = {:.1} anonymous + {:.1} file-backed (its binary's pages)",
                rt.name(),
                part("RssAnon:"),
                part("RssFile:"),
            ));
            Some(mib)
        }
        None => {
            report.fail(key, side(rt.kind), "daemon not running");
            None
        }
    }
}

/// Records each shim's Pss and private memory (one shim per pod for both
/// runtimes); returns how many shims were measured.
pub fn record_shims(rt: &Runtime, report: &mut Report) -> usize {
    unsafe { libc::sync() };
    let rollups: Vec<procfs::Rollup> = rt
        .shims()
        .into_iter()
        .filter_map(procfs::smaps_rollup)
        .collect();
    for r in &rollups {
        report.record("shim_pss", side(rt.kind), r.pss as f64 / KIB_PER_MIB);
        report.record(
            "shim_private",
            side(rt.kind),
            r.private as f64 / KIB_PER_MIB,
        );
    }
    rollups.len()
}
