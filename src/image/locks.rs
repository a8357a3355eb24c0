//! Small concurrency helpers for pulls: a lock per key (so that one blob or one layer
//! is fetched or unpacked once however many pulls want it) and pins that keep what a
//! pull is working on safe from garbage collection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

pub struct KeyGuard<'a> {
    owner: &'a KeyedLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key.to_string()).or_default().clone()
        };
        KeyGuard {
            owner: self,
            key: key.to_string(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Forget the lock once nobody holds or waits for it, so the map stays small.
        let mut locks = self.owner.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = locks.get(&self.key)
            && Arc::strong_count(lock) == 1
        {
            locks.remove(&self.key);
        }
    }
}

/// Keys (digests, chain IDs) that garbage collection must leave alone.
#[derive(Default)]
pub struct Pins {
    counts: Mutex<HashMap<String, usize>>,
}

pub struct Pin<'a> {
    owner: &'a Pins,
    keys: Vec<String>,
}

impl Pins {
    pub fn pin(&self, keys: impl IntoIterator<Item = String>) -> Pin<'_> {
        let keys: Vec<String> = keys.into_iter().collect();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for k in &keys {
            *counts.entry(k.clone()).or_default() += 1;
        }
        Pin { owner: self, keys }
    }

    pub fn is_pinned(&self, key: &str) -> bool {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.contains_key(key)
    }
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        for k in &self.keys {
            if let Some(n) = counts.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keyed_lock_serialises_one_key_and_cleans_up() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a").await;
        // Another key is free.
        let _b = locks.lock("b").await;
        let second = tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("a"));
        assert!(
            second.await.is_err(),
            "a second holder of the same key must wait"
        );
        drop(a);
        drop(locks.lock("a").await);
        assert_eq!(locks.locks.lock().unwrap().len(), 1);
    }

    #[test]
    fn pins_count() {
        let pins = Pins::default();
        let p1 = pins.pin(["x".to_string()]);
        let p2 = pins.pin(["x".to_string(), "y".to_string()]);
        drop(p1);
        assert!(pins.is_pinned("x"));
        drop(p2);
        assert!(!pins.is_pinned("x") && !pins.is_pinned("y"));
    }
}
