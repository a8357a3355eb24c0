//! Pod networking through CNI. For now: finding the network config that decides
//! whether the node's network is ready.

use std::path::{Path, PathBuf};

/// The CNI config berth would use: the first `.conflist`, `.conf` or `.json` file in
/// `conf_dir` by name, as the kubelet's CNI convention has it.
pub fn find_conf(conf_dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(conf_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut confs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    confs.sort();
    Ok(confs.into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_config_by_name_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_conf(dir.path()).unwrap(), None);
        assert_eq!(find_conf(&dir.path().join("missing")).unwrap(), None);
        std::fs::write(dir.path().join("README"), "").unwrap();
        std::fs::write(dir.path().join("20-b.conflist"), "{}").unwrap();
        std::fs::write(dir.path().join("10-a.conf"), "{}").unwrap();
        assert_eq!(
            find_conf(dir.path()).unwrap(),
            Some(dir.path().join("10-a.conf"))
        );
    }
}
