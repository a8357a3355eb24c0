//! A read/write lock per object id (pod, container) that forgets itself once
//! nobody holds or waits for it. A map of locks pruned only by the call that
//! removes the object keeps an entry for every id that calls raced on (a caller
//! still waiting when the remover checks), and grows without bound under load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

type Lock = Arc<RwLock<()>>;
type Map = Arc<Mutex<HashMap<String, Lock>>>;

/// Locks by id; cloning shares them.
#[derive(Default, Clone)]
pub struct IdLocks {
    locks: Map,
}

/// Held shared (`read`) or exclusively (`write`); dropping it releases the lock and
/// forgets it if nobody else wants it.
pub struct IdGuard {
    held: Option<Held>,
    key: String,
    locks: Map,
}

enum Held {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

impl IdLocks {
    /// Holds `id` exclusively: no other holder, shared or not, until dropped.
    pub async fn write(&self, id: &str) -> IdGuard {
        let held = Held::Exclusive(self.entry(id).write_owned().await);
        self.guard(id, held)
    }

    /// Holds `id` shared with other `read` holders, excluding `write` ones.
    pub async fn read(&self, id: &str) -> IdGuard {
        let held = Held::Shared(self.entry(id).read_owned().await);
        self.guard(id, held)
    }

    /// How many ids have a lock now: held, waited for, or not yet pruned.
    pub fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entry(&self, id: &str) -> Lock {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    fn guard(&self, id: &str, held: Held) -> IdGuard {
        IdGuard {
            held: Some(held),
            key: id.to_string(),
            locks: Arc::clone(&self.locks),
        }
    }
}

impl Drop for IdGuard {
    fn drop(&mut self) {
        drop(self.held.take());
        // Waiters cloned the lock under the same map mutex, so a count of one
        // (the map's) means nobody holds or waits for it.
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lock_is_forgotten_once_its_last_waiter_is_done() {
        let locks = IdLocks::default();
        let first = locks.write("a").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.read("a").await;
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(locks.len(), 1);
        // Dropped while someone waits: the entry stays for the waiter...
        drop(first);
        assert_eq!(locks.len(), 1);
        waiter.await.unwrap();
        // ...who forgets it when done.
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn readers_share_and_writers_exclude() {
        let locks = IdLocks::default();
        let r1 = locks.read("p").await;
        let _r2 = locks.read("p").await;
        let pending = {
            let locks = locks.clone();
            tokio::spawn(async move { drop(locks.write("p").await) })
        };
        tokio::task::yield_now().await;
        assert!(!pending.is_finished());
        drop(r1);
        drop(_r2);
        pending.await.unwrap();
        assert!(locks.is_empty());
    }
}
