//! The CDI devices a node offers: every spec file of the configured directories,
//! read fresh for each CreateContainer that asks for a device (DRA drivers write
//! them just before), bounded in count and size.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::CdiError;
use super::spec::{self, ContainerEdits};

/// nvidia-ctk's spec for an 8-GPU node is well under 1 MiB; anything past this is
/// not a spec.
pub const MAX_SPEC_BYTES: u64 = 4 << 20;
/// Spec files read per directory: a directory with more is misconfigured, and
/// reading it all would stall every CreateContainer.
pub const MAX_SPEC_FILES: usize = 1024;

/// One device: where it was defined, and its edits (the file's, then its own).
#[derive(Debug, Clone)]
struct Entry {
    file: PathBuf,
    /// Index of its directory: a later directory overrides an earlier one.
    priority: usize,
    edits: Vec<ContainerEdits>,
    /// Another file of the same directory defines it too.
    conflict: Option<PathBuf>,
}

/// The devices of the spec directories, by qualified name.
#[derive(Debug, Default)]
pub struct Registry {
    devices: HashMap<String, Entry>,
    /// Spec files skipped, with why; named when a device cannot be found.
    skipped: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Registry {
    /// Reads every `*.json`, `*.yaml` and `*.yml` of `dirs`; a missing directory
    /// holds nothing, a bad file is skipped and remembered.
    pub fn load(dirs: &[PathBuf]) -> Registry {
        let mut registry = Registry {
            dirs: dirs.to_vec(),
            ..Default::default()
        };
        for (priority, dir) in dirs.iter().enumerate() {
            for file in spec_files(dir, &mut registry.skipped) {
                match read_spec(&file) {
                    Ok(spec) => registry.add(&file, priority, spec),
                    Err(e) => registry.skipped.push(format!("{}: {e}", file.display())),
                }
            }
        }
        registry
    }

    fn add(&mut self, file: &Path, priority: usize, spec: spec::SpecFile) {
        for device in spec.devices {
            let name = format!("{}={}", spec.kind, device.name);
            let entry = Entry {
                file: file.to_path_buf(),
                priority,
                edits: vec![spec.container_edits.clone(), device.container_edits],
                conflict: None,
            };
            match self.devices.get_mut(&name) {
                Some(old) if old.priority == priority => old.conflict = Some(entry.file),
                _ => {
                    self.devices.insert(name, entry);
                }
            }
        }
    }

    /// The edits of each device of `names`, in order. A device no spec defines is
    /// NotFound (it is not on this node, as an image that was never pulled); one
    /// defined twice in a directory is InvalidArgument (which one is meant is
    /// unknowable).
    pub fn resolve(&self, names: &[String]) -> Result<Vec<(String, ContainerEdits)>, CdiError> {
        let mut out = Vec::new();
        for name in names {
            let Some(entry) = self.devices.get(name) else {
                return Err(CdiError::NotFound(self.not_found(name)));
            };
            if let Some(other) = &entry.conflict {
                return Err(CdiError::Invalid(format!(
                    "CDI device {name:?} is defined in both {} and {}",
                    entry.file.display(),
                    other.display()
                )));
            }
            for edits in &entry.edits {
                if edits.intel_rdt.is_some() || !edits.net_devices.is_empty() {
                    return Err(CdiError::Invalid(format!(
                        "CDI device {name:?} ({}): intelRdt and netDevices edits are not supported",
                        entry.file.display()
                    )));
                }
                out.push((name.clone(), edits.clone()));
            }
        }
        Ok(out)
    }

    fn not_found(&self, name: &str) -> String {
        let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        let mut message = format!(
            "CDI device {name:?} is not defined by any spec in {}",
            if dirs.is_empty() {
                "(no cdi_spec_dirs configured)".to_string()
            } else {
                dirs.join(", ")
            }
        );
        if !self.skipped.is_empty() {
            message.push_str(&format!(
                "; spec files skipped: {}",
                self.skipped.join("; ")
            ));
        }
        message
    }
}

/// The spec files of `dir`, by name, at most [`MAX_SPEC_FILES`].
fn spec_files(dir: &Path, skipped: &mut Vec<String>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            skipped.push(format!("{}: {e}", dir.display()));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "json" || x == "yaml" || x == "yml")
        })
        .take(MAX_SPEC_FILES + 1)
        .collect();
    if files.len() > MAX_SPEC_FILES {
        skipped.push(format!(
            "{}: more than {MAX_SPEC_FILES} spec files; only the first read",
            dir.display()
        ));
        files.truncate(MAX_SPEC_FILES);
    }
    files.sort();
    files
}

fn read_spec(path: &Path) -> Result<spec::SpecFile, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(format!("larger than {MAX_SPEC_BYTES} bytes"));
    }
    let yaml = path.extension().is_some_and(|x| x != "json");
    spec::parse(&bytes, yaml)
}
