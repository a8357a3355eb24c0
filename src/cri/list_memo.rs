//! The CRI form of each listed record, kept from one List call to the next.
//!
//! The services hold each pod and container as an immutable `Arc`, replaced
//! whole on every change (create, start, exit, stop, recovery). A record's CRI
//! list item therefore only needs building again when the `Arc` it was built
//! from is no longer the one the service lists: the memo keeps, per id, a `Weak`
//! to that source and the item built from it. A `Weak` keeps its allocation, so
//! the address cannot be reused by another record while the entry exists, and
//! pointer equality is an exact "unchanged" test. The kubelet lists every
//! second; between two relists almost nothing changes, so a List costs one
//! pointer comparison and one message clone per item instead of rebuilding
//! strings and label maps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Entries whose record is gone are swept once this many more are held than
/// were just listed: often enough that removed pods do not pile up, rarely
/// enough that a filtered List (few items) does not sweep every time.
const SWEEP_SLACK: usize = 64;

struct Entry<R, M> {
    source: Weak<R>,
    item: Arc<M>,
}

pub(super) struct ListMemo<R, M> {
    entries: Mutex<HashMap<String, Entry<R, M>>>,
}

impl<R, M> Default for ListMemo<R, M> {
    fn default() -> Self {
        ListMemo {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<R, M: Clone> ListMemo<R, M> {
    /// The list items of `records`, in their order: the kept item where the
    /// record is the one it was built from, else `build`'s (then kept).
    pub fn items(
        &self,
        records: &[Arc<R>],
        id: impl Fn(&R) -> &str,
        build: impl Fn(&R) -> M,
    ) -> Vec<M> {
        let shared = self.shared(records, id, build);
        // Cloned outside the lock, so concurrent Lists only share pointer work.
        shared.iter().map(|item| M::clone(item)).collect()
    }

    fn shared(
        &self,
        records: &[Arc<R>],
        id: impl Fn(&R) -> &str,
        build: impl Fn(&R) -> M,
    ) -> Vec<Arc<M>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let key = id(record);
            let kept = entries
                .get(key)
                .filter(|e| std::ptr::eq(e.source.as_ptr(), Arc::as_ptr(record)))
                .map(|e| Arc::clone(&e.item));
            let item = kept.unwrap_or_else(|| {
                let item = Arc::new(build(record));
                entries.insert(
                    key.to_string(),
                    Entry {
                        source: Arc::downgrade(record),
                        item: Arc::clone(&item),
                    },
                );
                item
            });
            out.push(item);
        }
        if entries.len() > records.len() + SWEEP_SLACK {
            // A record no service holds any more was removed or replaced.
            entries.retain(|_, e| e.source.strong_count() > 0);
        }
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests;
