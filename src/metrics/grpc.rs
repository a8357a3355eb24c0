//! The tower layer that counts and times every RPC the gRPC server answers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::{Request, Response};
use tower::{Layer, Service};

/// Counts each RPC by service, method and gRPC code, and times it. With metrics
/// off it passes calls straight through.
#[derive(Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for GrpcMetrics<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let timer = super::Timer::start();
        let path = req.uri().path().to_string();
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await;
            if super::families().is_some() {
                let code = match &response {
                    Ok(r) => grpc_code(r.headers().get("grpc-status").map(|v| v.as_bytes())),
                    Err(_) => "Unknown",
                };
                let (service, method) = split_path(&path, code);
                super::grpc_request(service, method, code, timer.elapsed());
            }
            response
        })
    }
}

/// The code of a reply. tonic puts `grpc-status` in the headers of a reply that
/// failed before its body (a "trailers-only" reply, as every error of a unary
/// call is); a reply without it there carries OK in its trailers.
fn grpc_code(status: Option<&[u8]>) -> &'static str {
    let Some(status) = status else { return "OK" };
    let code = std::str::from_utf8(status)
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .unwrap_or(2);
    tonic::Code::from_i32(code).description_name()
}

/// `/runtime.v1.RuntimeService/RunPodSandbox` -> (`runtime.v1.RuntimeService`,
/// `RunPodSandbox`). The path is the client's to choose, so a call the server
/// has no route for (Unimplemented) is counted under `unknown` rather than
/// minting a series per made-up name.
fn split_path<'a>(path: &'a str, code: &str) -> (&'a str, &'a str) {
    let parts = path.trim_start_matches('/').split_once('/');
    match parts {
        Some((service, method)) if code != "Unimplemented" && !method.contains('/') => {
            (service, method)
        }
        _ => ("unknown", "unknown"),
    }
}

trait CodeName {
    fn description_name(self) -> &'static str;
}

impl CodeName for tonic::Code {
    /// The code's name as gRPC spells it (`NotFound`, `DeadlineExceeded`).
    fn description_name(self) -> &'static str {
        use tonic::Code::*;
        match self {
            Ok => "OK",
            Cancelled => "Canceled",
            Unknown => "Unknown",
            InvalidArgument => "InvalidArgument",
            DeadlineExceeded => "DeadlineExceeded",
            NotFound => "NotFound",
            AlreadyExists => "AlreadyExists",
            PermissionDenied => "PermissionDenied",
            ResourceExhausted => "ResourceExhausted",
            FailedPrecondition => "FailedPrecondition",
            Aborted => "Aborted",
            OutOfRange => "OutOfRange",
            Unimplemented => "Unimplemented",
            Internal => "Internal",
            Unavailable => "Unavailable",
            DataLoss => "DataLoss",
            Unauthenticated => "Unauthenticated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_from_headers() {
        assert_eq!(grpc_code(None), "OK");
        assert_eq!(grpc_code(Some(b"5")), "NotFound");
        assert_eq!(grpc_code(Some(b"3")), "InvalidArgument");
        assert_eq!(grpc_code(Some(b"junk")), "Unknown");
        assert_eq!(grpc_code(Some(b"99")), "Unknown");
    }

    #[test]
    fn unrouted_paths_share_one_series() {
        let rpc = "/runtime.v1.RuntimeService/RunPodSandbox";
        assert_eq!(
            split_path(rpc, "OK"),
            ("runtime.v1.RuntimeService", "RunPodSandbox")
        );
        assert_eq!(split_path(rpc, "Unimplemented"), ("unknown", "unknown"));
        assert_eq!(split_path("/x/y/z", "OK"), ("unknown", "unknown"));
        assert_eq!(split_path("/nothing", "OK"), ("unknown", "unknown"));
    }
}
