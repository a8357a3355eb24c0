//! CRI <-> domain for the container calls: status, list items, filters, ExecSync.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use serde_json::json;

use crate::container::{ContainerEvent, ContainerEventKind, ContainerFilter};
use crate::domain::ContainerPhase;
use crate::domain::config::{MountPropagation, Resources};
use crate::sandbox::Sandbox;
use crate::store::ContainerRecord;

fn state(phase: ContainerPhase) -> i32 {
    let state = match phase {
        ContainerPhase::Creating | ContainerPhase::Created => cri::ContainerState::ContainerCreated,
        ContainerPhase::Running => cri::ContainerState::ContainerRunning,
        ContainerPhase::Exited => cri::ContainerState::ContainerExited,
        ContainerPhase::Unknown => cri::ContainerState::ContainerUnknown,
    };
    state as i32
}

fn phase(state: i32) -> Option<ContainerPhase> {
    match cri::ContainerState::try_from(state).ok()? {
        cri::ContainerState::ContainerCreated => Some(ContainerPhase::Created),
        cri::ContainerState::ContainerRunning => Some(ContainerPhase::Running),
        cri::ContainerState::ContainerExited => Some(ContainerPhase::Exited),
        cri::ContainerState::ContainerUnknown => Some(ContainerPhase::Unknown),
    }
}

pub(super) fn metadata(c: &ContainerRecord) -> cri::ContainerMetadata {
    cri::ContainerMetadata {
        name: c.config.name.clone(),
        attempt: c.config.attempt,
    }
}

fn image_spec(c: &ContainerRecord) -> cri::ImageSpec {
    cri::ImageSpec {
        image: c.image_name.clone(),
        ..Default::default()
    }
}

pub(super) fn map(m: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn filter(f: Option<cri::ContainerFilter>) -> ContainerFilter {
    let Some(f) = f else {
        return ContainerFilter::default();
    };
    ContainerFilter {
        id: f.id,
        sandbox_id: f.pod_sandbox_id,
        // An unknown state value matches nothing rather than everything.
        phase: f
            .state
            .map(|s| phase(s.state).unwrap_or(ContainerPhase::Creating)),
        labels: f.label_selector,
    }
}

pub fn list_item(c: &ContainerRecord) -> cri::Container {
    cri::Container {
        id: c.id.clone(),
        pod_sandbox_id: c.sandbox_id.clone(),
        metadata: Some(metadata(c)),
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        state: state(c.phase),
        created_at: c.created_at,
        labels: map(&c.config.labels),
        annotations: map(&c.config.annotations),
        image_id: c.image_id.clone(),
    }
}

pub fn status(c: &ContainerRecord) -> cri::ContainerStatus {
    let mounts = c
        .config
        .mounts
        .iter()
        .map(|m| cri::Mount {
            container_path: m.container_path.clone(),
            host_path: m.host_path.clone(),
            readonly: m.readonly,
            propagation: match m.propagation {
                MountPropagation::Private => cri::MountPropagation::PropagationPrivate,
                MountPropagation::HostToContainer => {
                    cri::MountPropagation::PropagationHostToContainer
                }
                MountPropagation::Bidirectional => cri::MountPropagation::PropagationBidirectional,
            } as i32,
            ..Default::default()
        })
        .collect();
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(metadata(c)),
        state: state(c.phase),
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: map(&c.config.labels),
        annotations: map(&c.config.annotations),
        mounts,
        log_path: c
            .log_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        image_id: c.image_id.clone(),
        resources: Some(resources(&c.config.linux.resources)),
        user: c.user.as_ref().map(|u| cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: i64::from(u.uid),
                gid: i64::from(u.gid),
                supplemental_groups: u.additional_gids.iter().map(|g| i64::from(*g)).collect(),
            }),
        }),
    }
}

/// The limits in force, as the kubelet compares them with the pod spec.
fn resources(r: &Resources) -> cri::ContainerResources {
    cri::ContainerResources {
        linux: Some(cri::LinuxContainerResources {
            cpu_period: r.cpu_period,
            cpu_quota: r.cpu_quota,
            cpu_shares: r.cpu_shares,
            memory_limit_in_bytes: r.memory_limit_in_bytes,
            oom_score_adj: r.oom_score_adj,
            cpuset_cpus: r.cpuset_cpus.clone(),
            cpuset_mems: r.cpuset_mems.clone(),
            hugepage_limits: r
                .hugepage_limits
                .iter()
                .map(|h| cri::HugepageLimit {
                    page_size: h.page_size.clone(),
                    limit: h.limit,
                })
                .collect(),
            unified: r.unified.clone().into_iter().collect(),
            memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
        }),
        windows: None,
    }
}

/// The verbose `info` of ContainerStatus, as containerd shapes it.
pub fn verbose_info(c: &ContainerRecord) -> HashMap<String, String> {
    let spec: serde_json::Value = std::fs::read(c.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    let info = json!({
        "sandboxID": c.sandbox_id,
        "pid": c.pid,
        "bundle": c.bundle,
        "runtimeSpec": spec,
        "config": c.config,
    });
    HashMap::from([("info".to_string(), info.to_string())])
}

/// A lifecycle event with the pod's status and its containers' as they are now.
pub fn event(
    e: &ContainerEvent,
    pod: Option<&Sandbox>,
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
        pod_sandbox_status: pod.map(super::sandbox::status),
        containers_statuses: containers.iter().map(|c| status(c)).collect(),
    }
}
