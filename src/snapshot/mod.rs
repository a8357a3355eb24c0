//! The overlayfs snapshot store: one directory per unpacked layer, `snapshots/<id>/fs`,
//! used as an overlay lower dir. A layer is unpacked into a staging directory and renamed
//! into place only when complete; the record in the metadata store is what makes it
//! exist, so recovery deletes any directory without one.

pub mod apply;
pub mod overlay;
pub mod view;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{IoContext, Result};
use crate::store::SnapshotRecord;

pub struct SnapshotStore {
    dir: PathBuf,
    next_id: AtomicU64,
}

/// Where a layer is being unpacked; removed on drop unless committed.
pub struct Staging {
    root: PathBuf,
    committed: bool,
}

impl Staging {
    /// The directory the layer's files go into.
    pub fn fs(&self) -> PathBuf {
        self.root.join("fs")
    }

    /// Overlayfs's work directory, for a writable (container) snapshot.
    pub fn add_work_dir(&self) -> std::io::Result<()> {
        fs::create_dir_all(self.root.join("work"))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

impl SnapshotStore {
    /// Opens the store and deletes whatever a crash left behind: staging directories and
    /// snapshot directories that no record names. Returns the records whose directory is
    /// gone, for the caller to drop.
    pub fn open(dir: &Path, records: &[SnapshotRecord]) -> Result<(SnapshotStore, Vec<String>)> {
        fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        let known: HashSet<u64> = records.iter().map(|r| r.id).collect();
        let mut max_id = known.iter().copied().max().unwrap_or(0);
        for entry in fs::read_dir(dir).context(|| format!("listing {}", dir.display()))? {
            let entry = entry.context(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match name.parse::<u64>() {
                Ok(id) if known.contains(&id) => max_id = max_id.max(id),
                Ok(id) => {
                    max_id = max_id.max(id);
                    tracing::info!(snapshot = id, "removing snapshot directory with no record");
                    remove_tree(&entry.path())?;
                }
                Err(_) => {
                    tracing::info!(path = %entry.path().display(), "removing leftover staging directory");
                    remove_tree(&entry.path())?;
                }
            }
        }
        let missing = records
            .iter()
            .filter(|r| !dir.join(r.id.to_string()).join("fs").is_dir())
            .map(|r| r.chain_id.clone())
            .collect();
        let store = SnapshotStore {
            dir: dir.to_path_buf(),
            next_id: AtomicU64::new(max_id + 1),
        };
        Ok((store, missing))
    }

    pub fn fs_path(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string()).join("fs")
    }

    pub fn work_path(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string()).join("work")
    }

    /// A fresh directory to unpack a layer into.
    pub fn stage(&self) -> Result<Staging> {
        let root = self
            .dir
            .join(format!("staging-{:016x}", rand::random::<u64>()));
        let fs_dir = root.join("fs");
        fs::create_dir_all(&fs_dir).context(|| format!("creating {}", root.display()))?;
        // The layer's root becomes the container's `/` (as the upper layer, or the
        // top lower one): traversable by any user the container runs as, whatever
        // berthd's umask. A layer's own `./` entry may set it otherwise.
        crate::layout::set_mode(&fs_dir, crate::layout::SHARED_DIR)?;
        Ok(Staging {
            root,
            committed: false,
        })
    }

    /// Moves a complete image layer into place and returns its id. The caller
    /// records it. The layer's files and its name are on disk before this returns,
    /// so a record written after it never names a layer a crash emptied.
    pub fn commit(&self, staging: Staging) -> Result<u64> {
        sync_filesystem(&staging.root)
            .context(|| format!("syncing snapshot {}", staging.root.display()))?;
        let id = self.commit_unsynced(staging)?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .context(|| format!("syncing {}", self.dir.display()))?;
        Ok(id)
    }

    /// The same without syncing, for a container's writable layer: it starts
    /// empty and its content is never synced, so a crash loses nothing a sync
    /// would have kept (a record whose directory is gone is dropped at start-up).
    pub fn commit_unsynced(&self, mut staging: Staging) -> Result<u64> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let target = self.dir.join(id.to_string());
        fs::rename(&staging.root, &target)
            .context(|| format!("moving snapshot into {}", target.display()))?;
        staging.committed = true;
        Ok(id)
    }

    /// Deletes a snapshot's directory; a missing one is fine.
    pub fn remove(&self, id: u64) -> Result<()> {
        remove_tree(&self.dir.join(id.to_string()))
    }

    /// Bytes (allocated blocks) and inodes used by all snapshots.
    pub fn usage(&self) -> (u64, u64) {
        tree_usage(&self.dir)
    }

    /// Bytes and inodes of one snapshot.
    pub fn usage_of(&self, id: u64) -> (u64, u64) {
        tree_usage(&self.dir.join(id.to_string()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Flushes the filesystem holding `path`: one syncfs(2) for a whole unpacked
/// layer, instead of an fsync for each of its files and directories.
fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = fs::File::open(path)?;
    // SAFETY: `dir` is an open descriptor for the duration of the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// What `du` would say: allocated bytes, each hard-linked inode counted once.
fn tree_usage(root: &Path) -> (u64, u64) {
    let mut seen = HashSet::new();
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            inodes += 1;
            bytes += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(chain: &str, id: u64) -> SnapshotRecord {
        SnapshotRecord {
            chain_id: chain.into(),
            id,
            ..Default::default()
        }
    }

    #[test]
    fn recovery_keeps_recorded_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = dir.path().join("snapshots");
        for d in ["1/fs", "2/fs", "staging-abc/fs"] {
            fs::create_dir_all(snaps.join(d)).unwrap();
        }
        fs::write(snaps.join("1/fs/file"), b"data").unwrap();
        let records = [record("sha256:a", 1), record("sha256:gone", 7)];
        let (store, missing) = SnapshotStore::open(&snaps, &records).unwrap();
        assert!(snaps.join("1/fs/file").exists());
        assert!(!snaps.join("2").exists());
        assert!(!snaps.join("staging-abc").exists());
        assert_eq!(missing, vec!["sha256:gone".to_string()]);
        // New ids never reuse a recorded one.
        let staging = store.stage().unwrap();
        fs::write(staging.fs().join("x"), b"y").unwrap();
        assert_eq!(store.commit(staging).unwrap(), 8);
        assert!(store.fs_path(8).join("x").exists());
        let (bytes, inodes) = store.usage();
        assert!(bytes > 0 && inodes >= 4, "{bytes} {inodes}");
    }

    #[test]
    fn dropped_staging_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(dir.path(), &[]).unwrap();
        let staging = store.stage().unwrap();
        let path = staging.fs();
        assert!(path.exists());
        drop(staging);
        assert!(!path.exists());
    }
}
