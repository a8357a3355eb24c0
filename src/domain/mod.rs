//! The domain types of pods and containers, free of CRI, protobuf and I/O: what the
//! kubelet asked for (`config`), what an image's config contributes
//! (`image_config`), and where each object is in its life (`phase`). The store
//! persists them, `spec` turns them into OCI specs, `sandbox` and `container` act on
//! them; this module imports none of those.

pub mod config;
mod image_config;
mod phase;

use serde::{Deserialize, Serialize};

pub use image_config::ImageConfigView;
pub use phase::{ContainerPhase, SandboxPhase};

/// A process's identity: what ContainerStatus reports as `user`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}
