//! A call's `grpc-timeout` answered as DeadlineExceeded, as a grpc-go server
//! (containerd's, CRI-O's) answers it and critest's "should timeout if requested"
//! expects. tonic enforces the header itself but answers Cancelled ("Timeout
//! expired"); its timer sits outside the services' layers and polls the service
//! before its own sleep, so this layer, whose deadline comes due first, answers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::{Request, Response};
use tower::{Layer, Service};

/// How much earlier than the caller's deadline this layer answers, so that it,
/// not tonic's own timer, is due first (tokio's timers tick once a millisecond).
const AHEAD: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_timeout);
        let call = self.inner.call(req);
        Box::pin(async move {
            let Some(timeout) = timeout else {
                return call.await;
            };
            match tokio::time::timeout(timeout.saturating_sub(AHEAD), call).await {
                Ok(answer) => answer,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the call's deadline ({timeout:?}) passed"
                ))
                .into_http()),
            }
        })
    }
}

/// The gRPC wire form of a timeout: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_timeout(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that answers OK after `delay`.
    fn slow(
        delay: Duration,
    ) -> Deadline<
        impl Service<
            Request<()>,
            Response = Response<tonic::body::Body>,
            Error = std::convert::Infallible,
            Future = impl Future + Send + 'static,
        > + Clone,
    > {
        DeadlineLayer.layer(tower::service_fn(move |_req: Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(tonic::Status::ok("").into_http())
        }))
    }

    fn call_with(timeout: Option<&str>) -> Request<()> {
        let mut req = Request::new(());
        if let Some(t) = timeout {
            req.headers_mut().insert("grpc-timeout", t.parse().unwrap());
        }
        req
    }

    fn code(res: &Response<tonic::body::Body>) -> String {
        res.headers()["grpc-status"].to_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_deadline_exceeded() {
        let res = slow(Duration::from_secs(10))
            .call(call_with(Some("20m")))
            .await
            .unwrap();
        assert_eq!(code(&res), "4", "DeadlineExceeded, not tonic's Cancelled");
    }

    #[tokio::test]
    async fn calls_with_time_to_spare_or_no_deadline_are_answered_by_the_service() {
        let res = slow(Duration::ZERO)
            .call(call_with(Some("10S")))
            .await
            .unwrap();
        assert_eq!(code(&res), "0");
        let res = slow(Duration::from_millis(5))
            .call(call_with(None))
            .await
            .unwrap();
        assert_eq!(code(&res), "0");
        let res = slow(Duration::ZERO)
            .call(call_with(Some("garbage")))
            .await
            .unwrap();
        assert_eq!(code(&res), "0", "a malformed header is not a deadline");
    }

    #[test]
    fn timeouts_in_their_wire_form() {
        assert_eq!(parse_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(
            parse_timeout("99999999S"),
            Some(Duration::from_secs(99_999_999))
        );
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_timeout("100000000S"), None, "more than 8 digits");
        assert_eq!(parse_timeout("m"), None);
        assert_eq!(parse_timeout("10x"), None);
        assert_eq!(parse_timeout("-1S"), None);
        assert_eq!(parse_timeout(""), None);
    }
}
