//! Container lifecycle events for the kubelet's evented PLEG (GetContainerEvents).
//! They come from the one place a container's record changes, `save`/`forget`, so
//! no transition can be missed; a subscriber that falls behind loses the oldest.
//! Pods send the same events for their infra container (see `sandbox::events`),
//! on the same channel, so a subscriber sees a pod's events in order.

use std::sync::Arc;

use crate::domain::ContainerPhase;
use crate::sandbox::Sandbox;
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

/// The event a change of phase means, if any.
pub(super) fn transition(
    before: Option<ContainerPhase>,
    after: ContainerPhase,
) -> Option<ContainerEventKind> {
    if before == Some(after) {
        return None;
    }
    match after {
        ContainerPhase::Created => Some(ContainerEventKind::Created),
        ContainerPhase::Running => Some(ContainerEventKind::Started),
        ContainerPhase::Exited | ContainerPhase::Unknown => Some(ContainerEventKind::Stopped),
        ContainerPhase::Creating => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerPhase::*;

    #[test]
    fn phases_to_events() {
        assert_eq!(transition(None, Creating), None);
        assert_eq!(
            transition(Some(Creating), Created),
            Some(ContainerEventKind::Created)
        );
        assert_eq!(
            transition(Some(Created), Running),
            Some(ContainerEventKind::Started)
        );
        assert_eq!(
            transition(Some(Running), Exited),
            Some(ContainerEventKind::Stopped)
        );
        // Saving a record again (an update of its resources) is not an event.
        assert_eq!(transition(Some(Running), Running), None);
    }
}
