//! The in-memory index of containers: by id, and by pod, so that a List
//! narrowed to one pod (the kubelet's per-pod status and its relist) reads that
//! pod's containers instead of every container on the node.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::service::ContainerFilter;
use crate::store::ContainerRecord;

#[derive(Default)]
pub(super) struct ContainerIndex {
    by_id: HashMap<String, Arc<ContainerRecord>>,
    /// Container ids of each pod; a pod with none has no entry.
    by_pod: HashMap<String, BTreeSet<String>>,
}

impl ContainerIndex {
    pub fn get(&self, id: &str) -> Option<&Arc<ContainerRecord>> {
        self.by_id.get(id)
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<ContainerRecord>> {
        self.by_id.values()
    }

    /// Shows `record` under its id, replacing (and returning) what was there.
    pub fn insert(
        &mut self,
        id: String,
        record: Arc<ContainerRecord>,
    ) -> Option<Arc<ContainerRecord>> {
        let pod = record.sandbox_id.clone();
        let before = self.by_id.insert(id.clone(), record);
        if let Some(old) = &before {
            self.unlink(&old.sandbox_id, &id);
        }
        self.by_pod.entry(pod).or_default().insert(id);
        before
    }

    pub fn remove(&mut self, id: &str) -> Option<Arc<ContainerRecord>> {
        let removed = self.by_id.remove(id)?;
        self.unlink(&removed.sandbox_id, id);
        Some(removed)
    }

    fn unlink(&mut self, pod: &str, id: &str) {
        if let Some(ids) = self.by_pod.get_mut(pod) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_pod.remove(pod);
            }
        }
    }

    /// The containers of the pod whose id is exactly `pod_id`.
    pub fn of_pod<'a>(&'a self, pod_id: &str) -> impl Iterator<Item = &'a Arc<ContainerRecord>> {
        self.by_pod
            .get(pod_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }

    /// The records `filter` may match: one container for an exact id, one pod's
    /// for an exact pod id, else all. Berth's ids all have one length, so an
    /// exact id is a prefix of no other; the caller still applies every filter.
    pub fn candidates<'a>(
        &'a self,
        filter: &'a ContainerFilter,
    ) -> Box<dyn Iterator<Item = &'a Arc<ContainerRecord>> + 'a> {
        if let Some(c) = self.by_id.get(&filter.id) {
            return Box::new(std::iter::once(c));
        }
        if !filter.sandbox_id.is_empty() && self.by_pod.contains_key(&filter.sandbox_id) {
            return Box::new(self.of_pod(&filter.sandbox_id));
        }
        Box::new(self.by_id.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, pod: &str) -> Arc<ContainerRecord> {
        Arc::new(ContainerRecord {
            id: id.into(),
            sandbox_id: pod.into(),
            ..Default::default()
        })
    }

    fn ids<'a>(it: impl Iterator<Item = &'a Arc<ContainerRecord>>) -> Vec<String> {
        let mut v: Vec<String> = it.map(|c| c.id.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn the_pod_index_follows_inserts_replacements_and_removals() {
        let mut index = ContainerIndex::default();
        index.insert("a".into(), record("a", "p1"));
        index.insert("b".into(), record("b", "p1"));
        index.insert("c".into(), record("c", "p2"));
        assert_eq!(ids(index.of_pod("p1")), ["a", "b"]);
        // A replaced record (a state change) stays listed once.
        index.insert("a".into(), record("a", "p1"));
        assert_eq!(ids(index.of_pod("p1")), ["a", "b"]);
        index.remove("a");
        index.remove("b");
        assert!(ids(index.of_pod("p1")).is_empty());
        assert!(!index.by_pod.contains_key("p1"));
        assert_eq!(ids(index.of_pod("p2")), ["c"]);
        assert!(index.remove("zz").is_none());
    }

    #[test]
    fn candidates_narrow_only_on_exact_ids() {
        let mut index = ContainerIndex::default();
        for (id, pod) in [("a1", "p1"), ("a2", "p1"), ("b1", "p2")] {
            index.insert(id.into(), record(id, pod));
        }
        let filter = |id: &str, pod: &str| ContainerFilter {
            id: id.into(),
            sandbox_id: pod.into(),
            ..Default::default()
        };
        assert_eq!(ids(index.candidates(&filter("a2", ""))), ["a2"]);
        assert_eq!(ids(index.candidates(&filter("", "p1"))), ["a1", "a2"]);
        // Prefixes and unknown ids fall back to every record.
        assert_eq!(ids(index.candidates(&filter("a", ""))).len(), 3);
        assert_eq!(ids(index.candidates(&filter("", "p"))).len(), 3);
    }
}
