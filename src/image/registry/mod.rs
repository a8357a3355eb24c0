//! A pull-only client for the OCI distribution API (registry v2): manifests
//! and blobs from one repository, over the hosts `hosts.toml` configures
//! (mirrors first, then the upstream), with Basic and Bearer token auth.

mod auth;
mod blob;
mod challenge;
mod endpoint;
mod http;
mod manifest;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex};

use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};

use super::hosts::RegistryHost;
use challenge::challenges_of;
use endpoint::Endpoint;
use http::{HttpClients, configured_headers, error_message};

pub use auth::Credentials;
pub use blob::BlobResponse;
pub use manifest::Manifest;

use super::hosts::DOCKER_HUB_HOST;

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
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
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
    credentials: Option<Credentials>,
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
    /// `hosts` in the order to try them, the upstream last (as
    /// [`super::hosts::hosts_for`] returns them); `repository` as in the
    /// reference ("library/busybox").
    pub fn new(
        hosts: Vec<RegistryHost>,
        repository: &str,
        credentials: Option<Credentials>,
    ) -> Result<Self, RegistryError> {
        let invalid = |message: String| RegistryError::Invalid {
            what: format!("registry client for {repository}"),
            message,
        };
        let Some(upstream) = hosts.last() else {
            return Err(invalid("no registry hosts configured".into()));
        };
        if !is_repository_name(repository) {
            return Err(invalid("invalid repository name".into()));
        }
        let registry = match upstream.host.as_str() {
            DOCKER_HUB_HOST => "docker.io".to_string(),
            host => host.to_string(),
        };
        let mut clients = HttpClients::default();
        let mut endpoints = Vec::with_capacity(hosts.len());
        for host in hosts {
            let http = clients.for_host(&host)?;
            let headers = configured_headers(&host).map_err(invalid)?;
            endpoints.push(Endpoint {
                base: format!("{}://{}{}/{repository}", host.scheme, host.host, host.path),
                host,
                http,
                headers,
                authorization: Mutex::new(None),
            });
        }
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                registry,
                repository: repository.to_string(),
                endpoints,
                credentials,
            }),
        })
    }

    /// "127.0.0.1:5000/test/image", for messages.
    fn name(&self) -> String {
        format!("{}/{}", self.inner.registry, self.inner.repository)
    }

    /// Sends a GET to one host, answering an auth challenge once.
    async fn send(
        &self,
        endpoint: &Endpoint,
        url: &str,
        what: &str,
        extra: &HeaderMap,
    ) -> Result<Response, RegistryError> {
        let cached = endpoint.cached_authorization();
        let response = endpoint.get(url, extra, cached.as_ref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return self.check_status(endpoint, response, url, what).await;
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
        self.check_status(endpoint, response, url, what).await
    }

    async fn check_status(
        &self,
        endpoint: &Endpoint,
        response: Response,
        url: &str,
        what: &str,
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
            _ => Err(RegistryError::Http {
                url: url.to_string(),
                status: status.as_u16(),
                message: error_message(response).await,
            }),
        }
    }

    /// The registry said no after we authenticated as well as we could.
    fn refused(&self, endpoint: &Endpoint, what: &str, message: &str) -> RegistryError {
        RegistryError::Unauthorized {
            registry: endpoint.host.host.clone(),
            message: format!("{what}: {message}; {}", self.hint()),
        }
    }

    /// What to do about a refusal.
    fn hint(&self) -> &'static str {
        if self.inner.credentials.is_some() {
            "check the credentials"
        } else {
            "the repository may not exist or may need credentials"
        }
    }
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
