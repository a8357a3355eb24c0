//! `[tracing] endpoint`: berthd exports its spans over OTLP/HTTP to a collector
//! stand-in this test runs, which records and decodes what arrives.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use common::world::{World, busybox_image};
use common::{Image, Layer};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

/// An OTLP/HTTP endpoint that keeps every span POSTed to /v1/traces.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| record(req, kept.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Collector { url, spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

async fn record(
    req: Request<hyper::body::Incoming>,
    kept: Arc<Mutex<Vec<Span>>>,
) -> Result<Response<String>, Infallible> {
    assert_eq!(req.uri().path(), "/v1/traces");
    assert_eq!(req.headers()["content-type"], "application/x-protobuf");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let export = ExportTraceServiceRequest::decode(body).expect("an OTLP export request");
    let mut kept = kept.lock().unwrap();
    for resource in export.resource_spans {
        for scope in resource.scope_spans {
            kept.extend(scope.spans);
        }
    }
    Ok(Response::new(String::new()))
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let kv = span.attributes.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found = named(spans, name);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(found.len(), 1, "spans named {name} among {names:?}");
    found[0]
}

#[tokio::test]
async fn rpc_and_layer_spans_reach_the_collector() {
    let collector = Collector::start().await;
    let extra = format!("[tracing]\nendpoint = \"{}\"\n", collector.url);
    let Some(mut world) = World::start_configured(&[], busybox_image(), &extra).await else {
        return;
    };
    // Two layers, so that "a child per layer" is more than one span.
    let two_layers = Image::oci()
        .layer(Layer::new().file("a.txt", "one").gzip())
        .layer(Layer::new().file("b.txt", "two").gzip())
        .build();
    two_layers.push(&world.registry, "test/two", "1").await;
    let reference = world.registry.reference("test/two", "1");
    world.cri.pull(&reference).await.expect("pull");
    let (pod_id, _) = world.run_pod("traced").await;
    common::pod::stop(&world.cri, &pod_id)
        .await
        .expect("StopPodSandbox");
    common::pod::remove(&world.cri, &pod_id)
        .await
        .expect("RemovePodSandbox");

    // SIGTERM: berthd flushes what its batch still holds before it exits.
    let status = world.berthd.stop().await;
    assert!(status.success(), "{status}");
    let spans = collector.spans();

    // The pull of the two-layer image: its RPC span, the pull under it, and a
    // download and an unpack per layer under the pull.
    let pulls: Vec<&Span> = named(&spans, "pull")
        .into_iter()
        .filter(|s| attribute(s, "image").as_deref() == Some(reference.as_str()))
        .collect();
    assert_eq!(pulls.len(), 1, "{spans:#?}");
    let pull = pulls[0];
    let rpc = spans
        .iter()
        .find(|s| s.span_id == pull.parent_span_id)
        .expect("the pull's parent span");
    assert_eq!(rpc.name, "runtime.v1.ImageService/PullImage");
    assert_eq!(attribute(rpc, "image").as_deref(), Some(reference.as_str()));
    assert_eq!(rpc.trace_id, pull.trace_id);
    for kind in ["download", "unpack"] {
        let children: Vec<&Span> = named(&spans, kind)
            .into_iter()
            .filter(|s| s.parent_span_id == pull.span_id)
            .collect();
        assert_eq!(children.len(), 2, "{kind} spans under the pull: {spans:#?}");
        let mut digests: Vec<String> = children
            .iter()
            .map(|s| attribute(s, "digest").expect("a digest attribute"))
            .collect();
        digests.dedup();
        assert_eq!(digests.len(), 2, "one {kind} per layer: {digests:?}");
    }

    // Each layer's download ends before its unpack starts: the spans time the phases.
    for download in named(&spans, "download") {
        let digest = attribute(download, "digest");
        let unpack = named(&spans, "unpack")
            .into_iter()
            .find(|u| {
                u.parent_span_id == download.parent_span_id && attribute(u, "digest") == digest
            })
            .expect("an unpack span for each download");
        assert!(download.end_time_unix_nano <= unpack.start_time_unix_nano);
    }

    // RunPodSandbox: its RPC span, and the pod's id on the span of the work it
    // started (and on the CNI call under it).
    let run = one(&spans, "runtime.v1.RuntimeService/RunPodSandbox");
    let work = one(&spans, "run_pod_sandbox");
    assert_eq!(work.parent_span_id, run.span_id);
    assert_eq!(attribute(work, "pod_id").as_deref(), Some(pod_id.as_str()));
    let cni: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == run.trace_id && s.span_id != work.span_id)
        .filter(|s| attribute(s, "pod_id").as_deref() == Some(pod_id.as_str()))
        .collect();
    assert!(!cni.is_empty(), "no span under RunPodSandbox names the pod");
    assert_eq!(
        attribute(run, "method").as_deref(),
        Some("/runtime.v1.RuntimeService/RunPodSandbox")
    );
    // The RPC span itself names the pod it made.
    assert_eq!(attribute(run, "pod_id").as_deref(), Some(pod_id.as_str()));
}
