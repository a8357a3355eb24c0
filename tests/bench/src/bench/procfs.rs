//! What the bench reads from /proc: a process's resident memory, its smaps
//! rollup, its open files, the processes whose command line names a directory,
//! and the mounts below a directory.

use std::path::Path;

/// `VmRSS` of `/proc/<pid>/status`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `RssAnon:`, `RssFile:`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field_kib(&status, field)
}

/// The lines of `/proc/<pid>/smaps_rollup` the bench reports, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rollup {
    pub rss: u64,
    pub pss: u64,
    /// Private_Clean + Private_Dirty: what the process alone holds.
    pub private: u64,
}

pub fn smaps_rollup(pid: u32) -> Option<Rollup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(Rollup {
        rss: field_kib(&text, "Rss:")?,
        pss: field_kib(&text, "Pss:")?,
        private: field_kib(&text, "Private_Clean:")? + field_kib(&text, "Private_Dirty:")?,
    })
}

fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Processes whose executable's file name is `exe_name` and whose command line
/// mentions `dir` (every shim of one runtime carries its unique work directory
/// in its flags). Sorted by pid.
pub fn processes(exe_name: &str, dir: &Path) -> Vec<u32> {
    let dir = dir.to_string_lossy();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = cmdline.split(|b| *b == 0);
            let exe = args.next().unwrap_or_default();
            exe.rsplit(|b| *b == b'/').next() == Some(exe_name.as_bytes())
                && String::from_utf8_lossy(&cmdline).contains(dir.as_ref())
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// A mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub point: String,
    pub fstype: String,
}

/// Mounts at or below `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> Vec<Mount> {
    let prefix = dir.to_string_lossy().trim_end_matches('/').to_string();
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<Mount> = text
        .lines()
        .filter_map(|line| {
            // id parent major:minor root point options [optional...] - fstype source super
            let fields: Vec<&str> = line.split(' ').collect();
            let point = unescape(fields.get(4)?);
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?.to_string();
            (point == prefix || point.starts_with(&format!("{prefix}/")))
                .then_some(Mount { point, fstype })
        })
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.point.len()));
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Names of the entries of `dir`; empty when it does not exist.
pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let text = "Rss:                1204 kB\nPss:                 301 kB\n\
                    Private_Clean:         4 kB\nPrivate_Dirty:       290 kB\n";
        assert_eq!(field_kib(text, "Pss:"), Some(301));
        assert_eq!(field_kib(text, "Swap:"), None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn this_process_is_found_and_measured() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(fd_count(me).unwrap() >= 3);
    }
}

/// utime + stime of `pid` (fields 14 and 15 of /proc/<pid>/stat), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu_ticks(&stat)
}

fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields count from its end.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

pub fn ticks_per_second() -> f64 {
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

#[cfg(test)]
mod cpu_tests {
    #[test]
    fn cpu_ticks_count_from_the_end_of_the_name() {
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(super::stat_cpu_ticks(stat), Some(12));
    }
}
