//! The records berth keeps, one table each.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::Record;

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
