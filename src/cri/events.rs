//! CRI <-> domain for GetContainerEvents: an event carries the pod's status and
//! its containers', so this sits above both translations.

use k8s_cri::v1 as cri;

use super::{container, sandbox};
use crate::container::{ContainerEvent, ContainerEventKind};
use crate::sandbox::ObservedSandbox;
use crate::store::ContainerRecord;

/// A lifecycle event with the pod's status and its containers' as they are now.
pub fn event(
    e: &ContainerEvent,
    pod: Option<&ObservedSandbox>,
    containers: &[std::sync::Arc<ContainerRecord>],
) -> cri::ContainerEventResponse {
    let kind = match e.kind {
        ContainerEventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
        ContainerEventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
        ContainerEventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
        ContainerEventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
    };
    cri::ContainerEventResponse {
        container_id: e.container_id.clone(),
        container_event_type: kind as i32,
        created_at: e.at,
        pod_sandbox_status: pod.map(sandbox::status),
        containers_statuses: containers.iter().map(|c| container::status(c)).collect(),
    }
}
