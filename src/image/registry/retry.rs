//! When a host answers "not now" (429, 408, 5xx), the same request is sent
//! again after a wait: exponential backoff, or the `Retry-After` the host
//! asked for, both capped, for a bounded number of attempts. After that the
//! error goes to the caller, which moves on to the next host.
//!
//! containerd (`remotes/docker/resolver.go`) resends 408 and 429 at once, up
//! to five times, ignoring `Retry-After`, and leaves 5xx as a TODO;
//! containers/image (CRI-O) backs off on 429 honouring `Retry-After`.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};

/// Requests sent to one host for one object before giving up on it: a
/// registry restarting or shedding load usually recovers within the few
/// seconds three retries wait; longer, the next host (or a later pull) is
/// the better bet.
pub(super) const MAX_ATTEMPTS: u32 = 4;
/// Wait before the first retry, doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Longest `Retry-After` honoured: a host asking for more (an hour, a date
/// next week) would hold the pull, and the kubelet's own retry, hostage.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Whether a response with `status` is worth sending again: the host is
/// overloaded, restarting or timed out, not refusing the request itself.
pub(super) fn is_retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::REQUEST_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// How long to wait before attempt `attempt + 1` (attempts count from 1):
/// the host's `Retry-After` if it sent a valid one, else the backoff; never
/// more than [`MAX_RETRY_AFTER`].
pub(super) fn delay(attempt: u32, headers: &HeaderMap, now: SystemTime) -> Duration {
    let asked = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, now));
    asked
        .unwrap_or_else(|| backoff(attempt))
        .min(MAX_RETRY_AFTER)
}

/// 500 ms, 1 s, 2 s, ... up to [`MAX_BACKOFF`].
fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// `Retry-After: 120` or `Retry-After: Fri, 04 Dec 2026 23:30:00 GMT`
/// (RFC 9110 10.2.3); a date in the past means now.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn with_retry_after(value: &str) -> HeaderMap {
        HeaderMap::from_iter([(header::RETRY_AFTER, HeaderValue::from_str(value).unwrap())])
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(
                is_retryable(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [200, 400, 401, 403, 404, 416, 501, 505] {
            assert!(
                !is_retryable(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let now = SystemTime::now();
        let none = HeaderMap::new();
        assert_eq!(delay(1, &none, now), Duration::from_millis(500));
        assert_eq!(delay(2, &none, now), Duration::from_secs(1));
        assert_eq!(delay(3, &none, now), Duration::from_secs(2));
        assert_eq!(delay(10, &none, now), MAX_BACKOFF);
        assert_eq!(delay(u32::MAX, &none, now), MAX_BACKOFF);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_is_honoured_and_capped() {
        let now = httpdate::parse_http_date("Fri, 04 Dec 2026 23:00:00 GMT").unwrap();
        assert_eq!(
            delay(1, &with_retry_after("3"), now),
            Duration::from_secs(3)
        );
        assert_eq!(delay(1, &with_retry_after(" 0 "), now), Duration::ZERO);
        assert_eq!(
            delay(1, &with_retry_after("Fri, 04 Dec 2026 23:00:07 GMT"), now),
            Duration::from_secs(7)
        );
        // A date in the past: retry now.
        assert_eq!(
            delay(1, &with_retry_after("Fri, 04 Dec 2026 22:00:00 GMT"), now),
            Duration::ZERO
        );
        // Too long: capped.
        assert_eq!(delay(1, &with_retry_after("86400"), now), MAX_RETRY_AFTER);
        assert_eq!(
            delay(1, &with_retry_after("Sat, 12 Dec 2026 23:00:00 GMT"), now),
            MAX_RETRY_AFTER
        );
        // Garbage: the backoff.
        assert_eq!(
            delay(2, &with_retry_after("soon"), now),
            Duration::from_secs(1)
        );
        assert_eq!(
            delay(1, &with_retry_after("-5"), now),
            Duration::from_millis(500)
        );
    }
}
