//! CRI <-> domain for the pod sandbox calls: status, list items, filters.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use serde_json::json;

use super::convert::map;
use crate::domain::SandboxPhase;
use crate::domain::config::NamespaceMode;
use crate::error::Error;
use crate::sandbox::{ObservedSandbox, Sandbox, SandboxFilter};
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

/// The pod's status. Its addresses are reported only while its network
/// namespace is there: once that is gone (stopped, or unmounted from outside)
/// the pod has no network, as containerd reports it.
pub fn status(observed: &ObservedSandbox) -> cri::PodSandboxStatus {
    let pod = &observed.pod;
    let r = &pod.record;
    let ns = &r.config.linux.security_context.namespace_options;
    let ips: &[std::net::IpAddr] = if observed.netns_closed { &[] } else { &r.ips };
    let mut ips = ips.iter().map(|ip| ip.to_string());
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
        runtime_handler: r.handler_as_requested().to_string(),
    }
}

/// Verbose status: one `info` entry, JSON, in the spirit of containerd's.
/// `netNamespaceClosed` is what was observed now, as containerd's `NetNSClosed`.
pub fn info(observed: &ObservedSandbox) -> Result<HashMap<String, String>, Error> {
    let r = &observed.pod.record;
    let info = json!({
        "pid": r.pid,
        "netNamespacePath": r.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "netNamespaceClosed": observed.netns_closed,
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
        runtime_handler: r.handler_as_requested().to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(record: SandboxRecord) -> ObservedSandbox {
        ObservedSandbox {
            pod: std::sync::Arc::new(Sandbox { record, task: None }),
            netns_closed: false,
        }
    }

    #[test]
    fn the_handler_is_echoed_as_it_was_asked() {
        let asked = |requested: &str| SandboxRecord {
            runtime_handler: "berth".into(),
            requested_handler: Some(requested.into()),
            ..Default::default()
        };
        assert_eq!(status(&pod(asked(""))).runtime_handler, "");
        assert_eq!(list_item(&pod(asked("")).pod).runtime_handler, "");
        assert_eq!(status(&pod(asked("berth"))).runtime_handler, "berth");
        // A record written by a berth that did not keep the request says what
        // it always said: the resolved handler.
        let old: SandboxRecord =
            serde_json::from_str(r#"{"id":"p","runtime_handler":"berth"}"#).unwrap();
        assert_eq!(old.requested_handler, None);
        assert_eq!(status(&pod(old)).runtime_handler, "berth");
    }

    #[test]
    fn a_closed_namespace_has_no_addresses() {
        let record = SandboxRecord {
            netns: Some("/run/berth/netns/p".into()),
            ips: vec!["10.1.0.2".parse().unwrap()],
            ..Default::default()
        };
        let mut observed = pod(record);
        assert_eq!(status(&observed).network.unwrap().ip, "10.1.0.2");
        observed.netns_closed = true;
        assert_eq!(status(&observed).network.unwrap().ip, "");
        let info: serde_json::Value =
            serde_json::from_str(&info(&observed).unwrap()["info"]).unwrap();
        assert_eq!(info["netNamespaceClosed"], true);
    }
}
