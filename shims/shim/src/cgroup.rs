//! Finding a container's cgroup and reading its statistics (v1 and v2) into
//! containerd's metrics types.
//!
//! A hybrid host mounts v1 controllers and a v2 tree side by side; when the
//! memory controller is on v1 (as on this project's hosts) the v1 files are
//! the ones the kernel fills, so v1 wins.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;

#[derive(Debug, Clone, PartialEq)]
pub enum Cgroup {
    /// Per-controller directories of a v1 hierarchy.
    V1 {
        controllers: HashMap<String, PathBuf>,
    },
    /// The unified directory.
    V2 { dir: PathBuf },
}

impl Cgroup {
    /// The cgroup of `pid`, from `/proc/<pid>/cgroup` and the mount table.
    pub fn of_pid(pid: u32) -> Option<Cgroup> {
        let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        resolve(&membership, &mounts)
    }

    pub fn memory_dir(&self) -> Option<&Path> {
        match self {
            Cgroup::V1 { controllers } => controllers.get("memory").map(PathBuf::as_path),
            Cgroup::V2 { dir } => Some(dir),
        }
    }

    /// Metrics as containerd's Stats call returns them.
    pub fn stats(&self) -> Any {
        match self {
            Cgroup::V1 { controllers } => {
                let m = v1_metrics(controllers);
                Any {
                    type_url: "io.containerd.cgroups.v1.Metrics".into(),
                    value: m.write_to_bytes().unwrap_or_default(),
                    ..Default::default()
                }
            }
            Cgroup::V2 { dir } => {
                let m = v2_metrics(dir);
                Any {
                    type_url: "io.containerd.cgroups.v2.Metrics".into(),
                    value: m.write_to_bytes().unwrap_or_default(),
                    ..Default::default()
                }
            }
        }
    }
}

/// Pure part of [`Cgroup::of_pid`], testable from fixtures.
fn resolve(membership: &str, mountinfo: &str) -> Option<Cgroup> {
    // mountinfo: id parent major:minor root mountpoint opts - fstype source superopts
    let mut v1_mounts: Vec<(Vec<String>, String, String)> = Vec::new();
    let mut v2_mount: Option<(String, String)> = None;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (root, point) = (pre[3].to_string(), pre[4].to_string());
        match post[0] {
            "cgroup" => {
                let ctrls = post[2].split(',').map(String::from).collect();
                v1_mounts.push((ctrls, root, point));
            }
            "cgroup2" => v2_mount = Some((root, point)),
            _ => {}
        }
    }
    let join = |root: &str, point: &str, path: &str| {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(path)
            .trim_start_matches('/');
        Path::new(point).join(rel)
    };
    let mut controllers = HashMap::new();
    let mut unified = None;
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(names), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if names.is_empty() {
            unified = Some(path.to_string());
            continue;
        }
        for name in names.split(',') {
            if let Some((_, root, point)) = v1_mounts
                .iter()
                .find(|(c, _, _)| c.iter().any(|c| c == name))
            {
                controllers.insert(name.to_string(), join(root, point, path));
            }
        }
    }
    if controllers.contains_key("memory") {
        return Some(Cgroup::V1 { controllers });
    }
    let (root, point) = v2_mount?;
    Some(Cgroup::V2 {
        dir: join(&root, &point, &unified?),
    })
}

fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `key value` lines (memory.stat, cpu.stat, memory.events).
fn read_flat(path: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn v1_metrics(c: &HashMap<String, PathBuf>) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    if let Some(dir) = c.get("pids") {
        m.pids = Some(v1::PidsStat {
            current: read_u64(&dir.join("pids.current")),
            limit: read_u64(&dir.join("pids.max")),
            ..Default::default()
        })
        .into();
    }
    if let Some(dir) = c.get("cpuacct") {
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
        if let Some(cpu_dir) = c.get("cpu") {
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
    if let Some(dir) = c.get("memory") {
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

/// A v2 limit file: "max" means unlimited.
fn read_limit(path: &Path) -> u64 {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim() == "max" => u64::MAX,
        Ok(s) => s.trim().parse().unwrap_or(0),
        Err(_) => 0,
    }
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

/// The OOM kill counter the kernel keeps for a memory cgroup directory.
pub fn oom_kills(memory_dir: &Path, v2: bool) -> Option<u64> {
    let file = if v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    let text = std::fs::read_to_string(memory_dir.join(file)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    #[test]
    fn hybrid_prefers_v1_memory() {
        let membership =
            "8:pids:/pod/c1\n4:memory:/pod/c1\n2:cpuacct:/pod/c1\n1:cpu:/pod/c1\n0::/\n";
        let cg = resolve(membership, HYBRID_MOUNTS).unwrap();
        assert_eq!(
            cg.memory_dir(),
            Some(Path::new("/sys/fs/cgroup/memory/pod/c1"))
        );
        let Cgroup::V1 { controllers } = cg else {
            panic!("v1 expected")
        };
        assert_eq!(
            controllers["pids"],
            PathBuf::from("/sys/fs/cgroup/pids/pod/c1")
        );
    }

    #[test]
    fn pure_v2() {
        let mounts = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        let cg = resolve("0::/kubepods/pod1/c1\n", mounts).unwrap();
        assert_eq!(
            cg,
            Cgroup::V2 {
                dir: PathBuf::from("/sys/fs/cgroup/kubepods/pod1/c1")
            }
        );
    }

    #[test]
    fn mount_root_is_stripped() {
        let mounts = "35 31 0:32 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
        let cg = resolve("4:memory:/outer/c1\n", mounts).unwrap();
        assert_eq!(cg.memory_dir(), Some(Path::new("/sys/fs/cgroup/memory/c1")));
    }

    #[test]
    fn no_cgroup_info_is_none() {
        assert_eq!(resolve("", HYBRID_MOUNTS), None);
    }
}
