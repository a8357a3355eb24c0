//! CRI <-> domain for GetContainerEvents: an event carries the pod's status and
//! its containers', so this sits above both translations.

use k8s_cri::v1 as cri;

use super::{container, sandbox};
use crate::container::{ContainerEvent, ContainerEventKind, ImageNames};
use crate::sandbox::ObservedSandbox;
use crate::store::ContainerRecord;

/// A lifecycle event with the pod's status and its containers' as they were
/// then; `image_names` gives each container's image fields.
pub fn event(
    e: &ContainerEvent,
    image_names: impl Fn(&ContainerRecord) -> ImageNames,
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
        pod_sandbox_status: e
            .pod
            .clone()
            .map(|pod| sandbox::status(&ObservedSandbox::recorded(pod))),
        containers_statuses: e
            .containers
            .iter()
            .map(|c| container::status(c, &image_names(c)))
            .collect(),
    }
}
