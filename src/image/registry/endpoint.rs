//! The hosts a client tries in turn (mirrors, then the upstream), and which error to
//! report when all of them fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Response;
use reqwest::header::{self, HeaderMap, HeaderValue};

use super::credentials::Credentials;
use super::http::transport_error;
use super::{RegistryClient, RegistryError};
use crate::image::hosts::{Capability, RegistryHost};

/// One host to try, with its HTTP client and what it has authorised us with.
pub(super) struct Endpoint {
    pub(super) host: RegistryHost,
    /// "https://host/v2/<repository>"
    pub(super) base: String,
    /// "https://host:443", to tell token servers on other hosts.
    pub(super) origin: String,
    pub(super) http: reqwest::Client,
    /// The host's configured extra headers.
    pub(super) headers: HeaderMap,
    /// The Authorization header that last worked here (a token or Basic).
    pub(super) authorization: Mutex<Option<HeaderValue>>,
    /// The pull's credentials if this host may have them
    /// ([`super::binding`]), else `None`: it is asked anonymously.
    pub(super) credentials: Option<Credentials>,
    /// How long a request here may receive nothing (the clients' read timeout).
    pub(super) stall_timeout: Duration,
    /// Whether the host has failed during this pull.
    pub(super) health: Arc<Health>,
}

/// Whether a host has failed (could not be reached, stalled, broke off a
/// body, kept answering 5xx) during the pull that holds this client. A
/// failing host is asked last from then on: without that, every blob of the
/// pull would wait out the same stall or backoff, and a resumed download
/// would go back to the host that just broke it off.
#[derive(Debug, Default)]
pub(super) struct Health {
    failing: AtomicBool,
}

impl Health {
    pub(super) fn mark_failing(&self) {
        self.failing.store(true, Ordering::Relaxed);
    }

    fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

impl Endpoint {
    pub(super) fn url(&self, kind: &str, object: &str) -> String {
        format!("{}/{kind}/{object}", self.base)
    }

    pub(super) fn cached_authorization(&self) -> Option<HeaderValue> {
        // A poisoned lock still holds a usable value.
        self.authorization
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn cache_authorization(&self, value: HeaderValue) {
        *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }

    pub(super) async fn get(
        &self,
        url: &str,
        extra: &HeaderMap,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response, RegistryError> {
        let mut request = self
            .http
            .get(url)
            .headers(self.headers.clone())
            .headers(extra.clone());
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value.clone());
        }
        request
            .send()
            .await
            .map_err(|e| transport_error(url, e, self.stall_timeout))
    }
}

impl RegistryClient {
    /// The hosts that may serve `capability`, each with whether it is the
    /// upstream (the last host): in the configured order, except that hosts
    /// that failed earlier in this pull come after all the others.
    pub(super) fn endpoints_for(
        &self,
        capability: Capability,
    ) -> impl Iterator<Item = (&Endpoint, bool)> {
        let upstream = self.inner.endpoints.len() - 1;
        // Health as it is now: a host failing during the iteration is not
        // asked a second time at the end.
        let (healthy, failing): (Vec<_>, Vec<_>) = self
            .inner
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, endpoint)| endpoint.host.has(capability))
            .map(|(index, endpoint)| (endpoint, index == upstream))
            .partition(|(endpoint, _)| !endpoint.health.is_failing());
        healthy.into_iter().chain(failing)
    }
}

/// The errors of the hosts tried so far. Any failure moves on to the next
/// host (as containerd does): a mirror may be down, lack the content, or
/// want other credentials. When all fail, the most telling error is kept.
#[derive(Default)]
pub(super) struct Failures {
    best: Option<(u8, RegistryError)>,
}

impl Failures {
    pub(super) fn record(
        &mut self,
        endpoint: &Endpoint,
        is_upstream: bool,
        what: &str,
        error: RegistryError,
    ) {
        tracing::debug!(
            host = %endpoint.host.host,
            %error,
            "{what}: registry host failed, trying the next one"
        );
        if is_host_failure(&error) {
            endpoint.health.mark_failing();
        }
        let rank = usefulness(&error, is_upstream);
        // Later hosts win ties: they are closer to the upstream.
        if self.best.as_ref().is_none_or(|(best, _)| rank >= *best) {
            self.best = Some((rank, error));
        }
    }

    pub(super) fn into_error(
        self,
        client: &RegistryClient,
        capability: Capability,
        what: &str,
    ) -> RegistryError {
        match self.best {
            Some((_, error)) => error,
            None => RegistryError::Invalid {
                what: what.to_string(),
                message: format!(
                    "no configured host of {} may {}",
                    client.inner.registry,
                    capability_verb(capability)
                ),
            },
        }
    }
}

/// How much an error from one host says about the object, to pick the one
/// to report when every host failed: the upstream's answer is
/// authoritative, a mirror's answer beats a host we could not reach, and a
/// mirror lacking the object says least.
pub(super) fn usefulness(error: &RegistryError, from_upstream: bool) -> u8 {
    match error {
        RegistryError::NotFound { .. } if !from_upstream => 0,
        RegistryError::Transport { .. } => 1,
        _ if from_upstream => 3,
        _ => 2,
    }
}

/// Whether an error says the host is down or unwell, rather than something
/// about the object (missing, refused, invalid).
fn is_host_failure(error: &RegistryError) -> bool {
    match error {
        RegistryError::Transport { .. }
        | RegistryError::Stalled { .. }
        | RegistryError::Redirect { .. } => true,
        RegistryError::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
        _ => false,
    }
}

fn capability_verb(capability: Capability) -> &'static str {
    match capability {
        Capability::Pull => "pull",
        Capability::Resolve => "resolve tags",
        Capability::Push => "push",
    }
}
