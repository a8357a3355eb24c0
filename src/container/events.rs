//! Container lifecycle events for the kubelet's evented PLEG (GetContainerEvents).
//! They come from the one place a container's record changes, `save`/`forget`, so
//! no transition can be missed; a subscriber that falls behind loses the oldest.
//! Pods send the same events for their infra container (see `sandbox::events`),
//! on the same channel, so a subscriber sees a pod's events in order. The event
//! types live in `sandbox::events`, below this module, which both send.

use crate::domain::ContainerPhase;
use crate::sandbox::ContainerEventKind;

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
