//! Garbage collection of blobs and snapshots no image, lease or pull refers to.
//!
//! Each candidate is re-checked under its key lock, the same lock a pull holds while it
//! fetches or unpacks that key, so a pull that starts to rely on a blob while the
//! collector runs either pins it first (and it stays) or finds it gone (and fetches
//! it again); it never finds a blob that is then deleted under it. Partial downloads
//! in `content/ingest/` left for longer than [`STALE_INGEST_AGE`] go too, under the
//! same lock and only when no pull pins their digest.

use std::collections::HashSet;
use std::time::Duration;

use super::{ImageService, now_nanos};
use crate::error::Result;
use crate::store::{ContentRecord, LeaseRecord, SnapshotRecord};

/// How long what an unfinished pull committed is kept for the next attempt
/// (containerd keeps a pull's lease for 24 hours too).
const PULL_LEASE_TTL: Duration = Duration::from_secs(24 * 3600);

/// A partial download not resumed for as long as a pull's lease lives is
/// abandoned (containerd's GC removes an ingest with its expired lease too).
const STALE_INGEST_AGE: Duration = PULL_LEASE_TTL;

impl ImageService {
    pub async fn collect_garbage(&self) -> Result<()> {
        // Partial downloads are only disk space: failing to sweep them must not
        // fail the collection (or the RemoveImage that ran it).
        if let Err(e) = self.collect_stale_ingests().await {
            tracing::warn!(error = %e, "removing stale partial downloads failed");
        }
        let blobs: Vec<String> = self
            .store
            .all::<ContentRecord>()?
            .into_iter()
            .map(|r| r.digest)
            .collect();
        let snapshots: Vec<SnapshotRecord> = self.snapshot_records();
        let (live_blobs, live_snaps) = self.live_keys()?;
        let mut dead_blobs: Vec<String> = blobs
            .into_iter()
            .filter(|d| !live_blobs.contains(d) && !self.pins.is_pinned(d))
            .collect();
        let mut dead_snaps: Vec<SnapshotRecord> = snapshots
            .into_iter()
            .filter(|s| !live_snaps.contains(&s.chain_id) && !self.pins.is_pinned(&s.chain_id))
            .collect();
        if dead_blobs.is_empty() && dead_snaps.is_empty() {
            return Ok(());
        }

        // Lock the candidates in a fixed order (pulls hold one key at a time), then
        // look again: a pull may have pinned or recorded one meanwhile.
        let mut keys: Vec<String> = dead_blobs
            .iter()
            .cloned()
            .chain(dead_snaps.iter().map(|s| s.chain_id.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        let mut guards = Vec::with_capacity(keys.len());
        for key in &keys {
            guards.push(self.locks.lock(key).await);
        }
        let (live_blobs, live_snaps) = self.live_keys()?;
        dead_blobs.retain(|d| !live_blobs.contains(d) && !self.pins.is_pinned(d));
        dead_snaps
            .retain(|s| !live_snaps.contains(&s.chain_id) && !self.pins.is_pinned(&s.chain_id));

        let expired: Vec<String> = self
            .store
            .all::<LeaseRecord>()?
            .into_iter()
            .filter(|l| l.expired(now_nanos()))
            .map(|l| l.id)
            .collect();
        self.store.write(|tx| {
            expired
                .iter()
                .try_for_each(|id| tx.delete::<LeaseRecord>(id))?;
            dead_blobs
                .iter()
                .try_for_each(|d| tx.delete::<ContentRecord>(d))?;
            dead_snaps
                .iter()
                .try_for_each(|s| tx.delete::<SnapshotRecord>(&s.chain_id))
        })?;
        {
            let mut index = self
                .snapshot_index
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for s in &dead_snaps {
                index.remove(&s.chain_id);
            }
        }
        // Records are gone; a crash from here on leaves only files that recovery
        // deletes (snapshots) or adopts and a later collection deletes (blobs).
        let content = self.content.clone();
        let snapshots = self.snapshots.clone();
        let (blob_count, snap_count) = (dead_blobs.len(), dead_snaps.len());
        tokio::task::spawn_blocking(move || -> Result<()> {
            for d in &dead_blobs {
                content.remove(d)?;
            }
            for s in &dead_snaps {
                snapshots.remove(s.id)?;
            }
            Ok(())
        })
        .await??;
        drop(guards);
        tracing::info!(
            blobs = blob_count,
            snapshots = snap_count,
            "garbage collected"
        );
        Ok(())
    }

    /// Removes partial downloads older than [`STALE_INGEST_AGE`]. A pull resuming
    /// one pins its digest and holds its lock while writing, so under the lock an
    /// unpinned one that is still old is nobody's.
    async fn collect_stale_ingests(&self) -> Result<()> {
        let content = self.content.clone();
        let names =
            tokio::task::spawn_blocking(move || content.stale_ingests(STALE_INGEST_AGE)).await??;
        let mut removed = 0;
        for name in names {
            let digest = format!("sha256:{name}");
            // A pull pins before it locks: a pinned one is skipped without waiting
            // behind a download for the lock.
            if self.pins.is_pinned(&digest) {
                continue;
            }
            let _guard = self.locks.lock(&digest).await;
            if !self.pins.is_pinned(&digest)
                && self.content.remove_stale_ingest(&name, STALE_INGEST_AGE)?
            {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "removed stale partial downloads from content/ingest"
            );
        }
        Ok(())
    }

    /// Blobs and chain IDs that images and leases refer to now.
    fn live_keys(&self) -> Result<(HashSet<String>, HashSet<String>)> {
        let mut blobs = HashSet::new();
        let mut snaps = HashSet::new();
        for image in self.read_images().values() {
            blobs.extend(image.blobs.iter().cloned());
            snaps.extend(image.chain_ids.iter().cloned());
        }
        let now = now_nanos();
        for lease in self.store.all::<LeaseRecord>()? {
            if !lease.expired(now) {
                blobs.extend(lease.blobs);
                snaps.extend(lease.chain_ids);
            }
        }
        Ok((blobs, snaps))
    }

    /// Creates or replaces the lease of a pull, good for `PULL_LEASE_TTL`.
    pub(super) fn write_lease(
        &self,
        id: &str,
        blobs: Vec<String>,
        chain_ids: Vec<String>,
    ) -> Result<()> {
        let now = now_nanos();
        let lease = LeaseRecord {
            id: id.to_string(),
            blobs,
            chain_ids,
            created_at: now,
            expires_at: now + PULL_LEASE_TTL.as_nanos() as i64,
        };
        self.store.write(|tx| tx.put(&lease))
    }
}
