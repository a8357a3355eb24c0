//! Writable container layers: an empty snapshot on top of an image's layers, and
//! the overlay mount that joins them. A lease named after the container keeps the
//! image's blobs and snapshots, and the writable one, from garbage collection until
//! the container is removed, even if the image is removed first.

use std::path::PathBuf;

use super::{ImageService, now_nanos};
use crate::error::{Error, IoContext, Result};
use crate::snapshot::overlay::{self, Mount};
use crate::store::{Batch, ImageRecord, LeaseRecord, SnapshotRecord};

/// A container's root filesystem, ready for the shim to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRootfs {
    /// The overlay of the writable layer on the image's.
    pub mount: Mount,
    /// The image layers, top first: where /etc/passwd and /etc/group are found.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
}

/// The lease and snapshot key of a container's writable layer.
fn lease_id(container_id: &str) -> String {
    format!("container:{container_id}")
}

fn active_key(container_id: &str) -> String {
    format!("{ACTIVE_PREFIX}{container_id}")
}

const ACTIVE_PREFIX: &str = "active:";

/// Whether the snapshot keyed `key` is a container's (or pod's) writable layer.
pub(super) fn is_writable_layer(key: &str) -> bool {
    key.starts_with(ACTIVE_PREFIX)
}

impl ImageService {
    /// Prepares the writable layer of container `id` on `image`.
    ///
    /// The image's layers are pinned before they are looked up, and the lease that
    /// keeps them is written before the pin goes, so a RemoveImage collecting at
    /// the same time either finds them pinned or leased (and keeps them) or has
    /// already deleted them (and this fails, naming the layer). The layer, its
    /// record and the lease are made in one blocking task, so a cancelled
    /// CreateContainer cannot leave a layer directory without its record.
    pub async fn prepare_rootfs(&self, id: &str, image: &ImageRecord) -> Result<ContainerRootfs> {
        self.prepare_rootfs_with(id, image, Batch::new()).await
    }

    /// [`ImageService::prepare_rootfs`], committing `with` (the caller's own
    /// records) in the same transaction as the lease and the layer's record: one
    /// durable commit where there would be two.
    pub async fn prepare_rootfs_with(
        &self,
        id: &str,
        image: &ImageRecord,
        with: Batch,
    ) -> Result<ContainerRootfs> {
        let _pin = self.pins.pin(image.chain_ids.iter().cloned());
        self.await_collections(&image.chain_ids).await;
        let lowers = self.lower_dirs(image)?;
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
            chain_id: key,
            parent: image.chain_ids.last().cloned(),
            created_at: now_nanos(),
            ..Default::default()
        };
        let (snapshots, store, index) = (
            self.snapshots.clone(),
            self.store.clone(),
            self.snapshot_index.clone(),
        );
        let snapshot_id = tokio::task::spawn_blocking(move || -> Result<u64> {
            let staging = snapshots.stage()?;
            staging
                .add_work_dir()
                .context(|| "creating an overlay work dir".to_string())?;
            let record = SnapshotRecord {
                id: snapshots.commit_unsynced(staging)?,
                ..record
            };
            // Lease and snapshot in one transaction: a crash leaves both or neither
            // (a directory without a record is deleted at start-up). Committed
            // here, on this blocking thread, not through the store's writer: a
            // hand-off there and back cost two thread wake-ups, more than the
            // fsync a group would share on a loaded node.
            let mut batch = Batch::new();
            batch.put(&lease)?.put(&record)?;
            batch.append(with);
            store.commit_here(batch)?;
            let id = record.id;
            index
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(record.chain_id.clone(), record);
            Ok(id)
        })
        .await??;
        let upper = self.snapshots.fs_path(snapshot_id);
        let work = self.snapshots.work_path(snapshot_id);
        Ok(ContainerRootfs {
            mount: overlay::overlay(&lowers, &upper, &work),
            lowers,
            upper,
        })
    }

    /// Waits out any collection holding one of `chain_ids`: the collector locks
    /// what it judged dead until it is deleted, and pins taken before its final
    /// look make it judge again. One lock at a time, so no order to keep.
    async fn await_collections(&self, chain_ids: &[String]) {
        for chain in chain_ids {
            drop(self.locks.lock(chain).await);
        }
    }

    /// The directories of `image`'s layers, top first.
    pub fn lower_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>> {
        let index = self
            .snapshot_index
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let lowers: Vec<PathBuf> = image
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
            .collect::<Result<_>>()?;
        if lowers.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "image {} has no layers to run",
                image.id
            )));
        }
        Ok(lowers)
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
    ///
    /// Releasing what was never prepared (no lease, no layer) does nothing.
    pub async fn release_rootfs(&self, id: &str) -> Result<()> {
        let key = active_key(id);
        let lease = self.store.get::<LeaseRecord>(&lease_id(id))?;
        if lease.is_none() && !self.has_snapshot(&key) {
            return Ok(());
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::store::Store;

    const LAYER: &str = "sha256:c1";
    /// Long enough for a spawned task to run up to where it waits.
    const SETTLE: Duration = Duration::from_millis(100);

    /// An image service holding one image of one layer (snapshot 1).
    fn service(dir: &std::path::Path) -> (Arc<ImageService>, ImageRecord) {
        std::fs::create_dir_all(dir.join("snapshots/1/fs")).unwrap();
        let store = Arc::new(Store::open(&dir.join("meta.redb")).unwrap());
        let image = ImageRecord {
            id: format!("sha256:{}", "1".repeat(64)),
            chain_ids: vec![LAYER.to_string()],
            ..Default::default()
        };
        let layer = SnapshotRecord {
            chain_id: LAYER.to_string(),
            id: 1,
            ..Default::default()
        };
        store
            .write(|tx| {
                tx.put(&layer)?;
                tx.put(&image)
            })
            .unwrap();
        let service = ImageService::open(dir, Default::default(), store).unwrap();
        (Arc::new(service), image)
    }

    fn prepare(
        service: &Arc<ImageService>,
        image: &ImageRecord,
    ) -> tokio::task::JoinHandle<Result<ContainerRootfs>> {
        let (service, image) = (service.clone(), image.clone());
        tokio::spawn(async move { service.prepare_rootfs("c", &image).await })
    }

    fn forget_image(service: &ImageService, image: &ImageRecord) {
        service
            .store
            .write(|tx| tx.delete::<ImageRecord>(&image.id))
            .unwrap();
        service.write_images().remove(&image.id);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_layer_a_collection_is_deleting_is_not_leased() {
        let dir = tempfile::tempdir().unwrap();
        let (service, image) = service(dir.path());
        forget_image(&service, &image);
        // A collection past its last look holds the layer's lock while it deletes.
        let collecting = service.locks.lock(LAYER).await;
        let prepared = prepare(&service, &image);
        tokio::time::sleep(SETTLE).await;
        service
            .store
            .write(|tx| tx.delete::<SnapshotRecord>(LAYER))
            .unwrap();
        service.snapshot_index.lock().unwrap().remove(LAYER);
        service.snapshots.remove(1).unwrap();
        drop(collecting);

        let err = prepared.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        assert!(err.to_string().contains(LAYER), "{err}");
        assert!(
            service
                .store
                .get::<LeaseRecord>(&lease_id("c"))
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn releasing_what_was_never_prepared_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (service, image) = service(dir.path());
        forget_image(&service, &image);
        // Cheap, as a pod whose record names no image may call it: no collection.
        service.release_rootfs("never-prepared").await.unwrap();
        assert!(service.has_snapshot(LAYER));
        // What was prepared is released, and what only it kept is collected.
        service.prepare_rootfs("c", &image).await.unwrap();
        service.release_rootfs("c").await.unwrap();
        assert!(!service.has_snapshot(LAYER));
        assert!(!service.snapshots.fs_path(1).exists());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_collection_keeps_a_layer_being_leased() {
        let dir = tempfile::tempdir().unwrap();
        let (service, image) = service(dir.path());
        forget_image(&service, &image);
        let held = service.locks.lock(LAYER).await;
        // The collection judges the layer dead and waits for its lock...
        let collection = {
            let service = service.clone();
            tokio::spawn(async move { service.collect_garbage().await })
        };
        tokio::time::sleep(SETTLE).await;
        // ...while a container is being created on it.
        let prepared = prepare(&service, &image);
        tokio::time::sleep(SETTLE).await;
        drop(held);

        collection.await.unwrap().unwrap();
        let rootfs = prepared.await.unwrap().unwrap();
        assert_eq!(rootfs.lowers, vec![service.snapshots.fs_path(1)]);
        assert!(rootfs.lowers[0].is_dir(), "the layer was collected");
        assert!(service.has_snapshot(LAYER));
    }
}
