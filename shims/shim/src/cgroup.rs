//! A container's cgroup statistics as containerd's Stats call returns them
//! (v1 and v2 metrics). Finding the cgroup and reading its files is
//! `berth_cgroup`'s, shared with berthd.

use std::path::Path;
use std::sync::OnceLock;

pub use berth_cgroup::{Cgroup, CgroupV1, oom_kills};
use berth_cgroup::{Hierarchies, read_flat};
use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;

/// The host's cgroup mounts, read at the first create and kept: they do not
/// change under a running node, and `/proc/self/mountinfo` with a few hundred
/// mounts took ~0.4 ms to read and parse on every CreateContainer.
static HIERARCHIES: OnceLock<Hierarchies> = OnceLock::new();

/// The cgroup of `pid`, from `/proc/<pid>/cgroup` and the mount table.
pub fn of_pid(pid: u32) -> Option<Cgroup> {
    let hierarchies = match HIERARCHIES.get() {
        Some(h) => h,
        None => {
            let read = Hierarchies::of_this_host().ok()?;
            HIERARCHIES.get_or_init(|| read)
        }
    };
    hierarchies.of_process(pid)
}

/// Metrics as containerd's Stats call returns them.
pub fn stats(cg: &Cgroup) -> Any {
    let (type_url, value) = match cg {
        Cgroup::V1(c) => (
            "io.containerd.cgroups.v1.Metrics",
            v1_metrics(c).write_to_bytes(),
        ),
        Cgroup::V2(dir) => (
            "io.containerd.cgroups.v2.Metrics",
            v2_metrics(dir).write_to_bytes(),
        ),
    };
    Any {
        type_url: type_url.into(),
        value: value.unwrap_or_default(),
        ..Default::default()
    }
}

/// A counter file, 0 when missing (containerd's metrics have no "unknown").
fn read_u64(path: &Path) -> u64 {
    berth_cgroup::read_u64(path).unwrap_or(0)
}

/// A v2 limit file, `u64::MAX` for "max", 0 when missing.
fn read_limit(path: &Path) -> u64 {
    berth_cgroup::read_limit(path).unwrap_or(0)
}

fn v1_metrics(c: &CgroupV1) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    if let Some(dir) = c.dir("pids") {
        m.pids = Some(v1::PidsStat {
            current: read_u64(&dir.join("pids.current")),
            limit: read_u64(&dir.join("pids.max")),
            ..Default::default()
        })
        .into();
    }
    if let Some(dir) = c.dir("cpuacct") {
        let stat = read_flat(&dir.join("cpuacct.stat"));
        // cpuacct.stat is in USER_HZ ticks; containerd reports nanoseconds.
        let tick = 1_000_000_000 / 100;
        let per_cpu = std::fs::read_to_string(dir.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let mut cpu = v1::CPUStat::new();
        cpu.usage = Some(v1::CPUUsage {
            total: read_u64(&dir.join("cpuacct.usage")),
            user: stat.get("user").copied().unwrap_or(0) * tick,
            kernel: stat.get("system").copied().unwrap_or(0) * tick,
            per_cpu,
            ..Default::default()
        })
        .into();
        if let Some(cpu_dir) = c.dir("cpu") {
            let t = read_flat(&cpu_dir.join("cpu.stat"));
            cpu.throttling = Some(v1::Throttle {
                periods: t.get("nr_periods").copied().unwrap_or(0),
                throttled_periods: t.get("nr_throttled").copied().unwrap_or(0),
                throttled_time: t.get("throttled_time").copied().unwrap_or(0),
                ..Default::default()
            })
            .into();
        }
        m.cpu = Some(cpu).into();
    }
    if let Some(dir) = c.dir("memory") {
        let s = read_flat(&dir.join("memory.stat"));
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        let entry = |prefix: &str| v1::MemoryEntry {
            usage: read_u64(&dir.join(format!("{prefix}usage_in_bytes"))),
            max: read_u64(&dir.join(format!("{prefix}max_usage_in_bytes"))),
            limit: read_u64(&dir.join(format!("{prefix}limit_in_bytes"))),
            failcnt: read_u64(&dir.join(format!("{prefix}failcnt"))),
            ..Default::default()
        };
        let mem = v1::MemoryStat {
            cache: g("cache"),
            rss: g("rss"),
            rss_huge: g("rss_huge"),
            mapped_file: g("mapped_file"),
            dirty: g("dirty"),
            writeback: g("writeback"),
            pg_pg_in: g("pgpgin"),
            pg_pg_out: g("pgpgout"),
            pg_fault: g("pgfault"),
            pg_maj_fault: g("pgmajfault"),
            inactive_anon: g("inactive_anon"),
            active_anon: g("active_anon"),
            inactive_file: g("inactive_file"),
            active_file: g("active_file"),
            unevictable: g("unevictable"),
            hierarchical_memory_limit: g("hierarchical_memory_limit"),
            hierarchical_swap_limit: g("hierarchical_memsw_limit"),
            total_cache: g("total_cache"),
            total_rss: g("total_rss"),
            total_rss_huge: g("total_rss_huge"),
            total_mapped_file: g("total_mapped_file"),
            total_dirty: g("total_dirty"),
            total_writeback: g("total_writeback"),
            total_pg_pg_in: g("total_pgpgin"),
            total_pg_pg_out: g("total_pgpgout"),
            total_pg_fault: g("total_pgfault"),
            total_pg_maj_fault: g("total_pgmajfault"),
            total_inactive_anon: g("total_inactive_anon"),
            total_active_anon: g("total_active_anon"),
            total_inactive_file: g("total_inactive_file"),
            total_active_file: g("total_active_file"),
            total_unevictable: g("total_unevictable"),
            usage: Some(entry("memory.")).into(),
            swap: Some(entry("memory.memsw.")).into(),
            kernel: Some(entry("memory.kmem.")).into(),
            kernel_tcp: Some(entry("memory.kmem.tcp.")).into(),
            ..Default::default()
        };
        m.memory = Some(mem).into();
        let oom = read_flat(&dir.join("memory.oom_control"));
        m.memory_oom_control = Some(v1::MemoryOomControl {
            oom_kill_disable: oom.get("oom_kill_disable").copied().unwrap_or(0),
            under_oom: oom.get("under_oom").copied().unwrap_or(0),
            oom_kill: oom.get("oom_kill").copied().unwrap_or(0),
            ..Default::default()
        })
        .into();
    }
    m
}

fn v2_metrics(dir: &Path) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    m.pids = Some(v2::PidsStat {
        current: read_u64(&dir.join("pids.current")),
        limit: read_limit(&dir.join("pids.max")),
        ..Default::default()
    })
    .into();
    let c = read_flat(&dir.join("cpu.stat"));
    let g = |k: &str| c.get(k).copied().unwrap_or(0);
    m.cpu = Some(v2::CPUStat {
        usage_usec: g("usage_usec"),
        user_usec: g("user_usec"),
        system_usec: g("system_usec"),
        nr_periods: g("nr_periods"),
        nr_throttled: g("nr_throttled"),
        throttled_usec: g("throttled_usec"),
        ..Default::default()
    })
    .into();
    let s = read_flat(&dir.join("memory.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    m.memory = Some(v2::MemoryStat {
        anon: g("anon"),
        file: g("file"),
        kernel_stack: g("kernel_stack"),
        slab: g("slab"),
        sock: g("sock"),
        shmem: g("shmem"),
        file_mapped: g("file_mapped"),
        file_dirty: g("file_dirty"),
        file_writeback: g("file_writeback"),
        anon_thp: g("anon_thp"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        slab_reclaimable: g("slab_reclaimable"),
        slab_unreclaimable: g("slab_unreclaimable"),
        pgfault: g("pgfault"),
        pgmajfault: g("pgmajfault"),
        usage: read_u64(&dir.join("memory.current")),
        usage_limit: read_limit(&dir.join("memory.max")),
        swap_usage: read_u64(&dir.join("memory.swap.current")),
        swap_limit: read_limit(&dir.join("memory.swap.max")),
        max_usage: read_u64(&dir.join("memory.peak")),
        ..Default::default()
    })
    .into();
    let e = read_flat(&dir.join("memory.events"));
    let g = |k: &str| e.get(k).copied().unwrap_or(0);
    m.memory_events = Some(v2::MemoryEvents {
        low: g("low"),
        high: g("high"),
        max: g("max"),
        oom: g("oom"),
        oom_kill: g("oom_kill"),
        oom_group_kill: g("oom_group_kill"),
        ..Default::default()
    })
    .into();
    m
}
