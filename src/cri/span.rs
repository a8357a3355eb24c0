//! One tracing span per RPC, carrying the ids the request names: the span is
//! made for every call by the server (`rpc_span`, with the method), and each
//! handler fills in what its request says ([`record`]), so every line logged
//! while serving a call (including the one error line of `From<Error> for
//! Status`) says which pod, container or image it was about.

use k8s_cri::v1 as cri;
use tracing::Span;
use tracing::field::Empty;

/// The most of a client-given id or image name a span field holds: ids are 64
/// hex digits and references rarely pass 200 bytes, but a client may send
/// anything up to the message size, and every log line of the call repeats it.
const MAX_SPAN_FIELD: usize = 256;

/// The span of one RPC; the id fields are filled by [`record`].
pub fn rpc_span(method: &str) -> Span {
    tracing::info_span!(
        "rpc",
        method = %method,
        // An exported (OTLP) span is named by its RPC: `service/Method`.
        otel.name = method.trim_start_matches('/'),
        pod_id = Empty,
        container_id = Empty,
        image = Empty
    )
}

/// The ids a request names, where it names them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RpcIds<'a> {
    pub pod_id: Option<&'a str>,
    pub container_id: Option<&'a str>,
    pub image: Option<&'a str>,
}

/// A request that names a pod, a container or an image.
pub trait HasIds {
    fn ids(&self) -> RpcIds<'_>;
}

/// Fills the current RPC span with the ids `request` names.
pub fn record<R: HasIds>(request: &tonic::Request<R>) {
    record_ids(&Span::current(), &request.get_ref().ids());
}

/// Records `id` as the span's `field` (a pod or container id a call made).
pub fn record_made(field: &'static str, id: &str) {
    record_field(&Span::current(), field, Some(id));
}

fn record_ids(span: &Span, ids: &RpcIds<'_>) {
    record_field(span, "pod_id", ids.pod_id);
    record_field(span, "container_id", ids.container_id);
    record_field(span, "image", ids.image);
}

fn record_field(span: &Span, field: &'static str, value: Option<&str>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        let value = crate::error::bounded_message(value.to_string(), MAX_SPAN_FIELD);
        span.record(field, value.as_str());
    }
}

macro_rules! pod_requests {
    ($($t:ident),* $(,)?) => {$(
        impl HasIds for cri::$t {
            fn ids(&self) -> RpcIds<'_> {
                RpcIds { pod_id: Some(&self.pod_sandbox_id), ..Default::default() }
            }
        }
    )*};
}

macro_rules! container_requests {
    ($($t:ident),* $(,)?) => {$(
        impl HasIds for cri::$t {
            fn ids(&self) -> RpcIds<'_> {
                RpcIds { container_id: Some(&self.container_id), ..Default::default() }
            }
        }
    )*};
}

macro_rules! image_requests {
    ($($t:ident),* $(,)?) => {$(
        impl HasIds for cri::$t {
            fn ids(&self) -> RpcIds<'_> {
                RpcIds {
                    image: self.image.as_ref().map(|i| i.image.as_str()),
                    ..Default::default()
                }
            }
        }
    )*};
}

pod_requests!(
    StopPodSandboxRequest,
    RemovePodSandboxRequest,
    PodSandboxStatusRequest,
    PodSandboxStatsRequest,
    PortForwardRequest,
);

container_requests!(
    StartContainerRequest,
    StopContainerRequest,
    RemoveContainerRequest,
    ContainerStatusRequest,
    UpdateContainerResourcesRequest,
    ReopenContainerLogRequest,
    ExecSyncRequest,
    ExecRequest,
    AttachRequest,
    ContainerStatsRequest,
);

image_requests!(PullImageRequest, ImageStatusRequest, RemoveImageRequest);

impl HasIds for cri::CreateContainerRequest {
    fn ids(&self) -> RpcIds<'_> {
        RpcIds {
            pod_id: Some(&self.pod_sandbox_id),
            image: self
                .config
                .as_ref()
                .and_then(|c| c.image.as_ref())
                .map(|i| i.image.as_str()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests;
