//! Writable container layers: an empty snapshot on top of an image's layers, and
//! the overlay mount that joins them. A lease named after the container keeps the
//! image's blobs and snapshots, and the writable one, from garbage collection until
//! the container is removed, even if the image is removed first.

use std::path::PathBuf;

use super::{ImageService, now_nanos};
use crate::error::{Error, IoContext, Result};
use crate::store::{ImageRecord, LeaseRecord, SnapshotRecord};

/// A container's root filesystem, ready for the shim to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRootfs {
    /// Overlay mount options: `lowerdir=<top>:...:<base>`, `upperdir=`, `workdir=`.
    pub options: Vec<String>,
    /// The image layers, top first: where /etc/passwd and /etc/group are found.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
}

/// The lease and snapshot key of a container's writable layer.
fn lease_id(container_id: &str) -> String {
    format!("container:{container_id}")
}

fn active_key(container_id: &str) -> String {
    format!("active:{container_id}")
}

impl ImageService {
    /// Prepares the writable layer of container `id` on `image`.
    pub async fn prepare_rootfs(&self, id: &str, image: &ImageRecord) -> Result<ContainerRootfs> {
        let lowers: Vec<PathBuf> = {
            let index = self
                .snapshot_index
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            image
                .chain_ids
                .iter()
                .rev()
                .map(|chain| {
                    index
                        .get(chain)
                        .map(|s| self.snapshots.fs_path(s.id))
                        .ok_or_else(|| {
                            Error::FailedPrecondition(format!(
                                "image {} lost its layer {chain}; pull it again",
                                image.id
                            ))
                        })
                })
                .collect::<Result<_>>()?
        };
        if lowers.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "image {} has no layers to run",
                image.id
            )));
        }
        let snapshots = self.snapshots.clone();
        let snapshot_id = tokio::task::spawn_blocking(move || -> Result<u64> {
            let staging = snapshots.stage()?;
            staging
                .add_work_dir()
                .context(|| "creating an overlay work dir".to_string())?;
            snapshots.commit(staging)
        })
        .await??;
        let key = active_key(id);
        let mut chain_ids = image.chain_ids.clone();
        chain_ids.push(key.clone());
        let lease = LeaseRecord {
            id: lease_id(id),
            blobs: image.blobs.clone(),
            chain_ids,
            created_at: now_nanos(),
            expires_at: 0,
        };
        let record = SnapshotRecord {
            chain_id: key.clone(),
            id: snapshot_id,
            parent: image.chain_ids.last().cloned(),
            created_at: now_nanos(),
            ..Default::default()
        };
        // Lease and snapshot in one transaction: a crash leaves both or neither (a
        // directory without a record is deleted at start-up).
        self.store.write(|tx| {
            tx.put(&lease)?;
            tx.put(&record)
        })?;
        self.snapshot_index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, record);
        let upper = self.snapshots.fs_path(snapshot_id);
        let work = self.snapshots.work_path(snapshot_id);
        let lowerdir = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        Ok(ContainerRootfs {
            options: vec![
                format!("lowerdir={lowerdir}"),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", work.display()),
            ],
            lowers,
            upper,
        })
    }

    /// Bytes and inodes in container `id`'s writable layer, while it has one. Walks
    /// the layer's tree: call it off the executor.
    pub fn writable_layer_usage(&self, id: &str) -> Option<(u64, u64)> {
        let snapshot = self
            .snapshot_index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&active_key(id))
            .map(|s| s.id)?;
        Some(self.snapshots.usage_of(snapshot))
    }

    /// Ends the lease of container `id` and deletes its writable layer. Only if
    /// the container outlived its image is there more to collect: then a full
    /// collection runs. (A collection per removal would read every lease each time,
    /// which grows with the number of containers.)
    pub async fn release_rootfs(&self, id: &str) -> Result<()> {
        let key = active_key(id);
        let lease = self.store.get::<LeaseRecord>(&lease_id(id))?;
        self.store.write(|tx| {
            tx.delete::<LeaseRecord>(&lease_id(id))?;
            tx.delete::<SnapshotRecord>(&key)
        })?;
        let layer = self
            .snapshot_index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        // The record is gone: a crash before the directory follows leaves a
        // directory without a record, which start-up deletes.
        if let Some(layer) = layer {
            let snapshots = self.snapshots.clone();
            tokio::task::spawn_blocking(move || snapshots.remove(layer.id)).await??;
        }
        let image_layers = lease.map(|l| {
            l.chain_ids
                .into_iter()
                .filter(|c| *c != key)
                .collect::<Vec<_>>()
        });
        let image_still_there = image_layers.is_some_and(|layers| {
            self.read_images()
                .values()
                .any(|image| image.chain_ids == layers)
        });
        if image_still_there {
            Ok(())
        } else {
            self.collect_garbage().await
        }
    }
}
