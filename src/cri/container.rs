//! CRI <-> domain for the container calls: status, list items, filters.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use serde_json::json;

use super::convert::map;
use crate::container::{ContainerFilter, ImageNames};
use crate::domain::ContainerPhase;
use crate::domain::config::{MountPropagation, Resources};
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

/// The container's image named `image`, with the runtime handler CreateContainer
/// named for it (`""` stays `""`): List and Status both answer with it.
fn image_spec(c: &ContainerRecord, image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        runtime_handler: c.config.image_runtime_handler.clone(),
        ..Default::default()
    }
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
        image: Some(image_spec(c, &c.image_name)),
        image_ref: c.image_id.clone(),
        state: state(c.phase),
        created_at: c.created_at,
        labels: map(&c.config.labels),
        annotations: map(&c.config.annotations),
        image_id: c.image_id.clone(),
    }
}

/// `image` is what the container service reports of the container's image.
pub fn status(c: &ContainerRecord, image: &ImageNames) -> cri::ContainerStatus {
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
            image: (!m.image.is_empty()).then(|| cri::ImageSpec {
                image: m.image.clone(),
                ..Default::default()
            }),
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
        image: Some(cri::ImageSpec {
            user_specified_image: image.user_specified_image.clone(),
            ..image_spec(c, &image.image)
        }),
        image_ref: image.image_ref.clone(),
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
        image_id: image.image_id.clone(),
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
/// `spec` is the bundle's spec as it stands (the container service reads it).
pub fn verbose_info(c: &ContainerRecord, spec: serde_json::Value) -> HashMap<String, String> {
    let info = json!({
        "sandboxID": c.sandbox_id,
        "pid": c.pid,
        "bundle": c.bundle,
        "runtimeSpec": spec,
        "config": c.config,
    });
    HashMap::from([("info".to_string(), info.to_string())])
}
