//! What a cgroup's files count: CPU time, memory as the kubelet reads it, the
//! number of processes and OOM kills, in v1 and v2. A file that is missing or
//! unreadable gives `None`: a cgroup can vanish between two reads.

use std::collections::HashMap;
use std::path::Path;

use crate::locate::Cgroup;

/// Above this a v1 limit means "none": the kernel reports `PAGE_COUNTER_MAX` pages.
const V1_UNLIMITED: u64 = 1 << 62;

/// Memory as the kubelet reads it; `working_set` is usage less inactive file pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    /// Page cache (file-backed pages), cAdvisor's `container_memory_cache`.
    pub cache: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// `None` without a limit.
    pub limit: Option<u64>,
}

impl Memory {
    /// What is left below the limit, if there is one.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set))
    }
}

/// One reading of a cgroup's counters. A counter whose file is missing is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of every process in it, in nanoseconds.
    pub cpu_ns: Option<u64>,
    pub memory: Option<Memory>,
    pub pids: Option<u64>,
}

impl Cgroup {
    /// CPU, memory and the number of processes.
    pub fn read(&self) -> Usage {
        Usage {
            pids: self.read_pids(),
            ..self.read_cpu_memory()
        }
    }

    /// The number of processes (tasks) in it.
    pub fn read_pids(&self) -> Option<u64> {
        match self {
            Cgroup::V1(v1) => v1.pids().and_then(|d| read_u64(&d.join("pids.current"))),
            Cgroup::V2(d) => read_u64(&d.join("pids.current")),
        }
    }

    /// CPU and memory only: a container's stats need no more, and each file read
    /// counts when hundreds of containers are listed.
    pub fn read_cpu_memory(&self) -> Usage {
        let (cpu_ns, memory) = match self {
            Cgroup::V1(v1) => (
                v1.cpuacct()
                    .and_then(|d| read_u64(&d.join("cpuacct.usage"))),
                v1.memory().and_then(|d| {
                    memory_v1(
                        read_u64(&d.join("memory.usage_in_bytes"))?,
                        &std::fs::read_to_string(d.join("memory.stat")).ok()?,
                        read_u64(&d.join("memory.limit_in_bytes")),
                    )
                }),
            ),
            Cgroup::V2(d) => (
                std::fs::read_to_string(d.join("cpu.stat"))
                    .ok()
                    .and_then(|s| stat_value(&s, "usage_usec"))
                    .map(|us| us.saturating_mul(1000)),
                memory_v2(
                    read_u64(&d.join("memory.current")),
                    &std::fs::read_to_string(d.join("memory.stat")).unwrap_or_default(),
                    std::fs::read_to_string(d.join("memory.max"))
                        .ok()
                        .as_deref(),
                ),
            ),
        };
        Usage {
            cpu_ns,
            memory,
            pids: None,
        }
    }
}

/// A file holding one number, such as `pids.current`.
pub fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A v2 limit file such as `memory.max`: "max" (no limit) reads as `u64::MAX`.
pub fn read_limit(path: &Path) -> Option<u64> {
    parse_limit(&std::fs::read_to_string(path).ok()?)
}

fn parse_limit(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// A `key value` per line file (`memory.stat`, `cpu.stat`, `memory.events`);
/// lines that are not a key and a number are skipped. Empty if unreadable.
pub fn read_flat(path: &Path) -> HashMap<String, u64> {
    parse_flat(&std::fs::read_to_string(path).unwrap_or_default())
}

fn parse_flat(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// One value of a `key value` per line text.
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The OOM kill counter the kernel keeps for a memory cgroup directory
/// (`memory.events` in v2, `memory.oom_control` in v1).
pub fn oom_kills(memory_dir: &Path, v2: bool) -> Option<u64> {
    let file = if v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    stat_value(
        &std::fs::read_to_string(memory_dir.join(file)).ok()?,
        "oom_kill",
    )
}

/// v1: hierarchical (`total_`) counters, so a pod's cgroup counts its containers.
fn memory_v1(usage: u64, stat: &str, limit: Option<u64>) -> Option<Memory> {
    let get = |k: &str| stat_value(stat, k).unwrap_or(0);
    Some(Memory {
        usage,
        working_set: usage.saturating_sub(get("total_inactive_file")),
        rss: get("total_rss"),
        cache: get("total_cache"),
        page_faults: get("total_pgfault"),
        major_page_faults: get("total_pgmajfault"),
        limit: limit.filter(|l| *l < V1_UNLIMITED),
    })
}

fn memory_v2(current: Option<u64>, stat: &str, max: Option<&str>) -> Option<Memory> {
    let usage = current?;
    let get = |k: &str| stat_value(stat, k).unwrap_or(0);
    Some(Memory {
        usage,
        working_set: usage.saturating_sub(get("inactive_file")),
        rss: get("anon"),
        cache: get("file"),
        page_faults: get("pgfault"),
        major_page_faults: get("pgmajfault"),
        limit: max.and_then(parse_limit).filter(|l| *l != u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_memory_uses_hierarchical_counters() {
        let stat = "cache 10\nrss 5\ninactive_file 1\ntotal_rss 4096\ntotal_inactive_file 1024\n\
                    total_pgfault 7\ntotal_pgmajfault 2\ntotal_cache 2048\n";
        let m = memory_v1(10_000, stat, Some(9_223_372_036_854_771_712)).unwrap();
        assert_eq!(m.working_set, 10_000 - 1024);
        assert_eq!((m.rss, m.cache), (4096, 2048));
        assert_eq!((m.page_faults, m.major_page_faults), (7, 2));
        assert_eq!(m.limit, None, "PAGE_COUNTER_MAX means unlimited");
        let limited = memory_v1(10_000, stat, Some(1 << 20)).unwrap();
        assert_eq!(limited.available(), Some((1 << 20) - (10_000 - 1024)));
    }

    #[test]
    fn v2_memory_and_max() {
        let stat = "anon 300\nfile 700\ninactive_file 500\npgfault 9\npgmajfault 1\n";
        let m = memory_v2(Some(1000), stat, Some("max\n")).unwrap();
        assert_eq!(
            (m.working_set, m.rss, m.cache, m.limit),
            (500, 300, 700, None)
        );
        let m = memory_v2(Some(1000), stat, Some("4096\n")).unwrap();
        assert_eq!(m.available(), Some(4096 - 500));
        assert_eq!(memory_v2(None, stat, None), None);
    }

    #[test]
    fn flat_files_and_limits() {
        let m = parse_flat("low 0\nhigh 2\noom_kill 3\nbroken\nword word\n");
        assert_eq!((m["high"], m["oom_kill"], m.len()), (2, 3, 3));
        assert_eq!(parse_limit("max\n"), Some(u64::MAX));
        assert_eq!(parse_limit("4096\n"), Some(4096));
        assert_eq!(parse_limit("nonsense"), None);
    }

    #[test]
    fn oom_kills_from_either_layout() {
        let dir = std::env::temp_dir().join(format!("berth-cgroup-oom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.events"), "low 0\noom 2\noom_kill 1\n").unwrap();
        std::fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n",
        )
        .unwrap();
        assert_eq!(oom_kills(&dir, true), Some(1));
        assert_eq!(oom_kills(&dir, false), Some(4));
        assert_eq!(oom_kills(&dir.join("gone"), true), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_process_is_read() {
        let h = crate::Hierarchies::of_this_host().expect("mountinfo");
        let cg = h.of_process(std::process::id()).expect("own cgroup");
        let u = cg.read();
        assert!(u.cpu_ns.is_some() || u.memory.is_some());
    }
}
