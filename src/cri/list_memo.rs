//! The CRI form of each listed record, kept encoded from one List call to the
//! next.
//!
//! The services hold each pod and container as an immutable `Arc`, replaced
//! whole on every change (create, start, exit, stop, recovery). A record's CRI
//! list item therefore only needs building again when the `Arc` it was built
//! from is no longer the one the service lists: the memo keeps, per source
//! address, a `Weak` to that source and the item built from it. A `Weak` keeps
//! its allocation, so the address cannot be reused by another record while the
//! entry exists: finding a record's address is an exact "unchanged" test, and
//! costs no hashing of its id. The item is kept as its response frame
//! ([`list_wire::item`]): the kubelet lists every second and between two
//! relists almost nothing changes, so a List costs one lookup by address and
//! one reference count per item, and the response is written by copying the
//! frames, instead of rebuilding strings and label maps and encoding them on
//! every call.
//!
//! An unfiltered List goes one step further: its whole response is kept with
//! the index's change count it was built at ([`crate::counted`]), and while
//! the count stands the next call answers with it as is, without listing,
//! sorting or looking up a single record.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use super::list_wire::{self, EncodedList};

/// Entries whose record is gone are swept once this many more are held than
/// were just listed: often enough that removed pods do not pile up, rarely
/// enough that a filtered List (few items) does not sweep every time.
const SWEEP_SLACK: usize = 64;

struct Entry<R> {
    source: Weak<R>,
    /// The item built from `source`, framed as a response's field 1.
    frame: Bytes,
}

pub(super) struct ListMemo<R> {
    /// Keyed by the address of the record the item was built from.
    entries: Mutex<HashMap<usize, Entry<R>, BuildHasherDefault<AddressHasher>>>,
    /// The last unfiltered response, and the change count it was built at.
    whole: Mutex<Option<(u64, Bytes)>>,
}

/// Addresses are distinct and their high bits vary: one multiplication spreads
/// them over the table.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl<R> Default for ListMemo<R> {
    fn default() -> Self {
        ListMemo {
            entries: Mutex::new(HashMap::default()),
            whole: Mutex::new(None),
        }
    }
}

impl<R> ListMemo<R> {
    /// A List response of `records()`. `changes` is the index's count of
    /// changes for an unfiltered List (read before `records` lists), `None`
    /// for a filtered one: an unfiltered response is kept whole, and answers
    /// the next call as long as the count stands.
    pub fn list<M: prost::Message>(
        &self,
        changes: Option<u64>,
        records: impl FnOnce() -> Vec<Arc<R>>,
        build: impl Fn(&R) -> M,
    ) -> EncodedList {
        match changes {
            Some(changes) => self.whole(changes, records, build),
            None => self.response(&records(), build),
        }
    }

    /// The unfiltered List response: the one kept from the last call if the
    /// index's count of changes is still `changes`, else [`Self::response`] of
    /// `records()`, kept.
    fn whole<M: prost::Message>(
        &self,
        changes: u64,
        records: impl FnOnce() -> Vec<Arc<R>>,
        build: impl Fn(&R) -> M,
    ) -> EncodedList {
        let kept = self.whole.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let whole = match kept {
            Some((at, whole)) if at == changes => whole,
            _ => {
                let whole = self.response(&records(), build).whole();
                let mut kept = self.whole.lock().unwrap_or_else(|p| p.into_inner());
                // A call that listed after a later change may have kept its
                // response already: the newer one stays.
                if kept.as_ref().is_none_or(|(at, _)| *at <= changes) {
                    *kept = Some((changes, whole.clone()));
                }
                whole
            }
        };
        EncodedList {
            chunks: vec![whole],
        }
    }

    /// The List response of `records`, in their order: the kept frame where
    /// the record is the one it was built from, else `build`'s item, framed
    /// and kept.
    fn response<M: prost::Message>(
        &self,
        records: &[Arc<R>],
        build: impl Fn(&R) -> M,
    ) -> EncodedList {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut items = Vec::with_capacity(records.len());
        for record in records {
            let address = Arc::as_ptr(record) as usize;
            let frame = match entries.get(&address) {
                Some(kept) => kept.frame.clone(),
                None => {
                    let frame = list_wire::item(&build(record));
                    entries.insert(
                        address,
                        Entry {
                            source: Arc::downgrade(record),
                            frame: frame.clone(),
                        },
                    );
                    frame
                }
            };
            items.push(frame);
        }
        if entries.len() > records.len() + SWEEP_SLACK {
            // A record no service holds any more was removed or replaced.
            entries.retain(|_, e| e.source.strong_count() > 0);
        }
        EncodedList { chunks: items }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests;
