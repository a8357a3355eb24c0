//! ListPodSandbox: the index, narrowed by id (or unique id prefix), phase and a
//! label selector, as containerd filters it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Sandbox, SandboxService};
use crate::domain::SandboxPhase;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFilter {
    /// An id or a unique prefix of one; empty matches every pod.
    pub id: String,
    pub phase: Option<SandboxPhase>,
    /// Every pair must be among the pod's labels.
    pub labels: BTreeMap<String, String>,
}

impl SandboxFilter {
    /// Whether it narrows nothing: the List is every pod.
    pub fn narrows_nothing(&self) -> bool {
        self.id.is_empty() && self.phase.is_none() && self.labels.is_empty()
    }

    /// Whether `pod` has the phase and labels asked for (the id is resolved
    /// through the index, not matched here).
    fn matches(&self, pod: &Sandbox) -> bool {
        if self.phase.is_some_and(|phase| phase != pod.record.phase) {
            return false;
        }
        self.labels
            .iter()
            .all(|(k, v)| pod.record.config.labels.get(k) == Some(v))
    }
}

impl SandboxService {
    /// A count that moves whenever a pod is indexed, replaced or removed:
    /// what was built from `list` is still right while it stands.
    pub fn list_changes(&self) -> u64 {
        self.pods.changes()
    }

    /// The pods matching `filter`, oldest first.
    pub fn list(&self, filter: &SandboxFilter) -> Vec<Arc<Sandbox>> {
        if !filter.id.is_empty() {
            // The one pod the id names, from the index; an id that resolves to
            // no pod (or to several) matches nothing.
            return match self.get(&filter.id) {
                Ok(pod) if filter.matches(&pod) => vec![pod],
                _ => Vec::new(),
            };
        }
        let pods = self.pods.read();
        let mut out: Vec<Arc<Sandbox>> = pods
            .values()
            .filter(|pod| filter.matches(pod))
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.record.created_at, a.id()).cmp(&(b.record.created_at, b.id())));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SandboxRecord;

    fn pod(id: &str, phase: SandboxPhase, labels: &[(&str, &str)]) -> Sandbox {
        let mut record = SandboxRecord {
            id: id.into(),
            phase,
            ..Default::default()
        };
        record.config.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Sandbox { record, task: None }
    }

    #[test]
    fn filters_combine() {
        let ready = pod("a1", SandboxPhase::Ready, &[("app", "web"), ("tier", "1")]);
        let mut filter = SandboxFilter::default();
        assert!(filter.matches(&ready));
        filter.phase = Some(SandboxPhase::NotReady);
        assert!(!filter.matches(&ready));
        filter.phase = Some(SandboxPhase::Ready);
        filter.labels.insert("app".into(), "web".into());
        assert!(filter.matches(&ready));
        filter.labels.insert("tier".into(), "2".into());
        assert!(!filter.matches(&ready));
    }
}
