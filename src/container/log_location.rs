//! Where a container's log goes: `log_path` under its pod's `log_directory`,
//! both as the kubelet named them. convert/fields.rs checks their form; what
//! the filesystem has there is checked here, before anything is made, so a
//! path that cannot hold a log is the request's fault (InvalidArgument naming
//! the field), not an I/O error from deep inside CreateContainer.

use std::io;
use std::path::{Component, Path};

use crate::error::{Error, quote};

/// The longest path the kernel resolves (PATH_MAX, counting the NUL): each
/// field is bounded on its own, but the two joined may not be.
const MAX_LOG_PATH: usize = 4095;
/// The longest name of one path component (NAME_MAX).
const MAX_COMPONENT: usize = 255;

/// Checks that `log_path` under `log_directory` can be a log file: the
/// directory and every existing parent under it are directories, and the log
/// itself, if there, is not one. Empty fields mean no log: nothing to check.
pub(super) fn check(log_directory: &str, log_path: &str) -> Result<(), Error> {
    if log_directory.is_empty() || log_path.is_empty() {
        return Ok(());
    }
    let dir = Path::new(log_directory);
    let full = dir.join(log_path);
    if full.as_os_str().len() > MAX_LOG_PATH {
        return Err(Error::InvalidArgument(format!(
            "log_path: {} under log_directory is {} bytes, over the kernel's {MAX_LOG_PATH}",
            quote(log_path),
            full.as_os_str().len()
        )));
    }
    for (field, value) in [("log_directory", log_directory), ("log_path", log_path)] {
        if let Some(long) = Path::new(value)
            .components()
            .find(|c| c.as_os_str().len() > MAX_COMPONENT)
        {
            return Err(Error::InvalidArgument(format!(
                "{field}: component {} is over the kernel's {MAX_COMPONENT} bytes",
                quote(&long.as_os_str().to_string_lossy())
            )));
        }
    }
    not_a_directory("log_directory", log_directory, dir)?;
    let mut at = dir.to_path_buf();
    let components: Vec<Component> = Path::new(log_path).components().collect();
    if let Some((_file, parents)) = components.split_last() {
        for c in parents {
            at.push(c);
            not_a_directory("log_path", log_path, &at)?;
        }
    }
    if full.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "log_path: {} names a directory, not a file",
            quote(log_path)
        )));
    }
    Ok(())
}

/// Refuses `path` (part of `field`'s `value`) when something other than a
/// directory is there; a missing one is made later.
fn not_a_directory(field: &str, value: &str, path: &Path) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => Err(Error::InvalidArgument(format!(
            "{field}: {} is not a directory (in {})",
            path.display(),
            quote(value)
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // A parent that is a file shows up as ENOTDIR on the first path below it.
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(Error::InvalidArgument(format!(
            "{field}: a parent of {} is not a directory",
            path.display()
        ))),
        Err(e) => Err(Error::Io {
            context: format!("checking {field} {}", path.display()),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<(), Error>) -> String {
        match result {
            Err(Error::InvalidArgument(m)) => m.split(':').next().unwrap().to_string(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn paths_that_cannot_hold_a_log_name_their_field() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pod");
        std::fs::create_dir(&dir).unwrap();
        let file = root.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("plain"), "").unwrap();
        let d = dir.to_str().unwrap();

        assert!(check(d, "c/0.log").is_ok(), "parents made later");
        assert!(check(d, "sub/0.log").is_ok());
        assert!(check("", "x").is_ok() && check(d, "").is_ok(), "no log");
        assert_eq!(
            field_of(check(file.to_str().unwrap(), "0.log")),
            "log_directory"
        );
        let below_file = file.join("deeper");
        assert_eq!(
            field_of(check(below_file.to_str().unwrap(), "0.log")),
            "log_directory"
        );
        assert_eq!(field_of(check(d, "plain/0.log")), "log_path");
        assert_eq!(field_of(check(d, "sub")), "log_path");
        let long = "x".repeat(300);
        assert_eq!(field_of(check(d, &long)), "log_path");
        let deep = vec!["y".repeat(200); 21].join("/");
        assert_eq!(field_of(check(d, &deep)), "log_path");
    }
}
