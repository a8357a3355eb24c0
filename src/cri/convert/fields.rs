//! Checks of single request fields against what the kernel and the runtime accept,
//! before anything reaches them. Each check names its field and quotes at most a
//! few hundred bytes of the value (`error::quote`).
//!
//! Paths are taken only in forms that cannot resolve against berthd's working
//! directory or climb out of where they belong: host paths are absolute, a log path
//! is relative to the pod's log directory with no `..`, a cgroup parent is absolute
//! (or a systemd slice) with no `..`.

use std::path::{Component, Path};

use crate::error::{Error, quote};

/// Longest path taken from a request, as the kernel's PATH_MAX.
pub const MAX_PATH: usize = 4096;
/// Longest cpuset list taken: every CPU of a 1024-CPU machine listed one by one
/// fits; what would keep the runtime busy for seconds does not.
pub const MAX_CPUSET: usize = 4096;
/// Highest CPU or memory node number taken, as the kernel's largest NR_CPUS.
pub const MAX_CPU: u32 = 8191;
/// Longest sysctl or cgroup key and value taken.
pub const MAX_KEY: usize = 256;
pub const MAX_VALUE: usize = 4096;

fn invalid(field: &str, problem: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{field}: {problem}"))
}

fn plain(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.len() > max {
        return Err(invalid(
            field,
            format!("{} is longer than {max} bytes", quote(value)),
        ));
    }
    if value.contains('\0') {
        return Err(invalid(
            field,
            format!("{} contains a NUL byte", quote(value)),
        ));
    }
    Ok(())
}

fn has_parent_component(value: &str) -> bool {
    Path::new(value)
        .components()
        .any(|c| c == Component::ParentDir)
}

/// Longest object name taken (a Kubernetes DNS subdomain).
pub const MAX_NAME: usize = 253;
/// Longest hostname the kernel's UTS namespace takes.
pub const MAX_HOSTNAME: usize = 64;
/// Longest single argument, env entry or DNS entry taken.
pub const MAX_TEXT: usize = 128 << 10;

/// A name that ends up in paths, CNI arguments and log lines: no control
/// characters, no `/`, bounded.
pub fn name(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(invalid(field, "empty"));
    }
    plain(field, value, MAX_NAME)?;
    if value.chars().any(|c| c.is_control() || c == '/') {
        return Err(invalid(
            field,
            format!("{} contains '/' or a control character", quote(value)),
        ));
    }
    Ok(())
}

/// The pod's hostname: empty (the node's) or what sethostname(2) takes.
pub fn hostname(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Ok(());
    }
    plain(field, value, MAX_HOSTNAME)?;
    if value
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '/')
    {
        return Err(invalid(
            field,
            format!("{} is not a hostname", quote(value)),
        ));
    }
    Ok(())
}

/// Text passed to the kernel as a C string (arguments, env): no NUL, bounded.
pub fn text(field: &str, value: &str) -> Result<(), Error> {
    plain(field, value, MAX_TEXT)
}

/// One entry of resolv.conf: a single word, so no request adds lines of its own.
pub fn dns_word(field: &str, value: &str) -> Result<(), Error> {
    plain(field, value, MAX_NAME)?;
    if value.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(field, format!("{} is not one word", quote(value))));
    }
    Ok(())
}

/// An environment variable: a name without `=`, and values without NUL.
pub fn env(field: &str, key: &str, value: &str) -> Result<(), Error> {
    if key.is_empty() || key.contains('=') {
        return Err(invalid(
            field,
            format!("{} is not a variable name", quote(key)),
        ));
    }
    plain(field, key, MAX_TEXT)?;
    plain(&format!("{field}[{}]", quote(key)), value, MAX_TEXT)
}

/// A path inside the container: absolute.
pub fn container_path(field: &str, value: &str) -> Result<(), Error> {
    host_path(field, value)
}

/// A host path: absolute, so it never resolves against berthd's working directory.
pub fn host_path(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(invalid(field, "empty"));
    }
    plain(field, value, MAX_PATH)?;
    if !value.starts_with('/') {
        return Err(invalid(
            field,
            format!("{} is not an absolute path", quote(value)),
        ));
    }
    Ok(())
}

/// The pod's log directory: empty (no logs) or absolute.
pub fn log_directory(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Ok(());
    }
    host_path(field, value)
}

/// A container's log path: empty, or relative to the pod's log directory and
/// staying inside it.
pub fn log_path(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Ok(());
    }
    plain(field, value, MAX_PATH)?;
    if value.starts_with('/') {
        return Err(invalid(
            field,
            format!(
                "{} is absolute; it must be relative to the pod's log_directory",
                quote(value)
            ),
        ));
    }
    if has_parent_component(value) {
        return Err(invalid(
            field,
            format!("{} leaves the pod's log_directory", quote(value)),
        ));
    }
    if matches!(value.rsplit('/').next(), Some("" | "." | "..")) {
        return Err(invalid(
            field,
            format!("{} does not name a file", quote(value)),
        ));
    }
    Ok(())
}

/// A cgroup parent: empty, a systemd slice name, or an absolute cgroup path that
/// stays below the hierarchy's root.
pub fn cgroup_parent(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Ok(());
    }
    plain(field, value, MAX_PATH)?;
    let slice = value.ends_with(".slice") && !value.contains('/');
    if !slice && !value.starts_with('/') {
        return Err(invalid(
            field,
            format!(
                "{} is neither an absolute cgroup path nor a systemd slice",
                quote(value)
            ),
        ));
    }
    if has_parent_component(value) {
        return Err(invalid(field, format!("{} contains \"..\"", quote(value))));
    }
    Ok(())
}

/// A cpuset list as the kernel parses it: `N` or `N-M` items, comma-separated.
pub fn cpuset(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Ok(());
    }
    plain(field, value, MAX_CPUSET)?;
    let bad = |why: &str| invalid(field, format!("{} is not a cpu list: {why}", quote(value)));
    let number = |s: &str| -> Result<u32, Error> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expected numbers and ranges like \"0-3,6\""));
        }
        match s.parse::<u32>() {
            Ok(n) if n <= MAX_CPU => Ok(n),
            _ => Err(bad(&format!("numbers go up to {MAX_CPU}"))),
        }
    };
    for item in value.trim_end_matches('\n').split(',') {
        match item.split_once('-') {
            Some((low, high)) => {
                if number(low)? > number(high)? {
                    return Err(bad("a range ends before it starts"));
                }
            }
            None => {
                number(item)?;
            }
        }
    }
    Ok(())
}

/// A hugepage size as the kernel names it in cgroup files: digits and KB, MB or GB.
pub fn page_size(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(invalid(field, "empty"));
    }
    plain(field, value, MAX_KEY)?;
    let digits = value.trim_end_matches(['K', 'M', 'G', 'B']);
    let unit = &value[digits.len()..];
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !matches!(unit, "KB" | "MB" | "GB")
    {
        return Err(invalid(
            field,
            format!("{} is not a page size like \"2MB\"", quote(value)),
        ));
    }
    Ok(())
}

/// Which namespace a sysctl belongs to, as runc decides whether a container may set
/// it: only namespaced ones, and only when the pod has that namespace of its own.
pub enum SysctlNamespace {
    Ipc,
    Network,
    Uts,
}

/// The namespace of `key` (dots or slashes), or an error naming the field when
/// the sysctl is not namespaced and would change the whole node.
pub fn sysctl_namespace(field: &str, key: &str) -> Result<SysctlNamespace, Error> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let key = key.replace('/', ".");
    if IPC.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
        Ok(SysctlNamespace::Ipc)
    } else if key.starts_with("net.") {
        Ok(SysctlNamespace::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Ok(SysctlNamespace::Uts)
    } else {
        Err(invalid(
            field,
            format!("{} is not a namespaced sysctl a pod may set", quote(&key)),
        ))
    }
}

/// A sysctl or cgroup file name: a kernel name, never a path out of its directory.
pub fn kernel_key(field: &str, key: &str, value: &str) -> Result<(), Error> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && !key.starts_with('/')
        && !has_parent_component(key)
        && !key.split(['.', '/']).any(|part| part.is_empty());
    if !ok {
        return Err(invalid(
            field,
            format!("{} is not a valid name", quote(key)),
        ));
    }
    plain(&format!("{field}[{}]", quote(key)), value, MAX_VALUE)
}

/// CFS periods and quotas the kernel takes, in microseconds (1 ms to 1 s periods,
/// quotas of at least 1 ms).
pub const CPU_PERIOD_US: std::ops::RangeInclusive<i64> = 1_000..=1_000_000;
pub const MIN_CPU_QUOTA_US: i64 = 1_000;
/// The kernel's largest CFS runtime (2^44 - 1, in its bandwidth units).
pub const MAX_CPU_QUOTA_US: i64 = (1 << 44) - 1;
/// cgroup v1 cpu.shares bounds (the kernel clamps silently; a kubelet sends 2 and up).
pub const CPU_SHARES: std::ops::RangeInclusive<i64> = 2..=262_144;
/// The smallest memory limit taken, as CRI-O's: below it the container's own
/// runtime setup does not fit, and runc fails with a cgroup error instead.
pub const MIN_MEMORY_LIMIT: i64 = 12 << 20;

/// CPU and memory quantities the kernel takes, checked before the runtime sees
/// them; zero means "not set" for each (and -1 "no limit" for quota and swap).
pub fn cpu_and_memory(
    field: &dyn Fn(&str) -> String,
    r: &k8s_cri::v1::LinuxContainerResources,
) -> Result<(), Error> {
    if r.cpu_period != 0 && !CPU_PERIOD_US.contains(&r.cpu_period) {
        return Err(invalid(
            &field("cpu_period"),
            format!("{} is outside [1000, 1000000] microseconds", r.cpu_period),
        ));
    }
    if r.cpu_quota > 0 && !(MIN_CPU_QUOTA_US..=MAX_CPU_QUOTA_US).contains(&r.cpu_quota) {
        return Err(invalid(
            &field("cpu_quota"),
            format!(
                "{} is outside [{MIN_CPU_QUOTA_US}, {MAX_CPU_QUOTA_US}] microseconds",
                r.cpu_quota
            ),
        ));
    }
    if r.cpu_shares != 0 && !CPU_SHARES.contains(&r.cpu_shares) {
        return Err(invalid(
            &field("cpu_shares"),
            format!("{} is outside [2, 262144]", r.cpu_shares),
        ));
    }
    if r.memory_limit_in_bytes != 0 && r.memory_limit_in_bytes < MIN_MEMORY_LIMIT {
        return Err(invalid(
            &field("memory_limit_in_bytes"),
            format!(
                "{} is below the minimum of {MIN_MEMORY_LIMIT} bytes",
                r.memory_limit_in_bytes
            ),
        ));
    }
    if r.memory_swap_limit_in_bytes > 0 && r.memory_limit_in_bytes == 0 {
        return Err(invalid(
            &field("memory_swap_limit_in_bytes"),
            "set without memory_limit_in_bytes: it counts memory and swap together",
        ));
    }
    if r.memory_swap_limit_in_bytes > 0 && r.memory_swap_limit_in_bytes < r.memory_limit_in_bytes {
        return Err(invalid(
            &field("memory_swap_limit_in_bytes"),
            format!(
                "{} is below memory_limit_in_bytes ({}): it counts memory and swap together",
                r.memory_swap_limit_in_bytes, r.memory_limit_in_bytes
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(host_path("f", "/data").is_ok());
        for bad in ["", "data", "./data", "/da\0ta"] {
            assert!(host_path("f", bad).is_err(), "{bad:?}");
        }
        assert!(log_path("f", "app/0.log").is_ok());
        for bad in [
            "/etc/cron.d/x",
            "../../x.log",
            "a/../../x",
            "a\0",
            "dir/",
            ".",
            "a/.",
        ] {
            assert!(log_path("f", bad).is_err(), "{bad:?}");
        }
        for good in ["", "/kubepods/burstable/pod1", "kubepods-burstable.slice"] {
            assert!(cgroup_parent("f", good).is_ok(), "{good:?}");
        }
        for bad in ["kubepods", "/kubepods/../../x", "a/b.slice", "../x.slice"] {
            assert!(cgroup_parent("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpusets() {
        for good in ["", "0", "0-3", "0-3,6,8-9", "1\n"] {
            assert!(cpuset("f", good).is_ok(), "{good:?}");
        }
        for bad in ["a", "3-1", "0,,1", "-1", "99999", "0-", "1 2"] {
            assert!(cpuset("f", bad).is_err(), "{bad:?}");
        }
        let huge = "0,".repeat(30_000);
        let err = cpuset("linux.resources.cpuset_cpus", &huge)
            .unwrap_err()
            .to_string();
        assert!(
            err.len() < 400,
            "the message quotes the value in full: {} bytes",
            err.len()
        );
        assert!(err.contains("cpuset_cpus"), "{err}");
    }

    #[test]
    fn keys_and_sizes() {
        assert!(page_size("f", "2MB").is_ok());
        assert!(page_size("f", "1GB").is_ok());
        for bad in ["", "2M", "MB", "2XB", "-2MB"] {
            assert!(page_size("f", bad).is_err(), "{bad:?}");
        }
        assert!(kernel_key("f", "net.ipv4.ip_forward", "1").is_ok());
        assert!(kernel_key("f", "memory.high", "max").is_ok());
        for bad in ["", "../x", "a/../b", "/abs", "a..b", "a b"] {
            assert!(kernel_key("f", bad, "1").is_err(), "{bad:?}");
        }
    }
}
