//! berthd's own process metrics, read from /proc/self at each scrape, under the
//! names every Prometheus client library uses (`process_*`, unprefixed, so
//! dashboards built for any exporter work). prometheus-client has no such
//! collector, and the crates that add one bring the whole `procfs` crate for
//! five numbers.

use std::fs;
use std::io;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What one read of /proc/self gives.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: i64,
    pub virtual_bytes: i64,
    pub start_time_seconds: i64,
    pub open_fds: i64,
    pub max_fds: i64,
}

/// Kernel clock ticks per second (`USER_HZ`): fixed at 100 in the Linux ABI
/// for /proc, whatever the kernel's internal HZ.
const USER_HZ: f64 = 100.0;

/// Fields of /proc/<pid>/stat after the command (which may hold spaces and
/// parentheses, so parsing starts after its last ')'), counted from 0 at the
/// state field, which is field 3 in proc(5).
const UTIME: usize = 11;
const STIME: usize = 12;
const STARTTIME: usize = 19;
const VSIZE: usize = 20;
const RSS_PAGES: usize = 21;

/// Parses /proc/self/stat given the page size and the boot time (seconds since
/// the epoch, /proc/stat's `btime`).
pub(super) fn parse_stat(stat: &str, page_size: i64, boot_time: i64) -> Option<ProcessStats> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let ticks = (field(UTIME)? + field(STIME)?) as f64;
    Some(ProcessStats {
        cpu_seconds: ticks / USER_HZ,
        start_time_seconds: boot_time + (field(STARTTIME)? as f64 / USER_HZ) as i64,
        virtual_bytes: field(VSIZE)? as i64,
        resident_bytes: field(RSS_PAGES)? as i64 * page_size,
        ..ProcessStats::default()
    })
}

/// `btime` from /proc/stat.
pub(super) fn parse_boot_time(proc_stat: &str) -> Option<i64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft "Max open files" limit from /proc/self/limits.
pub(super) fn parse_max_fds(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(super) fn read() -> io::Result<ProcessStats> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc format");
    let boot_time = parse_boot_time(&fs::read_to_string("/proc/stat")?).ok_or_else(bad)?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let stat = fs::read_to_string("/proc/self/stat")?;
    let mut stats = parse_stat(&stat, page_size, boot_time).ok_or_else(bad)?;
    // The directory's own descriptor, open while it is read, is not counted.
    stats.open_fds = fs::read_dir("/proc/self/fd")?.count().saturating_sub(1) as i64;
    stats.max_fds = parse_max_fds(&fs::read_to_string("/proc/self/limits")?).unwrap_or(-1);
    Ok(stats)
}

/// What glibc's allocator holds, from `mallinfo2`: bytes handed out and not
/// yet freed (a leak grows this), and bytes free inside its arenas, kept for
/// reuse (fragmentation after a peak grows this; a trim hands whole free pages
/// back). Their sum, less what was trimmed, is most of berthd's anonymous RSS.
#[derive(Debug)]
pub(super) struct HeapStats {
    pub in_use_bytes: i64,
    pub free_bytes: i64,
}

pub(super) fn heap() -> Option<HeapStats> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters, taking each
        // arena's lock itself.
        let m = unsafe { libc::mallinfo2() };
        Some(HeapStats {
            // Chunks in the arenas plus those mmapped on their own.
            in_use_bytes: (m.uordblks + m.hblkhd) as i64,
            free_bytes: m.fordblks as i64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(s) = read() else {
            // A scrape without process metrics beats a failed scrape.
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let heap = heap();
        let heap_gauges = heap.iter().flat_map(|h| {
            [
                (
                    "berth_heap_in_use_bytes",
                    "Bytes the allocator has handed out and not had back",
                    h.in_use_bytes,
                ),
                (
                    "berth_heap_free_bytes",
                    "Bytes free inside the allocator's arenas, kept for reuse",
                    h.free_bytes,
                ),
            ]
        });
        let process_gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                s.virtual_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                s.max_fds,
            ),
        ];
        for (name, help, value) in process_gauges.into_iter().chain(heap_gauges) {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line, with a command holding a space and a ')' to trip naive parsers.
    const STAT: &str = "4242 (berth d) x) S 1 4242 4242 0 -1 4194560 9876 0 12 0 \
        250 130 0 0 20 0 9 0 123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 \
        4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_read_after_the_command() {
        let s = parse_stat(STAT, 4096, 1_700_000_000).unwrap();
        assert_eq!(s.cpu_seconds, 3.8); // (250 + 130) ticks
        assert_eq!(s.start_time_seconds, 1_700_000_000 + 1234); // 123456 ticks
        assert_eq!(s.virtual_bytes, 104_857_600);
        assert_eq!(s.resident_bytes, 2560 * 4096);
    }

    #[test]
    fn truncated_stat_is_refused() {
        assert_eq!(parse_stat("1 (x) S 1 2 3", 4096, 0), None);
        assert_eq!(parse_stat("garbage", 4096, 0), None);
    }

    #[test]
    fn boot_time_and_fd_limit() {
        let proc_stat = "cpu  1 2 3\nintr 5\nbtime 1699999999\nprocesses 9\n";
        assert_eq!(parse_boot_time(proc_stat), Some(1_699_999_999));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max processes             63704                63704                processes \n\
            Max open files            524288               524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(524_288));
    }

    #[test]
    fn heap_counts_what_is_allocated() {
        let before = heap().unwrap();
        let held = std::hint::black_box(vec![1u8; 4 << 20]);
        let during = heap().unwrap();
        drop(held);
        // Other tests' threads allocate meanwhile: a margin of 1 MiB.
        assert!(
            during.in_use_bytes >= before.in_use_bytes + (3 << 20),
            "{before:?} then {during:?}"
        );
    }

    #[test]
    fn own_process_is_read() {
        let s = read().unwrap();
        assert!(s.resident_bytes > 0 && s.open_fds >= 3, "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(s.start_time_seconds <= now && s.start_time_seconds > now - 86_400 * 365);
    }
}
