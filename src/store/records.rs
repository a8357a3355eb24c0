//! The records berth keeps, one table each.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::Record;
use crate::domain::config::{ContainerConfig, SandboxConfig};
use crate::domain::{ContainerPhase, ProcessUser, SandboxPhase};

/// An OCI content descriptor, as far as berth needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// A pulled or imported image, keyed by its id (the config digest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// The platform manifest the image was unpacked from.
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// Chain IDs of the layer snapshots, base first.
    pub chain_ids: Vec<String>,
    /// Every blob the image holds on to: indexes, manifest, config, layers.
    pub blobs: Vec<String>,
    /// Sum of the blob sizes, as the registry serves them.
    pub size: u64,
    /// The config's `User`, verbatim.
    pub user: String,
    pub pinned: bool,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
}

impl Record for ImageRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("images");
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// A verified blob in `content/blobs/sha256/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRecord {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    pub committed_at: i64,
}

impl Record for ContentRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("content");
    fn key(&self) -> String {
        self.digest.clone()
    }
}

/// An unpacked layer in `snapshots/<id>/fs`, keyed by its chain ID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub chain_id: String,
    pub id: u64,
    pub parent: Option<String>,
    pub diff_id: String,
    /// Bytes of file content unpacked.
    pub size: u64,
    /// Allocated bytes and inodes of the unpacked tree, measured once: a committed
    /// snapshot never changes.
    #[serde(default)]
    pub disk_bytes: u64,
    #[serde(default)]
    pub inodes: u64,
    pub created_at: i64,
}

impl Record for SnapshotRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("snapshots");
    fn key(&self) -> String {
        self.chain_id.clone()
    }
}

/// Something that keeps content and snapshots from garbage collection (a container's
/// image, say) although no image record refers to them any more.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: String,
    pub blobs: Vec<String>,
    pub chain_ids: Vec<String>,
    pub created_at: i64,
    /// Nanoseconds since the epoch after which the lease no longer holds; 0 for never.
    #[serde(default)]
    pub expires_at: i64,
}

impl LeaseRecord {
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at != 0 && self.expires_at < now
    }
}

impl Record for LeaseRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("leases");
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// A pod sandbox, keyed by its id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxRecord {
    pub id: String,
    pub config: SandboxConfig,
    pub phase: SandboxPhase,
    pub created_at: i64,
    /// The runtime handler's name, and the shim binary it resolved to.
    pub runtime_handler: String,
    /// The handler as RunPodSandbox named it (`""` for the default), echoed
    /// by PodSandboxStatus; `None` in records from a berth that did not keep it.
    pub requested_handler: Option<String>,
    pub shim: std::path::PathBuf,
    /// `<state>/pods/<id>`: the bundle and the pod's files.
    pub bundle: std::path::PathBuf,
    /// The pinned network namespace; `None` with host network.
    pub netns: Option<std::path::PathBuf>,
    /// Whether a tmpfs is mounted at `<bundle>/shm`.
    pub shm_mounted: bool,
    /// The pod's addresses, first the primary one.
    pub ips: Vec<std::net::IpAddr>,
    /// The CNI ADD result, for verbose status.
    pub cni_result: Option<serde_json::Value>,
    /// The infra process, as the shim reported it.
    pub pid: u32,
    /// The `sandbox_image` the infra container runs from (its writable layer is
    /// leased under the pod's id); empty for the built-in pause.
    pub image_id: String,
}

impl SandboxRecord {
    /// The handler as the client named it; the resolved name for older records.
    pub fn handler_as_requested(&self) -> &str {
        self.requested_handler
            .as_deref()
            .unwrap_or(&self.runtime_handler)
    }
}

impl Record for SandboxRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("sandboxes");
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// A container, keyed by its id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    pub phase: ContainerPhase,
    /// The image's id, and the name the kubelet asked for.
    pub image_id: String,
    pub image_name: String,
    /// `<state>/containers/<id>`: the bundle, its fifos.
    pub bundle: std::path::PathBuf,
    /// The log file: the pod's log directory joined with the container's log path.
    pub log_path: Option<std::path::PathBuf>,
    /// The image's STOPSIGNAL, if any.
    pub stop_signal: String,
    pub pid: u32,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    /// Completed, Error, OOMKilled, or Unknown.
    pub reason: String,
    pub message: String,
    /// Who the container's process runs as, as resolved into its spec.
    pub user: Option<ProcessUser>,
    /// Ids of the images its image volumes (CRI `Mount.image`) mount: held against
    /// RemoveImage until the container is removed.
    pub image_volumes: Vec<String>,
}

impl Record for ContainerRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("containers");
    fn key(&self) -> String {
        self.id.clone()
    }
}
