//! Where a process's cgroups are: this host's cgroup mounts (from
//! `/proc/self/mountinfo`) joined with the paths `/proc/<pid>/cgroup` names.
//!
//! Three layouts: legacy v1 (one hierarchy per controller), hybrid (v1
//! controllers plus an empty v2 tree at `/sys/fs/cgroup/unified`, where runc
//! accounts in v1) and unified v2. A process with a v1 memory or cpuacct
//! hierarchy is accounted there, else in v2, as containerd does in hybrid mode.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

/// One mounted hierarchy: the cgroup path at its root and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    root: PathBuf,
    point: PathBuf,
}

impl Mount {
    /// The directory of cgroup `path` (as `/proc/<pid>/cgroup` names it), if it is
    /// inside the subtree this mount shows. Whole components only: a mount of
    /// `/outer` does not show `/outerx`.
    fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let rel = Path::new(path).strip_prefix(&self.root).ok()?;
        Some(if rel.as_os_str().is_empty() {
            self.point.clone()
        } else {
            self.point.join(rel)
        })
    }
}

/// This host's cgroup mounts, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// v1 mounts by controller as `/proc/<pid>/cgroup` names it ("memory",
    /// "cpuacct", "name=systemd", ...); the first mount of each wins.
    v1: HashMap<String, Mount>,
    /// The first cgroup2 mount.
    v2: Option<Mount>,
}

impl Hierarchies {
    /// The mounts this process sees.
    pub fn of_this_host() -> io::Result<Hierarchies> {
        std::fs::read_to_string("/proc/self/mountinfo").map(|text| Hierarchies::parse(&text))
    }

    /// From `/proc/self/mountinfo`: `id parent maj:min root point opts [tags] - type source superopts`.
    /// Lines that are not cgroup mounts, or are malformed, are skipped.
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
                root: PathBuf::from(unescape(root)),
                point: PathBuf::from(unescape(point)),
            };
            match *fstype {
                "cgroup2" => {
                    out.v2.get_or_insert(mount);
                }
                "cgroup" => {
                    for controller in superopts.split(',') {
                        out.v1
                            .entry(controller.to_string())
                            .or_insert_with(|| mount.clone());
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The cgroup of process `pid`, or `None` if it is gone or in no mounted cgroup.
    pub fn of_process(&self, pid: u32) -> Option<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        self.locate(&text)
    }

    /// Where the cgroups named in a `/proc/<pid>/cgroup` text
    /// (`hierarchy-id:controllers:path` per line; v2 has no controllers) are.
    pub fn locate(&self, proc_cgroup: &str) -> Option<Cgroup> {
        let mut controllers = BTreeMap::new();
        let mut unified = None;
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(names), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if names.is_empty() {
                unified = self.v2.as_ref().and_then(|m| m.dir_of(path));
                continue;
            }
            for name in names.split(',') {
                if let Some(dir) = self.v1.get(name).and_then(|m| m.dir_of(path)) {
                    controllers.insert(name.to_string(), dir);
                }
            }
        }
        let v1 = CgroupV1 { controllers };
        if v1.memory().is_some() || v1.cpuacct().is_some() {
            Some(Cgroup::V1(v1))
        } else {
            unified.map(Cgroup::V2)
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\` and three octal
/// digits; anything else after a backslash is kept as it is.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .filter(|o| o.bytes().all(|b| (b'0'..=b'7').contains(&b)))
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

/// A process's v1 cgroup directories, by controller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupV1 {
    controllers: BTreeMap<String, PathBuf>,
}

impl CgroupV1 {
    /// The directory of `controller` ("memory", "cpu", "pids", ...), if mounted.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.controllers.get(controller).map(PathBuf::as_path)
    }

    pub fn memory(&self) -> Option<&Path> {
        self.dir("memory")
    }

    pub fn cpuacct(&self) -> Option<&Path> {
        self.dir("cpuacct")
    }

    pub fn pids(&self) -> Option<&Path> {
        self.dir("pids")
    }
}

/// A process's cgroup directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    V1(CgroupV1),
    V2(PathBuf),
}

impl Cgroup {
    /// The enclosing cgroup: a container's pod, when the kubelet gave a cgroup parent.
    pub fn parent(&self) -> Cgroup {
        match self {
            Cgroup::V1(v1) => Cgroup::V1(CgroupV1 {
                controllers: v1
                    .controllers
                    .iter()
                    .filter_map(|(name, dir)| Some((name.clone(), dir.parent()?.to_path_buf())))
                    .collect(),
            }),
            Cgroup::V2(dir) => Cgroup::V2(dir.parent().map(Path::to_path_buf).unwrap_or_default()),
        }
    }

    /// Where the memory controller's files (limits, OOM counters) are.
    pub fn memory_dir(&self) -> Option<&Path> {
        match self {
            Cgroup::V1(v1) => v1.memory(),
            Cgroup::V2(dir) => Some(dir),
        }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Cgroup::V2(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12 with `systemd.unified_cgroup_hierarchy=0`: v1 controllers, an
    /// empty v2 tree beside them.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// The shim's fixture: cpu and cpuacct in hierarchies of their own.
    const SPLIT_CPU: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    const UNIFIED: &str =
        "30 23 0:27 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

    /// Legacy v1 with no cgroup2 mount at all.
    const LEGACY: &str = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
";

    fn v1(cg: Option<Cgroup>) -> CgroupV1 {
        match cg {
            Some(Cgroup::V1(v1)) => v1,
            other => panic!("expected v1, got {other:?}"),
        }
    }

    #[test]
    fn a_hybrid_host_accounts_in_v1() {
        let h = Hierarchies::parse(HYBRID);
        let cg = h
            .locate("12:pids:/kubepods/pod1/c1\n4:memory:/kubepods/pod1/c1\n3:cpu,cpuacct:/kubepods/pod1/c1\n1:name=systemd:/kubepods/pod1/c1\n0::/\n")
            .unwrap();
        assert!(!cg.is_v2());
        assert_eq!(
            cg.memory_dir(),
            Some(Path::new("/sys/fs/cgroup/memory/kubepods/pod1/c1"))
        );
        let Cgroup::V1(c) = &cg else { unreachable!() };
        assert_eq!(
            c.cpuacct(),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1"))
        );
        assert_eq!(
            c.dir("cpu"),
            c.cpuacct(),
            "co-mounted controllers share a directory"
        );
        assert_eq!(
            c.pids(),
            Some(Path::new("/sys/fs/cgroup/pids/kubepods/pod1/c1"))
        );
        assert_eq!(
            c.dir("name=systemd"),
            Some(Path::new("/sys/fs/cgroup/systemd/kubepods/pod1/c1")),
            "named hierarchies are looked up as /proc/<pid>/cgroup names them"
        );
        assert_eq!(c.dir("rw"), None, "mount options are not controllers");
        let pod = v1(Some(cg.parent()));
        assert_eq!(
            pod.memory(),
            Some(Path::new("/sys/fs/cgroup/memory/kubepods/pod1"))
        );
    }

    #[test]
    fn controllers_in_hierarchies_of_their_own() {
        let h = Hierarchies::parse(SPLIT_CPU);
        let c = v1(
            h.locate("8:pids:/pod/c1\n4:memory:/pod/c1\n2:cpuacct:/pod/c1\n1:cpu:/pod/c1\n0::/\n")
        );
        assert_eq!(c.dir("cpu"), Some(Path::new("/sys/fs/cgroup/cpu/pod/c1")));
        assert_eq!(
            c.cpuacct(),
            Some(Path::new("/sys/fs/cgroup/cpuacct/pod/c1"))
        );
        assert_eq!(c.pids(), Some(Path::new("/sys/fs/cgroup/pids/pod/c1")));
    }

    #[test]
    fn a_legacy_host_accounts_in_v1() {
        let h = Hierarchies::parse(LEGACY);
        let c = v1(h.locate("4:memory:/a\n2:pids:/a\n"));
        assert_eq!(c.memory(), Some(Path::new("/sys/fs/cgroup/memory/a")));
        // Without a v1 memory or cpuacct hierarchy and no v2 mount, nothing to read.
        assert_eq!(h.locate("0::/a\n"), None);
    }

    #[test]
    fn a_unified_host_accounts_in_v2() {
        let h = Hierarchies::parse(UNIFIED);
        let cg = h.locate("0::/kubepods/pod1/c1\n").unwrap();
        assert_eq!(cg, Cgroup::V2("/sys/fs/cgroup/kubepods/pod1/c1".into()));
        assert!(cg.is_v2());
        assert_eq!(
            cg.memory_dir(),
            Some(Path::new("/sys/fs/cgroup/kubepods/pod1/c1"))
        );
        assert_eq!(
            cg.parent(),
            Cgroup::V2("/sys/fs/cgroup/kubepods/pod1".into())
        );
        assert_eq!(
            h.locate("0::/\n"),
            Some(Cgroup::V2("/sys/fs/cgroup".into()))
        );
    }

    #[test]
    fn a_hybrid_process_without_v1_accounting_is_read_in_v2() {
        let h = Hierarchies::parse(HYBRID);
        assert_eq!(
            h.locate("1:name=systemd:/x\n0::/x\n"),
            Some(Cgroup::V2("/sys/fs/cgroup/unified/x".into()))
        );
    }

    #[test]
    fn a_mount_of_a_subtree_strips_its_root() {
        let h = Hierarchies::parse(
            "35 31 0:32 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        );
        let c = v1(h.locate("4:memory:/outer/pod/c\n"));
        assert_eq!(c.memory(), Some(Path::new("/sys/fs/cgroup/memory/pod/c")));
        // A cgroup outside the mounted subtree cannot be read, even one whose
        // name only starts with the same letters.
        assert_eq!(h.locate("4:memory:/elsewhere/c\n"), None);
        assert_eq!(h.locate("4:memory:/outerx/c\n"), None);
    }

    #[test]
    fn escaped_mount_points_and_roots() {
        let h = Hierarchies::parse(
            "35 31 0:32 /a\\040root /mnt/cg\\040v1\\011mem rw - cgroup cgroup rw,memory\n",
        );
        let c = v1(h.locate("4:memory:/a root/c\n"));
        assert_eq!(c.memory(), Some(Path::new("/mnt/cg v1\tmem/c")));
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape(r"/a\040b\134c\012d"), "/a b\\c\nd");
        assert_eq!(unescape(r"/trailing\"), r"/trailing\");
        assert_eq!(unescape(r"/not\08octal"), r"/not\08octal");
        assert_eq!(unescape(r"/short\04"), r"/short\04");
    }

    #[test]
    fn malformed_input_is_skipped_not_a_panic() {
        let h = Hierarchies::parse("garbage\n1 2 - cgroup\n\n- - - - - -\n");
        assert_eq!(h, Hierarchies::default());
        let h = Hierarchies::parse(HYBRID);
        assert_eq!(h.locate(""), None);
        assert_eq!(h.locate("nonsense\n4:memory\n::\n"), None);
        // A relative path (never written by the kernel) is outside every mount.
        assert_eq!(h.locate("4:memory:relative\n"), None);
    }

    #[test]
    fn this_process_is_found() {
        // Every Linux process is in some cgroup; this host's must be located.
        let h = Hierarchies::of_this_host().expect("mountinfo");
        assert!(h.of_process(std::process::id()).is_some());
        assert_eq!(h.of_process(u32::MAX), None, "no such process");
    }
}
