//! Every berth config key the README names exists in config/config.toml (the
//! file a test keeps equal to berthd's defaults): written `[section] key` for a
//! key in a section and `` `key` (top level) `` for one outside, as the kubelet
//! guide and the containerd migration table do.

use std::path::Path;

const WORKSPACE: &str = env!("CARGO_MANIFEST_DIR");

/// (section, key) for each reference; section "" is the top level.
fn references(readme: &str) -> Vec<(String, String)> {
    let mut refs = Vec::new();
    for span in readme.split('`').skip(1).step_by(2) {
        if let Some(rest) = span.strip_prefix('[')
            && let Some((section, key)) = rest.split_once("] ")
            && is_name(key)
            && section.split('.').all(is_name)
        {
            refs.push((section.to_string(), key.to_string()));
        }
    }
    for (i, _) in readme.match_indices("` (top level)") {
        let start = readme[..i].rfind('`').unwrap() + 1;
        let key = &readme[start..i];
        let key = key.split([' ', '=']).next().unwrap();
        if is_name(key) {
            refs.push((String::new(), key.to_string()));
        }
    }
    refs
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

#[test]
fn every_config_key_the_readme_names_exists() {
    let readme = std::fs::read_to_string(Path::new(WORKSPACE).join("README.md")).unwrap();
    let config: toml::Table =
        std::fs::read_to_string(Path::new(WORKSPACE).join("config/config.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let refs = references(&readme);
    assert!(refs.len() >= 10, "too few references found: {refs:?}");
    for (section, key) in &refs {
        let table = if section.is_empty() {
            Some(&config)
        } else {
            section
                .split('.')
                .try_fold(&config, |t, part| t.get(part).and_then(|v| v.as_table()))
        };
        assert!(
            table.is_some_and(|t| t.contains_key(key)),
            "README names [{section}] {key}, which config/config.toml does not have"
        );
    }
}

#[test]
fn the_extraction_sees_both_forms() {
    let refs = references(
        "set `[registry] config_path` and `cgroup_driver = \"systemd\"` (top level), not `[x] Y`",
    );
    assert_eq!(
        refs,
        [
            ("registry".to_string(), "config_path".to_string()),
            (String::new(), "cgroup_driver".to_string())
        ]
    );
}
