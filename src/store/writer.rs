//! Group commit: one thread owns the durable writes of [`Batch`]es, so the
//! async executor never waits on an fsync, and calls that commit at the same
//! time share one transaction and one fsync.
//!
//! Each batch is still atomic (a group is one transaction, all or nothing),
//! and its caller hears back only once the group's commit is durable, so the
//! contract of [`super::Store::write`] holds: durable before the call answers.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

use redb::{Database, TableDefinition};
use tokio::sync::oneshot;

use super::Record;
use crate::error::{Error, Result};

/// Batches committed in one transaction at most: enough for every call a
/// node's kubelet makes at once, small enough that one group's transaction
/// stays a few hundred KiB.
const MAX_GROUP: usize = 64;

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

enum Op {
    Put {
        table: Table,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: String,
    },
}

/// Records to put and delete together, encoded up front so that applying them
/// cannot fail on one batch's content and spoil its group.
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn put<T: Record>(&mut self, record: &T) -> Result<&mut Batch> {
        let value = serde_json::to_vec(record)
            .map_err(|e| Error::Internal(format!("encoding record: {e}")))?;
        self.ops.push(Op::Put {
            table: T::TABLE,
            key: record.key(),
            value,
        });
        Ok(self)
    }

    /// Removes a record; a missing one is not an error.
    pub fn delete<T: Record>(&mut self, key: &str) -> &mut Batch {
        self.ops.push(Op::Delete {
            table: T::TABLE,
            key: key.to_string(),
        });
        self
    }

    /// Moves `other`'s operations after this batch's.
    pub fn append(&mut self, mut other: Batch) {
        self.ops.append(&mut other.ops);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn apply(&self, txn: &redb::WriteTransaction) -> Result<()> {
        for op in &self.ops {
            match op {
                Op::Put { table, key, value } => {
                    txn.open_table(*table)?
                        .insert(key.as_str(), value.as_slice())?;
                }
                Op::Delete { table, key } => {
                    txn.open_table(*table)?.remove(key.as_str())?;
                }
            }
        }
        Ok(())
    }
}

/// A batch waiting for its group's commit, and who to tell.
pub(super) struct Job {
    batch: Batch,
    /// Whether the caller must hear back only once the batch is on disk.
    durable: bool,
    done: oneshot::Sender<Result<()>>,
}

/// Where a caller hears its batch's outcome.
pub(super) type Done = oneshot::Receiver<Result<()>>;

impl Job {
    pub(super) fn new(batch: Batch, durable: bool) -> (Job, Done) {
        let (done, rx) = oneshot::channel();
        (
            Job {
                batch,
                durable,
                done,
            },
            rx,
        )
    }
}

/// Starts the writer thread; it ends when every sender is gone.
pub(super) fn spawn(
    db: Arc<Database>,
) -> std::io::Result<(Sender<Job>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("berth-store".into())
        .spawn(move || run(&db, &rx))?;
    Ok((tx, handle))
}

fn run(db: &Database, jobs: &Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // The error is not Clone: each caller gets its text, as a store error.
        let result = commit_group(db, &group).map_err(|e| e.to_string());
        for job in group {
            // A caller that went away still had its batch committed.
            let _ = job.done.send(result.clone().map_err(Error::Store));
        }
    }
}

/// One transaction for the whole group, durable when it returns if any of its
/// batches must be. A group of only non-durable batches skips the fsync; the
/// next durable commit (anyone's) carries it to disk.
fn commit_group(db: &Database, group: &[Job]) -> Result<()> {
    let durable = group.iter().any(|job| job.durable);
    commit_batches(db, group.iter().map(|job| &job.batch), durable)
}

/// One batch in its own durable transaction, on the caller's thread.
pub(super) fn commit_now(db: &Database, batch: &Batch) -> Result<()> {
    commit_batches(db, [batch], true)
}

fn commit_batches<'a>(
    db: &Database,
    batches: impl IntoIterator<Item = &'a Batch>,
    durable: bool,
) -> Result<()> {
    let timer = crate::metrics::Timer::start();
    let mut txn = db.begin_write()?;
    if !durable {
        txn.set_durability(redb::Durability::None)
            .map_err(|e| Error::Store(format!("a non-durable commit: {e}")))?;
    }
    for batch in batches {
        batch.apply(&txn)?;
    }
    txn.commit()?;
    crate::metrics::store_transaction(timer.elapsed());
    Ok(())
}
