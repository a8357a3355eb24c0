//! The metadata store: typed records in redb tables, one write transaction per state
//! change. Values are JSON so that records can grow fields without a migration; the
//! schema version guards against a store written by a newer berth.

mod records;

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

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
    db: Database,
}

impl Store {
    /// Opens (or creates) `meta.redb`, refusing a schema newer than this berth knows.
    pub fn open(path: &Path) -> Result<Store> {
        let db = Database::create(path)
            .map_err(|e| Error::Store(format!("opening {}: {e}", path.display())))?;
        let store = Store { db };
        store.check_schema(path)?;
        Ok(store)
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
