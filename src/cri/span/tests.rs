//! The RPC span carries the ids of the request, as a subscriber sees them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

use super::*;

/// The fields of every span, by name, as recorded.
#[derive(Clone, Default)]
struct Fields(Arc<Mutex<BTreeMap<String, String>>>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .lock()
            .unwrap()
            .insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Fields {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        attrs.record(&mut self.clone());
    }

    fn on_record(&self, _: &Id, values: &Record<'_>, _: Context<'_, S>) {
        values.record(&mut self.clone());
    }
}

/// The span's fields after `handle` ran inside it, as a handler runs.
fn fields_after(method: &str, handle: impl FnOnce()) -> BTreeMap<String, String> {
    let fields = Fields::default();
    let subscriber = tracing_subscriber::registry().with(fields.clone());
    tracing::subscriber::with_default(subscriber, || rpc_span(method).in_scope(handle));
    fields.0.lock().unwrap().clone()
}

fn image(name: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: name.into(),
        ..Default::default()
    })
}

#[test]
fn each_rpc_span_carries_the_ids_its_request_names() {
    let f = fields_after("/runtime.v1.RuntimeService/ContainerStatus", || {
        record(&tonic::Request::new(cri::ContainerStatusRequest {
            container_id: "c1".into(),
            verbose: false,
        }))
    });
    assert_eq!(f["method"], "/runtime.v1.RuntimeService/ContainerStatus");
    assert_eq!(f["container_id"], "c1");
    assert!(
        !f.contains_key("pod_id") && !f.contains_key("image"),
        "{f:?}"
    );

    let f = fields_after("/runtime.v1.RuntimeService/CreateContainer", || {
        record(&tonic::Request::new(cri::CreateContainerRequest {
            pod_sandbox_id: "p1".into(),
            config: Some(cri::ContainerConfig {
                image: image("busybox:1"),
                ..Default::default()
            }),
            sandbox_config: None,
        }));
        record_made("container_id", "c2");
    });
    assert_eq!(
        (
            f["pod_id"].as_str(),
            f["container_id"].as_str(),
            f["image"].as_str()
        ),
        ("p1", "c2", "busybox:1")
    );

    let f = fields_after("/runtime.v1.RuntimeService/StopPodSandbox", || {
        record(&tonic::Request::new(cri::StopPodSandboxRequest {
            pod_sandbox_id: "p3".into(),
        }))
    });
    assert_eq!(f["pod_id"], "p3");

    let f = fields_after("/runtime.v1.ImageService/PullImage", || {
        record(&tonic::Request::new(cri::PullImageRequest {
            image: image("registry.example/app:2"),
            ..Default::default()
        }))
    });
    assert_eq!(f["image"], "registry.example/app:2");
}

#[test]
fn empty_ids_are_left_out_and_huge_ones_cut() {
    let huge = "x".repeat(100_000);
    let f = fields_after("/runtime.v1.RuntimeService/ExecSync", || {
        record(&tonic::Request::new(cri::ExecSyncRequest {
            container_id: huge.clone(),
            ..Default::default()
        }));
        record(&tonic::Request::new(cri::RemoveContainerRequest {
            container_id: String::new(),
        }));
    });
    let id = &f["container_id"];
    assert!(
        id.starts_with("xxx") && id.len() < MAX_SPAN_FIELD + 80,
        "{}",
        id.len()
    );
}
