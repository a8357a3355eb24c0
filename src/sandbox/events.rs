//! A pod's lifecycle as GetContainerEvents reports it: events of its infra
//! container, with the pod's id as the container id, as containerd sends them.
//! The kubelet's evented PLEG needs them: a pod's DELETED event (carrying the
//! pod's status) is what drops the pod from its cache. They go out on the
//! containers' channel, from the one place a pod's phase changes (`save`), and
//! from removal.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Sandbox, SandboxService};
use crate::domain::SandboxPhase;
use crate::store::ContainerRecord;

/// How many events a slow subscriber may fall behind before it loses some.
pub const EVENT_BACKLOG: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// One event, with the pod and its containers as they were when it happened (the
/// kubelet caches them as the pod's status at `at`).
#[derive(Clone)]
pub struct ContainerEvent {
    /// The container's id, or the pod's for an event of the pod itself.
    pub container_id: String,
    pub sandbox_id: String,
    pub kind: ContainerEventKind,
    /// Nanoseconds since the epoch.
    pub at: i64,
    /// `None` only if the pod was already gone.
    pub pod: Option<Arc<Sandbox>>,
    pub containers: Vec<Arc<ContainerRecord>>,
}

/// Looks up a pod's containers; given by the container service, which owns them.
pub type PodContainers = Box<dyn Fn(&str) -> Vec<Arc<ContainerRecord>> + Send + Sync>;

pub(super) fn channel() -> broadcast::Sender<ContainerEvent> {
    broadcast::channel(EVENT_BACKLOG).0
}

/// The events a change of phase means: a pod becoming Ready was created and its
/// infra container started; a Ready pod that stops has its infra stopped.
pub(super) fn transition(
    before: Option<SandboxPhase>,
    after: SandboxPhase,
) -> &'static [ContainerEventKind] {
    use ContainerEventKind::*;
    match (before, after) {
        (Some(SandboxPhase::Ready), SandboxPhase::Ready) => &[],
        (_, SandboxPhase::Ready) => &[Created, Started],
        (Some(SandboxPhase::Ready), SandboxPhase::NotReady) => &[Stopped],
        _ => &[],
    }
}

impl SandboxService {
    /// The channel container and pod events share.
    pub fn events(&self) -> &broadcast::Sender<ContainerEvent> {
        &self.events
    }

    /// How events find a pod's containers; set once, by the container service.
    pub fn on_pod_containers(&self, lookup: PodContainers) {
        let _ = self.pod_containers.set(lookup);
    }

    /// Sends `kinds` for `pod`, with its containers as they are now.
    pub(super) fn publish(&self, pod: &Arc<Sandbox>, kinds: &[ContainerEventKind]) {
        // No subscriber, no snapshot to take: the kubelet may not use events.
        if kinds.is_empty() || self.events.receiver_count() == 0 {
            return;
        }
        let id = pod.id();
        let containers = self
            .pod_containers
            .get()
            .map(|lookup| lookup(id))
            .unwrap_or_default();
        for &kind in kinds {
            let _ = self.events.send(ContainerEvent {
                container_id: id.to_string(),
                sandbox_id: id.to_string(),
                kind,
                at: crate::image::now_nanos(),
                pod: Some(Arc::clone(pod)),
                containers: containers.clone(),
            });
        }
    }

    /// The last events of a pod being removed: stopped (if it still ran) and
    /// deleted, carrying its status as NotReady, as containerd reports it then.
    pub(super) fn publish_removal(&self, pod: &Sandbox) {
        let was_ready = pod.record.phase == SandboxPhase::Ready;
        let mut record = pod.record.clone();
        record.phase = SandboxPhase::NotReady;
        let gone = Arc::new(Sandbox { record, task: None });
        if was_ready {
            self.publish(&gone, &[ContainerEventKind::Stopped]);
        }
        self.publish(&gone, &[ContainerEventKind::Deleted]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerEventKind::*;
    use SandboxPhase::*;

    #[test]
    fn phases_to_events() {
        assert_eq!(transition(None, Creating), &[] as &[ContainerEventKind]);
        assert_eq!(transition(Some(Creating), Ready), &[Created, Started]);
        assert_eq!(transition(None, Ready), &[Created, Started]);
        assert_eq!(transition(Some(Ready), NotReady), &[Stopped]);
        // Saved again unchanged, or stopped twice: nothing new happened.
        assert!(transition(Some(Ready), Ready).is_empty());
        assert!(transition(Some(NotReady), NotReady).is_empty());
        // Recovered NotReady: no infra ever started in this berthd's life.
        assert!(transition(None, NotReady).is_empty());
    }
}
