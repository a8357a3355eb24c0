//! What berth keeps of an image's config: the defaults a container's process
//! starts from, and its stop signal.

use serde::{Deserialize, Serialize};

/// What the spec needs from the image config (OCI image spec `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfigView {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// "KEY=value" entries.
    pub env: Vec<String>,
    pub working_dir: String,
    /// "name", "uid", "uid:gid", "name:group", ...; empty means root.
    pub user: String,
    /// Not used in the spec; kept here because Stop needs it from the same place.
    pub stop_signal: String,
    /// The declared volume paths (`Volumes`), as written: `container::volumes`
    /// normalises them.
    pub volumes: Vec<String>,
}
