//! A pull-only client for the OCI distribution API (registry v2): manifests
//! and blobs from one repository, over the hosts `hosts.toml` configures
//! (mirrors first, then the upstream), with Basic and Bearer token auth.
//!
//! Credentials go only where they belong: [`binding`] states the rules.
//! Every request has a connect timeout and a stall timeout (no bytes for
//! that long fails the request, naming the URL), so a dead registry gives an
//! error, not a hung pull.

mod auth;
mod binding;
mod blob;
mod challenge;
mod credentials;
mod endpoint;
mod http;
mod manifest;
mod retry;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};

use super::hosts::{RegistryHost, origin_of};
use binding::Binding;
use challenge::challenges_of;
use endpoint::Endpoint;
use http::{HttpClients, configured_headers, error_message};

pub use blob::BlobResponse;
pub use credentials::Credentials;
pub use manifest::Manifest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("unauthorized at registry {registry}: {message}")]
    Unauthorized { registry: String, message: String },
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}: content has digest {actual}, expected {expected}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: HTTP {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error(
        "{url}: the registry sent nothing for {} s; gave up (registry.stall_timeout_seconds)",
        idle.as_secs()
    )]
    Stalled { url: String, idle: Duration },
    #[error("{url}: {message}")]
    Redirect { url: String, message: String },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

/// What each registry failure means to a client: the registry's answer where it
/// gave one, Unavailable (retry later) where it could not be reached, and
/// Interrupted where a transfer broke off and can be resumed.
impl From<RegistryError> for crate::error::Error {
    fn from(e: RegistryError) -> Self {
        use crate::error::Error;
        let message = e.to_string();
        match e {
            RegistryError::NotFound { .. } => Error::NotFound(message),
            RegistryError::Unauthorized { .. } => Error::Unauthenticated(message),
            RegistryError::TooLarge { .. } | RegistryError::Invalid { .. } => {
                Error::InvalidArgument(message)
            }
            RegistryError::DigestMismatch { .. } => Error::DataLoss(message),
            RegistryError::Transport { .. } | RegistryError::Stalled { .. } => {
                Error::Interrupted(message)
            }
            RegistryError::Http { .. } | RegistryError::Redirect { .. } => {
                Error::Unavailable(message)
            }
        }
    }
}

/// A client for one repository; cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The registry as people know it, for messages ("docker.io").
    registry: String,
    repository: String,
    endpoints: Vec<Endpoint>,
    /// The registry the pull's credentials are for, when there are any.
    binding: Option<Binding>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<_> = self.inner.endpoints.iter().map(|e| &e.base).collect();
        f.debug_struct("RegistryClient")
            .field("registry", &self.inner.registry)
            .field("repository", &self.inner.repository)
            .field("hosts", &hosts)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client for `repository` ("library/busybox") of `registry` ("docker.io",
    /// as in the reference). `hosts` in the order to try them, the upstream
    /// last (as [`super::hosts::hosts_for`] returns them). A request that
    /// receives nothing for `stall_timeout` fails.
    pub fn new(
        registry: &str,
        hosts: Vec<RegistryHost>,
        repository: &str,
        credentials: Option<Credentials>,
        stall_timeout: Duration,
    ) -> Result<Self, RegistryError> {
        let invalid = |message: String| RegistryError::Invalid {
            what: format!("registry client for {repository}"),
            message,
        };
        if hosts.is_empty() {
            return Err(invalid("no registry hosts configured".into()));
        }
        if !is_repository_name(repository) {
            return Err(invalid("invalid repository name".into()));
        }
        let binding = match &credentials {
            Some(credentials) => Some(Binding::new(registry, &credentials.server_address)?),
            None => None,
        };
        let mut clients = HttpClients::new(stall_timeout);
        let upstream = hosts.len() - 1;
        let mut endpoints = Vec::with_capacity(hosts.len());
        for (index, host) in hosts.into_iter().enumerate() {
            let admitted = binding
                .as_ref()
                .is_some_and(|b| b.admits(&host, index == upstream));
            endpoints.push(Endpoint {
                http: clients.for_host(&host)?,
                headers: configured_headers(&host).map_err(invalid)?,
                origin: host_origin(&host).map_err(invalid)?,
                base: format!("{}://{}{}/{repository}", host.scheme, host.host, host.path),
                credentials: credentials.clone().filter(|_| admitted),
                host,
                authorization: Mutex::new(None),
                stall_timeout,
                health: Default::default(),
            });
        }
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                registry: registry.to_string(),
                repository: repository.to_string(),
                endpoints,
                binding,
            }),
        })
    }

    /// "127.0.0.1:5000/test/image", for messages.
    fn name(&self) -> String {
        format!("{}/{}", self.inner.registry, self.inner.repository)
    }

    /// Sends a GET to one host, answering an auth challenge once, and again
    /// after a wait while the host answers "not now" ([`retry`]).
    async fn send(
        &self,
        endpoint: &Endpoint,
        url: &str,
        what: &str,
        extra: &HeaderMap,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 1;
        loop {
            let response = self.send_authorized(endpoint, url, what, extra).await?;
            let status = response.status();
            if !retry::is_retryable(status) || attempt >= retry::MAX_ATTEMPTS {
                return self
                    .check_status(endpoint, response, url, what, attempt)
                    .await;
            }
            let wait = retry::delay(attempt, response.headers(), SystemTime::now());
            drop(response);
            tracing::info!(%url, status = status.as_u16(), attempt, ?wait, "{what}: registry busy; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One GET, answering an auth challenge once: any response but a 401.
    async fn send_authorized(
        &self,
        endpoint: &Endpoint,
        url: &str,
        what: &str,
        extra: &HeaderMap,
    ) -> Result<Response, RegistryError> {
        let cached = endpoint.cached_authorization();
        let response = endpoint.get(url, extra, cached.as_ref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        // Anonymous, or the cached token expired: (re)authorise and retry once.
        let challenges = challenges_of(&response);
        drop(response);
        let authorization = self.authorize(endpoint, &challenges, what).await?;
        let response = endpoint.get(url, extra, Some(&authorization)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let message = error_message(response).await;
            return Err(self.refused(endpoint, what, &message));
        }
        endpoint.cache_authorization(authorization);
        Ok(response)
    }

    async fn check_status(
        &self,
        endpoint: &Endpoint,
        response: Response,
        url: &str,
        what: &str,
        attempts: u32,
    ) -> Result<Response, RegistryError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        match status {
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
                what: what.to_string(),
            }),
            StatusCode::FORBIDDEN => {
                let message = error_message(response).await;
                Err(self.refused(endpoint, what, &message))
            }
            _ => {
                let mut message = error_message(response).await;
                if attempts > 1 {
                    message.push_str(&format!(" (after {attempts} attempts)"));
                }
                Err(RegistryError::Http {
                    url: url.to_string(),
                    status: status.as_u16(),
                    message,
                })
            }
        }
    }

    /// The registry said no after we authenticated as well as we could.
    fn refused(&self, endpoint: &Endpoint, what: &str, message: &str) -> RegistryError {
        RegistryError::Unauthorized {
            registry: endpoint.host.host.clone(),
            message: format!("{what}: {message}; {}", self.hint(endpoint)),
        }
    }

    /// What to do about a refusal by `endpoint`.
    fn hint(&self, endpoint: &Endpoint) -> String {
        match &self.inner.binding {
            _ if endpoint.credentials.is_some() => "check the credentials".into(),
            Some(binding) => format!(
                "the credentials given are for {} and are not sent to {} (a mirror gets them \
                 only with send_credentials = true in hosts.toml)",
                binding.bound(),
                endpoint.host.host
            ),
            None => "the repository may not exist or may need credentials".into(),
        }
    }
}

/// "https://registry.example:443", to compare token realms with.
fn host_origin(host: &RegistryHost) -> Result<String, String> {
    reqwest::Url::parse(&format!("{}://{}", host.scheme, host.host))
        .ok()
        .as_ref()
        .and_then(origin_of)
        .ok_or_else(|| format!("{}://{} is not a valid URL", host.scheme, host.host))
}

/// Objects go into URL paths: only tags and sha256 digests are let through.
fn check_object(what: &str, object: &str, by_digest: bool) -> Result<(), RegistryError> {
    let valid = if by_digest {
        object.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    } else {
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        object.as_bytes().first().is_some_and(|&b| is_word(b))
            && object.len() <= 128
            && object.bytes().all(|b| is_word(b) || b == b'.' || b == b'-')
    };
    if valid {
        Ok(())
    } else {
        let expected = if by_digest {
            "a sha256 digest"
        } else {
            "a tag"
        };
        Err(RegistryError::Invalid {
            what: what.to_string(),
            message: format!("{object:?} is not {expected}"),
        })
    }
}

/// Repository names go into URL paths: lowercase path components only.
fn is_repository_name(repository: &str) -> bool {
    repository.split('/').all(|component| {
        !component.is_empty()
            && !component.starts_with('.')
            && component
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    })
}
