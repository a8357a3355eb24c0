//! An index behind a lock that counts its changes, so that a reader can tell
//! cheaply that nothing changed since it last looked: the kubelet lists every
//! pod and container every second, and between two relists almost never does
//! anything change.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `T` behind a read-write lock, with a count of the write locks taken on it.
///
/// The count moves when a write guard is dropped, while it still holds the
/// lock, after whatever it changed: a reader that reads the count and then
/// takes the read lock sees at least the state the count stands for, so what
/// it builds from that state may be kept under that count. A reader whose
/// count is behind what it read only rebuilds once more.
#[derive(Default)]
pub struct Counted<T> {
    inner: RwLock<T>,
    changes: AtomicU64,
}

impl<T> Counted<T> {
    /// How many write locks were released so far: equal counts, no change in
    /// between.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// A panic while another thread held the lock leaves the index as that
    /// thread left it: every change to it is a whole insert or remove.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Counted as a change when dropped, whether or not anything changed.
    pub fn write(&self) -> CountedWrite<'_, T> {
        CountedWrite {
            guard: self.inner.write().unwrap_or_else(|p| p.into_inner()),
            changes: &self.changes,
        }
    }
}

/// A write lock on a [`Counted`]; dropping it counts a change.
pub struct CountedWrite<'a, T> {
    guard: RwLockWriteGuard<'a, T>,
    changes: &'a AtomicU64,
}

impl<T> Drop for CountedWrite<'_, T> {
    fn drop(&mut self) {
        // Before `guard` (a field, dropped after this body) releases the lock.
        self.changes.fetch_add(1, Ordering::Release);
    }
}

impl<T> Deref for CountedWrite<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for CountedWrite<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_moves_the_count_and_reads_do_not() {
        let index = Counted::<Vec<u32>>::default();
        index.write().push(1);
        let before = index.changes();
        assert_eq!(*index.read(), [1]);
        assert_eq!(index.changes(), before);
        index.write().push(2);
        let after = index.changes();
        assert_ne!(after, before);
        assert_eq!(*index.read(), [1, 2]);
        drop(index.write());
        assert_ne!(index.changes(), after, "a write lock counts even unused");
    }

    /// A count moved after the unlock would fail this only when the reader
    /// wins the race in between; moved before it, it never fails.
    #[test]
    fn a_reader_after_the_writer_sees_its_count() {
        let index = std::sync::Arc::new(Counted::<u32>::default());
        let mut writer = index.write();
        let reader = {
            let index = std::sync::Arc::clone(&index);
            std::thread::spawn(move || {
                // Blocks until the writer is done; by then the count moved.
                let value = *index.read();
                (value, index.changes())
            })
        };
        *writer = 7;
        drop(writer);
        assert_eq!(reader.join().unwrap(), (7, 1));
    }
}
