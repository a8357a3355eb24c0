//! The image service: pulls and imports images into the content and snapshot stores,
//! keeps the image records, answers list/status, removes images and collects garbage.

pub mod archive;
mod config_view;
#[cfg(test)]
mod fuzz_tests;
mod gc;
pub mod hosts;
mod import;
mod inspect;
mod locks;
pub mod oci;
mod pinned;
mod progress;
mod pull;
pub mod reference;
pub mod registry;
mod rootfs;
mod volume_holds;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub use progress::{LayerPhase, PullProgress};
pub use registry::Credentials;
pub use rootfs::ContainerRootfs;

use crate::config::RegistryConfig;
use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::snapshot::SnapshotStore;
use crate::store::{ContentRecord, ImageRecord, SnapshotRecord, Store};
use locks::{KeyedLocks, Pins};
use reference::Reference;

pub struct ImageService {
    config: RegistryConfig,
    store: Arc<Store>,
    content: Arc<ContentStore>,
    snapshots: Arc<SnapshotStore>,
    /// Image records by id, mirroring the store.
    images: RwLock<HashMap<String, ImageRecord>>,
    /// Committed snapshots by chain ID, mirroring the store. Shared with the
    /// blocking tasks that commit a snapshot and record it in one go.
    snapshot_index: Arc<Mutex<HashMap<String, SnapshotRecord>>>,
    /// One fetch or unpack per blob digest / chain ID at a time.
    locks: KeyedLocks,
    /// What pulls under way rely on; garbage collection leaves it alone.
    pins: Pins,
    /// Layer unpacks running at once, across all pulls and imports.
    unpacks: tokio::sync::Semaphore,
    /// Normalised references of the images reported pinned (`pinned.rs`).
    pinned: Vec<String>,
    /// Images mounted by containers' image volumes: not removable.
    volume_holds: volume_holds::VolumeHolds,
}

/// Disk usage of the image stores.
#[derive(Debug, Clone, Default)]
pub struct FsUsage {
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
    /// The part of `used_bytes` and `inodes_used` in writable layers: the
    /// containers' filesystem, which ImageFsInfo reports on its own.
    pub writable_bytes: u64,
    pub writable_inodes: u64,
}

/// How a status or remove call named an image.
enum Named {
    Id,
    Tag(String),
    Digest,
}

impl ImageService {
    /// Loads the image stores under `root` and repairs what a crash left half done.
    pub fn open(root: &Path, config: RegistryConfig, store: Arc<Store>) -> Result<ImageService> {
        let content = ContentStore::open(&root.join("content"))?;
        recover_content(&store, &content)?;
        let snapshot_records: Vec<SnapshotRecord> = store.all()?;
        let (snapshots, missing) = SnapshotStore::open(&root.join("snapshots"), &snapshot_records)?;
        if !missing.is_empty() {
            tracing::warn!(
                ?missing,
                "dropping snapshot records whose directory is gone"
            );
            store.write(|tx| {
                missing
                    .iter()
                    .try_for_each(|c| tx.delete::<SnapshotRecord>(c))
            })?;
        }
        let snapshot_index: HashMap<String, SnapshotRecord> = snapshot_records
            .into_iter()
            .filter(|r| !missing.contains(&r.chain_id))
            .map(|r| (r.chain_id.clone(), r))
            .collect();
        let images = load_images(&store, &content, &snapshot_index)?;
        Ok(ImageService {
            config,
            store,
            content: Arc::new(content),
            snapshots: Arc::new(snapshots),
            images: RwLock::new(images),
            snapshot_index: Arc::new(Mutex::new(snapshot_index)),
            locks: KeyedLocks::default(),
            pins: Pins::default(),
            unpacks: tokio::sync::Semaphore::new(pull::MAX_CONCURRENT_UNPACKS),
            pinned: Vec::new(),
            volume_holds: Default::default(),
        })
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        let mut out: Vec<ImageRecord> = self
            .read_images()
            .values()
            .map(|i| self.mark_pinned(i.clone()))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Finds an image by id (`sha256:<hex>` or bare hex), tag or digest reference.
    /// Unknown images are `Ok(None)`; a malformed reference is InvalidArgument.
    pub fn get(&self, spec: &str) -> Result<Option<ImageRecord>> {
        Ok(self.lookup(spec)?.map(|(image, _)| self.mark_pinned(image)))
    }

    fn lookup(&self, spec: &str) -> Result<Option<(ImageRecord, Named)>> {
        let images = self.read_images();
        if let Some(id) = as_image_id(spec) {
            return Ok(images.get(&id).cloned().map(|i| (i, Named::Id)));
        }
        let reference = match Reference::parse(spec) {
            Ok(r) => r,
            Err(e) => return by_id_prefix(&images, spec).map(Some).ok_or(e.into()),
        };
        let name = reference.to_string();
        let found = images.values().find_map(|image| {
            if reference.digest.is_some() {
                image
                    .repo_digests
                    .contains(&name)
                    .then(|| (image.clone(), Named::Digest))
            } else {
                image
                    .repo_tags
                    .contains(&name)
                    .then(|| (image.clone(), Named::Tag(name.clone())))
            }
        });
        // A short id, as `crictl images` prints it, also reads as a repository name.
        Ok(found.or_else(|| by_id_prefix(&images, spec)))
    }

    /// Removes an image. Named by one of several tags, only that tag goes; named by id,
    /// digest or its last tag, the image goes and its content is collected. Removing an
    /// unknown image is not an error.
    pub async fn remove(&self, spec: &str) -> Result<()> {
        let Some((image, named)) = self.lookup(spec)? else {
            return Ok(());
        };
        let untag_only = match &named {
            Named::Tag(tag) => image.repo_tags.len() > 1 && image.repo_tags.contains(tag),
            _ => false,
        };
        {
            let mut images = self.write_images();
            if untag_only {
                let Named::Tag(tag) = named else {
                    unreachable!()
                };
                let mut kept = image.clone();
                kept.repo_tags.retain(|t| *t != tag);
                self.store.write(|tx| tx.put(&kept))?;
                tracing::info!(image = %image.id, %tag, "untagged image");
                images.insert(kept.id.clone(), kept);
                return Ok(());
            }
            self.check_not_held(&image.id)?;
            self.store.write(|tx| tx.delete::<ImageRecord>(&image.id))?;
            images.remove(&image.id);
        }
        tracing::info!(image = %image.id, tags = ?image.repo_tags, "removed image");
        self.collect_garbage().await
    }

    /// Bytes and inodes used by snapshots and content, on the filesystem holding them.
    /// Committed snapshots are summed from their records (measured when unpacked), so
    /// the kubelet's frequent calls do not walk every layer's tree.
    pub async fn fs_usage(&self) -> Result<FsUsage> {
        let snapshots = self.snapshots.clone();
        let content = self.content.clone();
        let records = self.snapshot_records();
        tokio::task::spawn_blocking(move || {
            let (mut snap_bytes, mut snap_inodes) = (0, 0);
            let (mut writable_bytes, mut writable_inodes) = (0, 0);
            for r in &records {
                let (bytes, inodes) = if r.inodes == 0 {
                    snapshots.usage_of(r.id)
                } else {
                    (r.disk_bytes, r.inodes)
                };
                snap_bytes += bytes;
                snap_inodes += inodes;
                if rootfs::is_writable_layer(&r.chain_id) {
                    writable_bytes += bytes;
                    writable_inodes += inodes;
                }
            }
            let (content_bytes, blobs) = content.usage();
            FsUsage {
                mountpoint: snapshots.dir().to_path_buf(),
                used_bytes: snap_bytes + content_bytes,
                inodes_used: snap_inodes + blobs,
                writable_bytes,
                writable_inodes,
            }
        })
        .await
        .map_err(Error::from)
    }

    /// Snapshot records by chain ID, for disk-usage reports.
    pub fn snapshot_records(&self) -> Vec<SnapshotRecord> {
        self.snapshot_index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn snapshot_store(&self) -> &SnapshotStore {
        &self.snapshots
    }

    pub fn content_store(&self) -> &ContentStore {
        &self.content
    }

    fn read_images(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, ImageRecord>> {
        self.images.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_images(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, ImageRecord>> {
        self.images.write().unwrap_or_else(|e| e.into_inner())
    }

    fn has_snapshot(&self, chain_id: &str) -> bool {
        self.snapshot_index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(chain_id)
    }
}

/// `sha256:<64 hex>` or a bare 64-hex string names an image id.
fn as_image_id(spec: &str) -> Option<String> {
    let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// The one image whose id starts with `prefix` (at least 12 hex digits).
fn by_id_prefix(
    images: &HashMap<String, ImageRecord>,
    prefix: &str,
) -> Option<(ImageRecord, Named)> {
    let hex = prefix.strip_prefix("sha256:").unwrap_or(prefix);
    if hex.len() < 12 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut matching = images
        .values()
        .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex));
    match (matching.next(), matching.next()) {
        (Some(image), None) => Some((image.clone(), Named::Id)),
        _ => None,
    }
}

/// Makes content records and blob files agree. A blob file without a record is
/// left by a crash between the commit and the record; it is adopted only if its
/// content still has its digest (a file whose data a crash lost is deleted, and the
/// next pull fetches it again). A record without its file is dropped.
fn recover_content(store: &Store, content: &ContentStore) -> Result<()> {
    let records: HashMap<String, ContentRecord> = store
        .all::<ContentRecord>()?
        .into_iter()
        .map(|r| (r.digest.clone(), r))
        .collect();
    let files: HashSet<String> = content.blob_files()?.into_iter().collect();
    let mut adopt = Vec::new();
    for digest in files.iter().filter(|d| !records.contains_key(*d)) {
        if crate::content::digest_hex(digest).is_err() {
            continue; // not a blob's name: nothing a record could refer to
        }
        match adoptable(content, digest) {
            Some(record) => adopt.push(record),
            None => {
                tracing::warn!(%digest, "deleting a blob file with no record that fails its digest");
                content.remove(digest)?;
            }
        }
    }
    let lost: Vec<&String> = records.keys().filter(|d| !files.contains(*d)).collect();
    if adopt.is_empty() && lost.is_empty() {
        return Ok(());
    }
    tracing::info!(
        adopted = adopt.len(),
        lost = lost.len(),
        "repairing content records"
    );
    store.write(|tx| {
        adopt.iter().try_for_each(|r| tx.put(r))?;
        lost.iter().try_for_each(|d| tx.delete::<ContentRecord>(d))
    })
}

/// The record of an unrecorded blob file whose content has its digest; `None` for
/// one that does not (or that cannot be read, or is not named as a digest).
fn adoptable(content: &ContentStore, digest: &str) -> Option<ContentRecord> {
    if !matches!(content.verify_blob(digest), Ok(true)) {
        return None;
    }
    let size = std::fs::metadata(content.blob_path(digest).ok()?)
        .ok()?
        .len();
    Some(ContentRecord {
        digest: digest.to_string(),
        size,
        media_type: String::new(),
        committed_at: now_nanos(),
    })
}

/// Image records whose blobs and snapshots are all present; the rest are dropped with a
/// warning (pulling the image again restores it).
fn load_images(
    store: &Store,
    content: &ContentStore,
    snapshots: &HashMap<String, SnapshotRecord>,
) -> Result<HashMap<String, ImageRecord>> {
    let mut images = HashMap::new();
    let mut broken = Vec::new();
    for image in store.all::<ImageRecord>()? {
        let whole = image.blobs.iter().all(|d| content.exists(d))
            && image.chain_ids.iter().all(|c| snapshots.contains_key(c));
        if whole {
            images.insert(image.id.clone(), image);
        } else {
            tracing::warn!(image = %image.id, tags = ?image.repo_tags, "image lost content; dropping it, pull it again");
            broken.push(image.id);
        }
    }
    if !broken.is_empty() {
        store.write(|tx| {
            broken
                .iter()
                .try_for_each(|id| tx.delete::<ImageRecord>(id))
        })?;
    }
    Ok(images)
}

pub(crate) fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_are_recognised() {
        let hex = "a".repeat(64);
        assert_eq!(as_image_id(&hex), Some(format!("sha256:{hex}")));
        assert_eq!(
            as_image_id(&format!("sha256:{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(as_image_id("busybox"), None);
        assert_eq!(as_image_id("sha256:abc"), None);
    }

    #[test]
    fn unrecorded_blob_files_are_adopted_only_when_they_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("meta.redb")).unwrap();
        let content = ContentStore::open(&dir.path().join("content")).unwrap();
        let good = crate::content::sha256_digest(b"good");
        let torn = crate::content::sha256_digest(b"torn");
        content.write_blob(&good, b"good").unwrap();
        content.write_blob(&torn, b"torn").unwrap();
        // A crash lost the data of one (zeros where its bytes should be), and both
        // records.
        std::fs::write(content.blob_path(&torn).unwrap(), [0u8; 4]).unwrap();
        recover_content(&store, &content).unwrap();
        let recorded: Vec<String> = store
            .all::<ContentRecord>()
            .unwrap()
            .into_iter()
            .map(|r| r.digest)
            .collect();
        assert_eq!(recorded, vec![good.clone()]);
        assert!(content.exists(&good));
        assert!(
            !content.exists(&torn),
            "a blob that fails its digest is deleted"
        );
    }

    #[test]
    fn short_ids_resolve_when_unique() {
        let image = |id: &str| ImageRecord {
            id: format!("sha256:{id}"),
            ..Default::default()
        };
        let images: HashMap<String, ImageRecord> = [
            image(&format!("abcdef012345{}", "0".repeat(52))),
            image(&format!("abcdef012399{}", "0".repeat(52))),
        ]
        .into_iter()
        .map(|i| (i.id.clone(), i))
        .collect();
        assert!(by_id_prefix(&images, "abcdef012345").is_some());
        assert!(by_id_prefix(&images, "abcdef0123").is_none(), "too short");
        assert!(by_id_prefix(&images, "abcdef01239").is_none(), "too short");
        assert!(by_id_prefix(&images, "abcdef0123999").is_none(), "no match");
        let twin = image(&format!("abcdef012345{}", "1".repeat(52)));
        let mut more = images.clone();
        more.insert(twin.id.clone(), twin);
        assert!(by_id_prefix(&more, "abcdef012345").is_none(), "ambiguous");
    }
}
