//! The hosts a client tries in turn (mirrors, then the upstream), and which error to
//! report when all of them fail.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::Response;
use reqwest::header::{self, HeaderMap, HeaderValue};

use super::auth::Credentials;
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
    /// The hosts that may serve `capability`, in order, each with whether it
    /// is the upstream (the last host).
    pub(super) fn endpoints_for(
        &self,
        capability: Capability,
    ) -> impl Iterator<Item = (&Endpoint, bool)> {
        let upstream = self.inner.endpoints.len() - 1;
        self.inner
            .endpoints
            .iter()
            .enumerate()
            .filter(move |(_, endpoint)| endpoint.host.has(capability))
            .map(move |(index, endpoint)| (endpoint, index == upstream))
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

fn capability_verb(capability: Capability) -> &'static str {
    match capability {
        Capability::Pull => "pull",
        Capability::Resolve => "resolve tags",
        Capability::Push => "push",
    }
}
