//! What the kernel counts for a process's cgroups: where they are (from
//! `/proc/<pid>/cgroup` and this host's cgroup mounts) and their CPU, memory and
//! pid accounting. Both layouts: v1 hierarchies, one per controller (as on hybrid
//! hosts, where runc uses them), and the v2 unified hierarchy.
//!
//! Parsing is separate from reading so that it is tested from fixtures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Above this a v1 limit means "none": the kernel reports `PAGE_COUNTER_MAX` pages.
const V1_UNLIMITED: u64 = 1 << 62;

/// One mounted hierarchy: the cgroup path at its root and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    root: String,
    point: PathBuf,
}

impl Mount {
    /// The directory of cgroup `path` (as `/proc/<pid>/cgroup` names it), if it is
    /// inside what this mount shows.
    fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let rel = if self.root == "/" {
            path
        } else {
            path.strip_prefix(self.root.as_str())?
        };
        let rel = rel.trim_start_matches('/');
        Some(if rel.is_empty() {
            self.point.clone()
        } else {
            self.point.join(rel)
        })
    }
}

/// This host's cgroup mounts, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// v1 mounts by controller ("memory", "cpuacct", "pids", ...).
    v1: HashMap<String, Mount>,
    v2: Option<Mount>,
}

impl Hierarchies {
    pub fn of_this_host() -> Hierarchies {
        match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => Hierarchies::parse(&text),
            Err(e) => {
                tracing::warn!(error = %e, "reading /proc/self/mountinfo: no cgroup stats");
                Hierarchies::default()
            }
        }
    }

    /// From `/proc/self/mountinfo`: `id parent maj:min root point opts - type source superopts`.
    pub fn parse(mountinfo: &str) -> Hierarchies {
        let mut out = Hierarchies::default();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(dash) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(root), Some(point), Some(fstype), Some(superopts)) = (
                fields.get(3),
                fields.get(4),
                fields.get(dash + 1),
                fields.get(dash + 3),
            ) else {
                continue;
            };
            let mount = Mount {
                root: root.to_string(),
                point: PathBuf::from(unescape(point)),
            };
            match *fstype {
                "cgroup2" => {
                    out.v2.get_or_insert(mount);
                }
                "cgroup" => {
                    for controller in superopts.split(',') {
                        let name = controller.strip_prefix("name=").unwrap_or(controller);
                        out.v1
                            .entry(name.to_string())
                            .or_insert_with(|| mount.clone());
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The cgroup of process `pid`, or `None` if it is gone.
    pub fn of_process(&self, pid: u32) -> Option<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        self.locate(&text)
    }

    /// Where the cgroups named in a `/proc/<pid>/cgroup` text are. A process with a
    /// v1 memory hierarchy is accounted there (runc on a hybrid host); else in v2.
    pub fn locate(&self, proc_cgroup: &str) -> Option<Cgroup> {
        let mut v1 = CgroupV1::default();
        let mut unified = None;
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if controllers.is_empty() {
                unified = self.v2.as_ref().and_then(|m| m.dir_of(path));
                continue;
            }
            for controller in controllers.split(',') {
                let dir = || self.v1.get(controller).and_then(|m| m.dir_of(path));
                match controller {
                    "memory" => v1.memory = dir(),
                    "cpuacct" => v1.cpuacct = dir(),
                    "pids" => v1.pids = dir(),
                    _ => {}
                }
            }
        }
        if v1.memory.is_some() || v1.cpuacct.is_some() {
            Some(Cgroup::V1(v1))
        } else {
            unified.map(Cgroup::V2)
        }
    }
}

/// mountinfo escapes spaces, tabs, newlines and backslashes as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupV1 {
    pub memory: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub pids: Option<PathBuf>,
}

/// A process's cgroup directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    V1(CgroupV1),
    V2(PathBuf),
}

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
    /// The enclosing cgroup: a container's pod, when the kubelet gave a cgroup parent.
    pub fn parent(&self) -> Cgroup {
        let up = |p: &Option<PathBuf>| p.as_deref().and_then(Path::parent).map(Path::to_path_buf);
        match self {
            Cgroup::V1(v1) => Cgroup::V1(CgroupV1 {
                memory: up(&v1.memory),
                cpuacct: up(&v1.cpuacct),
                pids: up(&v1.pids),
            }),
            Cgroup::V2(dir) => Cgroup::V2(dir.parent().map(Path::to_path_buf).unwrap_or_default()),
        }
    }

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
            Cgroup::V1(v1) => v1
                .pids
                .as_ref()
                .and_then(|d| read_u64(&d.join("pids.current"))),
            Cgroup::V2(d) => read_u64(&d.join("pids.current")),
        }
    }

    /// CPU and memory only: a container's stats need no more, and each file read
    /// counts when hundreds of containers are listed.
    pub fn read_cpu_memory(&self) -> Usage {
        let (cpu_ns, memory) = match self {
            Cgroup::V1(v1) => (
                v1.cpuacct
                    .as_ref()
                    .and_then(|d| read_u64(&d.join("cpuacct.usage"))),
                v1.memory.as_ref().and_then(|d| {
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

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A value from a `key value` per line file such as `memory.stat`.
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
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
        limit: max.and_then(|m| m.trim().parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_hybrid_host_accounts_in_v1() {
        let h = Hierarchies::parse(HYBRID);
        let cg = h
            .locate("12:pids:/kubepods/pod1/c1\n4:memory:/kubepods/pod1/c1\n3:cpu,cpuacct:/kubepods/pod1/c1\n0::/\n")
            .unwrap();
        assert_eq!(
            cg,
            Cgroup::V1(CgroupV1 {
                memory: Some("/sys/fs/cgroup/memory/kubepods/pod1/c1".into()),
                cpuacct: Some("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1".into()),
                pids: Some("/sys/fs/cgroup/pids/kubepods/pod1/c1".into()),
            })
        );
        let Cgroup::V1(pod) = cg.parent() else {
            panic!("parent changed layout")
        };
        assert_eq!(
            pod.memory,
            Some("/sys/fs/cgroup/memory/kubepods/pod1".into())
        );
    }

    #[test]
    fn a_unified_host_accounts_in_v2() {
        let h = Hierarchies::parse(
            "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            h.locate("0::/berth/abc\n"),
            Some(Cgroup::V2("/sys/fs/cgroup/berth/abc".into()))
        );
    }

    #[test]
    fn a_mount_of_a_subtree_strips_its_root() {
        let h = Hierarchies::parse(
            "35 31 0:32 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        );
        let Some(Cgroup::V1(v1)) = h.locate("4:memory:/outer/pod/c\n") else {
            panic!("not located")
        };
        assert_eq!(v1.memory, Some("/sys/fs/cgroup/memory/pod/c".into()));
        // A cgroup outside the mounted subtree cannot be read.
        assert_eq!(h.locate("4:memory:/elsewhere/c\n"), None);
    }

    #[test]
    fn escaped_mount_points() {
        assert_eq!(unescape(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape(r"/trailing\"), r"/trailing\");
    }

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
    fn this_process_is_found() {
        // Every Linux process is in some cgroup; this host's must be readable.
        let h = Hierarchies::of_this_host();
        let cg = h.of_process(std::process::id()).expect("own cgroup");
        assert!(cg.read().cpu_ns.is_some() || cg.read().memory.is_some());
    }
}
