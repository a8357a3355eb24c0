//! The overlay mount that joins a container's writable snapshot to the image's
//! read-only ones: the root filesystem a shim mounts for a task.

use std::path::{Path, PathBuf};

/// A mount the shim performs for a task's root filesystem (shim v2 `Mount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The filesystem type, as mount(8) names it.
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// `upper` (with its overlay work dir `work`) over `lowers`, top first.
pub fn overlay(lowers: &[PathBuf], upper: &Path, work: &Path) -> Mount {
    let lowerdir = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    Mount {
        kind: "overlay".to_string(),
        source: "overlay".to_string(),
        options: vec![
            format!("lowerdir={lowerdir}"),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_are_joined_top_first() {
        let mount = overlay(
            &[PathBuf::from("/s/2/fs"), PathBuf::from("/s/1/fs")],
            Path::new("/s/3/fs"),
            Path::new("/s/3/work"),
        );
        assert_eq!(mount.kind, "overlay");
        assert_eq!(
            mount.options,
            [
                "lowerdir=/s/2/fs:/s/1/fs",
                "upperdir=/s/3/fs",
                "workdir=/s/3/work"
            ]
        );
    }
}
