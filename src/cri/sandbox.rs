//! CRI <-> domain for the pod sandbox calls: status, list items, filters.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use serde_json::json;

use super::container::map;
use crate::domain::SandboxPhase;
use crate::domain::config::NamespaceMode;
use crate::error::Error;
use crate::sandbox::{Sandbox, SandboxFilter};
use crate::store::SandboxRecord;

fn state(phase: SandboxPhase) -> i32 {
    match phase {
        SandboxPhase::Ready => cri::PodSandboxState::SandboxReady as i32,
        SandboxPhase::Creating | SandboxPhase::NotReady => {
            cri::PodSandboxState::SandboxNotready as i32
        }
    }
}

fn namespace_mode(mode: NamespaceMode) -> i32 {
    let mode = match mode {
        NamespaceMode::Pod => cri::NamespaceMode::Pod,
        NamespaceMode::Container => cri::NamespaceMode::Container,
        NamespaceMode::Node => cri::NamespaceMode::Node,
        NamespaceMode::Target => cri::NamespaceMode::Target,
    };
    mode as i32
}

pub(super) fn metadata(record: &SandboxRecord) -> cri::PodSandboxMetadata {
    let c = &record.config;
    cri::PodSandboxMetadata {
        name: c.name.clone(),
        uid: c.uid.clone(),
        namespace: c.namespace.clone(),
        attempt: c.attempt,
    }
}

pub fn status(pod: &Sandbox) -> cri::PodSandboxStatus {
    let r = &pod.record;
    let ns = &r.config.linux.security_context.namespace_options;
    let mut ips = r.ips.iter().map(|ip| ip.to_string());
    cri::PodSandboxStatus {
        id: r.id.clone(),
        metadata: Some(metadata(&pod.record)),
        state: state(r.phase),
        created_at: r.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: ips.next().unwrap_or_default(),
            additional_ips: ips.map(|ip| cri::PodIp { ip }).collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: namespace_mode(ns.network),
                    pid: namespace_mode(ns.pid),
                    ipc: namespace_mode(ns.ipc),
                    target_id: ns.target_id.clone(),
                    userns_options: None,
                }),
            }),
        }),
        labels: map(&r.config.labels),
        annotations: map(&r.config.annotations),
        runtime_handler: r.runtime_handler.clone(),
    }
}

/// Verbose status: one `info` entry, JSON, in the spirit of containerd's.
pub fn info(pod: &Sandbox) -> Result<HashMap<String, String>, Error> {
    let r = &pod.record;
    let info = json!({
        "pid": r.pid,
        "netNamespacePath": r.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "netNamespaceClosed": r.netns.is_none(),
        "runtimeHandler": r.runtime_handler,
        "shim": r.shim.display().to_string(),
        "bundle": r.bundle.display().to_string(),
        "image": "builtin pause",
        "config": r.config,
        "cniResult": r.cni_result,
    });
    let text = serde_json::to_string(&info)
        .map_err(|e| Error::Internal(format!("encoding sandbox info: {e}")))?;
    Ok(HashMap::from([("info".to_string(), text)]))
}

pub fn list_item(pod: &Sandbox) -> cri::PodSandbox {
    let r = &pod.record;
    cri::PodSandbox {
        id: r.id.clone(),
        metadata: Some(metadata(&pod.record)),
        state: state(r.phase),
        created_at: r.created_at,
        labels: map(&r.config.labels),
        annotations: map(&r.config.annotations),
        runtime_handler: r.runtime_handler.clone(),
    }
}

pub fn filter(f: Option<cri::PodSandboxFilter>) -> SandboxFilter {
    let Some(f) = f else {
        return SandboxFilter::default();
    };
    SandboxFilter {
        id: f.id,
        phase: f.state.map(|s| {
            if s.state == cri::PodSandboxState::SandboxReady as i32 {
                SandboxPhase::Ready
            } else {
                SandboxPhase::NotReady
            }
        }),
        labels: f.label_selector.into_iter().collect(),
    }
}
