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
        for bad in ["/etc/cron.d/x", "../../x.log", "a/../../x", "a\0"] {
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
