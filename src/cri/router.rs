//! The RuntimeService as berthd serves it: the generated server, with
//! ListContainers and ListPodSandbox answered from kept frames
//! ([`super::list_wire`]) in front of it. The generated server can only
//! answer with the generated response types, which would mean decoding the
//! kept frames into strings and maps to encode them again; this service
//! serves the two paths through the same `tonic::server::Grpc` machinery with
//! a codec whose response is the frames. Everything else (the layers, the
//! span, metrics, deadline, message size limits, error mapping) is the
//! server's and applies to both alike.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tonic::codegen::{Body, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic_prost::ProstCodec;

use super::list_wire::EncodedList;
use super::runtime::CriRuntimeService;

const LIST_CONTAINERS: &str = "/runtime.v1.RuntimeService/ListContainers";
const LIST_POD_SANDBOX: &str = "/runtime.v1.RuntimeService/ListPodSandbox";

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send + 'static>>;

#[derive(Clone)]
pub struct RuntimeServer {
    cri: Arc<CriRuntimeService>,
    generated: RuntimeServiceServer<CriRuntimeService>,
    max_message_bytes: usize,
}

impl RuntimeServer {
    /// Decoded requests and encoded responses are bounded by
    /// `max_message_bytes` on every path.
    pub fn new(cri: CriRuntimeService, max_message_bytes: usize) -> Self {
        let cri = Arc::new(cri);
        let generated = RuntimeServiceServer::from_arc(Arc::clone(&cri))
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        RuntimeServer {
            cri,
            generated,
            max_message_bytes,
        }
    }

    /// Answers `req` through `method`, as the generated server answers a
    /// unary call (no compression, the same size limits).
    fn unary<M, Req, B>(
        &self,
        method: M,
        req: http::Request<B>,
    ) -> BoxFuture<http::Response<tonic::body::Body>>
    where
        M: UnaryService<Req, Response = EncodedList> + Send + 'static,
        M::Future: Send,
        Req: prost::Message + Default + Send + 'static,
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let limit = Some(self.max_message_bytes);
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<EncodedList, Req>::default())
                .apply_max_message_size_config(limit, limit);
            Ok(grpc.unary(method, req).await)
        })
    }
}

impl NamedService for RuntimeServer {
    const NAME: &'static str = <RuntimeServiceServer<CriRuntimeService> as NamedService>::NAME;
}

impl<B> tower::Service<http::Request<B>> for RuntimeServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            LIST_CONTAINERS => self.unary(
                ListCall {
                    cri: Arc::clone(&self.cri),
                    answer: CriRuntimeService::list_containers_encoded,
                },
                req,
            ),
            LIST_POD_SANDBOX => self.unary(
                ListCall {
                    cri: Arc::clone(&self.cri),
                    answer: CriRuntimeService::list_pod_sandbox_encoded,
                },
                req,
            ),
            _ => self.generated.call(req),
        }
    }
}

/// One List path: the request handed to the method that answers it from the
/// kept frames.
struct ListCall<Req> {
    cri: Arc<CriRuntimeService>,
    answer: fn(&CriRuntimeService, Req) -> EncodedList,
}

impl<Req> UnaryService<Req> for ListCall<Req> {
    type Response = EncodedList;
    type Future = std::future::Ready<Result<tonic::Response<EncodedList>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let list = (self.answer)(&self.cri, request.into_inner());
        std::future::ready(Ok(tonic::Response::new(list)))
    }
}
