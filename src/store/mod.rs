//! The metadata store: typed records in redb tables, one write transaction per state
//! change. Values are JSON so that records can grow fields without a migration; the
//! schema version guards against a store written by a newer berth.
//!
//! Writes on a call's path go through [`Store::commit`]: a dedicated thread
//! (`writer.rs`) commits them, grouping concurrent ones, so the async executor
//! never blocks on an fsync. [`Store::write`] remains for read-modify-write
//! transactions, on blocking threads.

mod records;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::Sender;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use writer::Batch;

pub use records::{
    ContainerRecord, ContentRecord, Descriptor, ImageRecord, LeaseRecord, SandboxRecord,
    SnapshotRecord,
};

use crate::error::{Error, Result};

/// Bumped when a record changes incompatibly. Older stores are upgraded in `open`.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");

/// A record kept in its own table, keyed by a string.
pub trait Record: Serialize + DeserializeOwned {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]>;
    fn key(&self) -> String;
}

pub struct Store {
    db: Arc<Database>,
    /// The writer thread's queue and handle: taken on drop, so the thread ends
    /// and lets go of the database before the store is gone.
    writer: Option<(Sender<writer::Job>, std::thread::JoinHandle<()>)>,
}

impl Store {
    /// Opens (or creates) `meta.redb`, refusing a schema newer than this berth knows.
    pub fn open(path: &Path) -> Result<Store> {
        let db = Database::create(path)
            .map_err(|e| Error::Store(format!("opening {}: {e}", path.display())))?;
        let db = Arc::new(db);
        let writer = writer::spawn(Arc::clone(&db))
            .map_err(|e| Error::Store(format!("starting the store's writer thread: {e}")))?;
        let store = Store {
            db,
            writer: Some(writer),
        };
        store.check_schema(path)?;
        Ok(store)
    }

    /// Commits `batch` in one transaction (possibly shared with batches of
    /// concurrent calls), durable when this returns; the executor's thread is not
    /// blocked meanwhile.
    pub async fn commit(&self, batch: Batch) -> Result<()> {
        self.commit_through_writer(batch, true).await
    }

    /// Commits `batch` like [`Store::commit`] but answers before it is on disk:
    /// the next durable commit carries it there, and a crash before that loses
    /// it. Only for a change that recovery rebuilds from elsewhere when it is
    /// lost (a start the shim's task state proves), so losing it loses nothing.
    pub async fn commit_volatile(&self, batch: Batch) -> Result<()> {
        self.commit_through_writer(batch, false).await
    }

    /// Commits `batch` on the calling thread (a blocking one, never the
    /// executor's), durable when it returns, without joining a group.
    pub fn commit_here(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        writer::commit_now(&self.db, &batch)
    }

    /// Hands `batch` to the writer thread and waits for its group's commit.
    async fn commit_through_writer(&self, batch: Batch, durable: bool) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (job, done) = writer::Job::new(batch, durable);
        match &self.writer {
            Some((queue, _)) if queue.send(job).is_ok() => {}
            _ => return Err(Error::Store("the store's writer thread is gone".into())),
        }
        done.await.map_err(|_| writer_ended())?
    }

    fn check_schema(&self, path: &Path) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(Error::FailedPrecondition(format!(
                        "metadata store {} has schema version {v}, but this berth knows \
                         versions up to {SCHEMA_VERSION}; run a newer berth or move the root away",
                        path.display()
                    )));
                }
                Some(v) if v == SCHEMA_VERSION => {}
                _ => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
            }
            // Create every table so that readers never meet a missing one.
            txn.open_table(SETTINGS)?;
            txn.open_table(ImageRecord::TABLE)?;
            txn.open_table(ContentRecord::TABLE)?;
            txn.open_table(SnapshotRecord::TABLE)?;
            txn.open_table(LeaseRecord::TABLE)?;
            txn.open_table(SandboxRecord::TABLE)?;
            txn.open_table(ContainerRecord::TABLE)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Every record of one kind.
    pub fn all<T: Record>(&self) -> Result<Vec<T>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(T::TABLE)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            out.push(decode(key.value(), value.value())?);
        }
        Ok(out)
    }

    pub fn get<T: Record>(&self, key: &str) -> Result<Option<T>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(T::TABLE)?;
        let value = table.get(key)?;
        value.map(|v| decode(key, v.value())).transpose()
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SETTINGS)?;
        Ok(table.get(key)?.map(|v| v.value().to_string()))
    }

    /// Runs `f` in one write transaction, committed (durably) only if `f` succeeds.
    pub fn write<R>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<R>) -> Result<R> {
        let timer = crate::metrics::Timer::start();
        let txn = self.db.begin_write()?;
        let mut tx = Tx { txn: &txn };
        let out = f(&mut tx)?;
        txn.commit()?;
        crate::metrics::store_transaction(timer.elapsed());
        Ok(out)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some((queue, thread)) = self.writer.take() {
            drop(queue);
            let _ = thread.join();
        }
    }
}

/// A write transaction with typed helpers.
pub struct Tx<'a> {
    txn: &'a WriteTransaction,
}

impl Tx<'_> {
    pub fn put<T: Record>(&mut self, record: &T) -> Result<()> {
        let bytes = serde_json::to_vec(record)
            .map_err(|e| Error::Internal(format!("encoding record: {e}")))?;
        let mut table = self.txn.open_table(T::TABLE)?;
        table.insert(record.key().as_str(), bytes.as_slice())?;
        Ok(())
    }

    /// Removes a record; a missing one is not an error.
    pub fn delete<T: Record>(&mut self, key: &str) -> Result<()> {
        let mut table = self.txn.open_table(T::TABLE)?;
        table.remove(key)?;
        Ok(())
    }

    pub fn get<T: Record>(&mut self, key: &str) -> Result<Option<T>> {
        let table = self.txn.open_table(T::TABLE)?;
        let value = table.get(key)?;
        value.map(|v| decode(key, v.value())).transpose()
    }

    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<()> {
        let mut table = self.txn.open_table(SETTINGS)?;
        table.insert(key, value)?;
        Ok(())
    }
}

fn writer_ended() -> Error {
    Error::Store("the store's writer thread ended mid-commit".into())
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Store(format!("record {key:?} cannot be read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str) -> ImageRecord {
        ImageRecord {
            id: id.to_string(),
            repo_tags: vec!["docker.io/library/a:1".into()],
            ..Default::default()
        }
    }

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = Store::open(&path).unwrap();
            store
                .write(|tx| {
                    tx.put(&image("sha256:aa"))?;
                    tx.put(&image("sha256:bb"))?;
                    tx.set_setting("pod_cidr", "10.1.0.0/16")
                })
                .unwrap();
            store
                .write(|tx| tx.delete::<ImageRecord>("sha256:bb"))
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let all: Vec<ImageRecord> = store.all().unwrap();
        assert_eq!(all, vec![image("sha256:aa")]);
        assert_eq!(
            store.setting("pod_cidr").unwrap().as_deref(),
            Some("10.1.0.0/16")
        );
    }

    #[test]
    fn failed_transaction_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("meta.redb")).unwrap();
        let r: Result<()> = store.write(|tx| {
            tx.put(&image("sha256:aa"))?;
            Err(Error::InvalidArgument("no".into()))
        });
        assert!(r.is_err());
        assert!(store.all::<ImageRecord>().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_commits_all_land_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = Arc::new(Store::open(&path).unwrap());
            let commits: Vec<_> = (0..32)
                .map(|i| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        let mut batch = Batch::new();
                        batch.put(&image(&format!("sha256:{i:02}")))?;
                        store.commit(batch).await
                    })
                })
                .collect();
            for commit in commits {
                commit.await.unwrap().unwrap();
            }
            // Visible as soon as the commit answers.
            assert_eq!(store.all::<ImageRecord>().unwrap().len(), 32);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.all::<ImageRecord>().unwrap().len(), 32);
    }

    #[tokio::test]
    async fn a_batch_puts_and_deletes_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("meta.redb")).unwrap();
        store.write(|tx| tx.put(&image("sha256:old"))).unwrap();
        let mut batch = Batch::new();
        batch.put(&image("sha256:new")).unwrap();
        batch.delete::<ImageRecord>("sha256:old");
        store.commit(batch).await.unwrap();
        assert_eq!(
            store.all::<ImageRecord>().unwrap(),
            vec![image("sha256:new")]
        );
    }

    #[tokio::test]
    async fn a_volatile_commit_is_seen_at_once_and_carried_by_the_next_durable_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = Store::open(&path).unwrap();
            let mut volatile = Batch::new();
            volatile.put(&image("sha256:aa")).unwrap();
            store.commit_volatile(volatile).await.unwrap();
            assert!(store.get::<ImageRecord>("sha256:aa").unwrap().is_some());
            let mut durable = Batch::new();
            durable.put(&image("sha256:bb")).unwrap();
            store.commit(durable).await.unwrap();
        }
        let store = Store::open(&path).unwrap();
        let mut ids: Vec<String> = store
            .all::<ImageRecord>()
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["sha256:aa", "sha256:bb"]);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(&path).err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("schema version 2"), "{msg}");
    }
}
