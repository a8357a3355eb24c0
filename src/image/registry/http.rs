//! HTTP plumbing: one reqwest client per TLS setting, configured headers, bounded body
//! reads, the registry's error messages, and transport errors with their causes.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::Response;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::RegistryError;
use crate::image::hosts::RegistryHost;

/// containerd's default `dial_timeout`: long enough for a slow TLS handshake
/// across the world, short enough that a dead host fails the pull promptly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects followed per request: reqwest's and Go's default; a registry
/// needs one or two (to blob storage). A loop is refused before that.
const MAX_REDIRECTS: usize = 10;
const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));

/// Bounds for bodies read only to get a token or an error message.
pub(super) const TOKEN_BODY_LIMIT: u64 = 1 << 20;
const ERROR_BODY_LIMIT: u64 = 64 << 10;

/// Reads a whole body, refusing more than `limit` bytes: a declared length
/// over it fails at once, an undeclared one while reading.
pub(super) async fn read_body(
    mut response: Response,
    url: &str,
    what: &str,
    limit: u64,
    stall_timeout: Duration,
) -> Result<Bytes, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        what: what.to_string(),
        limit,
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(url, e, stall_timeout))?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The registry's own explanation of an error: `errors[0].message` of the
/// distribution error body, else the start of the text, else the reason.
pub(super) async fn error_message(response: Response) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        message: String,
    }
    let status = response.status();
    let reason = status.canonical_reason().unwrap_or("error").to_string();
    let url = response.url().to_string();
    // A read error only costs the message; the stall timeout is the client's.
    let Ok(body) = read_body(
        response,
        &url,
        "error body",
        ERROR_BODY_LIMIT,
        Duration::ZERO,
    )
    .await
    else {
        return reason;
    };
    let registry_message = serde_json::from_slice::<ErrorBody>(&body)
        .ok()
        .and_then(|parsed| {
            parsed
                .errors
                .into_iter()
                .map(|e| e.message)
                .find(|m| !m.is_empty())
        });
    if let Some(message) = registry_message {
        return message;
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() || text.starts_with('<') {
        reason // empty, or an HTML error page
    } else {
        text.chars().take(200).collect()
    }
}

pub(super) fn configured_headers(host: &RegistryHost) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in &host.header {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|e| format!("header {name:?} of {}: {e}", host.host))?;
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|e| format!("header {name} of {}: {e}", host.host))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// One reqwest client per distinct TLS setting among the hosts.
pub(super) struct HttpClients {
    stall_timeout: Duration,
    built: Vec<(TlsSettings, reqwest::Client)>,
}

#[derive(PartialEq)]
struct TlsSettings {
    skip_verify: bool,
    ca: Vec<std::path::PathBuf>,
    client: Vec<(std::path::PathBuf, Option<std::path::PathBuf>)>,
}

impl HttpClients {
    pub(super) fn new(stall_timeout: Duration) -> HttpClients {
        HttpClients {
            stall_timeout,
            built: Vec::new(),
        }
    }

    pub(super) fn for_host(
        &mut self,
        host: &RegistryHost,
    ) -> Result<reqwest::Client, RegistryError> {
        let settings = TlsSettings {
            skip_verify: host.skip_verify,
            ca: host.ca.clone(),
            client: host.client.clone(),
        };
        if let Some((_, client)) = self.built.iter().find(|(s, _)| *s == settings) {
            return Ok(client.clone());
        }
        let client = build_client(&settings, &host.host, self.stall_timeout)?;
        self.built.push((settings, client.clone()));
        Ok(client)
    }
}

/// No overall timeout: a big blob may take long. A dead host is caught
/// connecting, a stalled one by the read timeout: it restarts with every
/// chunk received, and covers waiting for the response headers too.
/// Redirects drop `Authorization` when the host or port changes (reqwest's
/// policy, as Go's net/http): blob storage never sees the credentials.
fn build_client(
    settings: &TlsSettings,
    host: &str,
    stall_timeout: Duration,
) -> Result<reqwest::Client, RegistryError> {
    let invalid = |message: String| RegistryError::Invalid {
        what: format!("TLS configuration for {host}"),
        message,
    };
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(stall_timeout)
        .redirect(redirect_policy())
        .user_agent(USER_AGENT);
    if settings.skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    for path in &settings.ca {
        let pem = std::fs::read(path)
            .map_err(|e| invalid(format!("reading CA {}: {e}", path.display())))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| invalid(format!("CA {}: {}", path.display(), error_chain(&e))))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some((cert, key)) = settings.client.first() {
        if settings.client.len() > 1 {
            tracing::warn!(host, "only the first client certificate is used");
        }
        builder = builder.identity(read_identity(cert, key.as_deref()).map_err(invalid)?);
    }
    builder.build().map_err(|e| invalid(error_chain(&e)))
}

/// A client certificate with its key, from one combined PEM or two files.
fn read_identity(
    cert: &std::path::Path,
    key: Option<&std::path::Path>,
) -> Result<reqwest::Identity, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
    };
    let mut pem = read(cert)?;
    if let Some(key) = key {
        pem.push(b'\n');
        pem.extend(read(key)?);
    }
    reqwest::Identity::from_pem(&pem)
        .map_err(|e| format!("client certificate {}: {}", cert.display(), error_chain(&e)))
}

/// Why a chain of redirects was not followed to its end.
#[derive(Debug, thiserror::Error)]
enum RedirectRefused {
    #[error("redirect loop: redirect {hop} leads back to {url}, already requested")]
    Loop { url: String, hop: usize },
    #[error("more than {MAX_REDIRECTS} redirects (the last to {url})")]
    TooMany { url: String },
}

/// Follows redirects (to blob storage), stopping at the first that leads
/// back to a URL already visited: a loop ends at once with an error saying
/// so, instead of after [`MAX_REDIRECTS`] round trips as "too many".
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        // `previous` holds every URL requested so far, the first one included:
        // this is redirect number `hop`.
        let hop = attempt.previous().len();
        let url = bounded_url(attempt.url());
        if attempt.previous().contains(attempt.url()) {
            attempt.error(RedirectRefused::Loop { url, hop })
        } else if hop > MAX_REDIRECTS {
            attempt.error(RedirectRefused::TooMany { url })
        } else {
            attempt.follow()
        }
    })
}

/// Longest URL quoted in an error: a Location header may be huge, and the
/// message goes back to the kubelet in a gRPC header.
const MAX_QUOTED_URL: usize = 256;

fn bounded_url(url: &reqwest::Url) -> String {
    let text = url.as_str();
    match text.char_indices().nth(MAX_QUOTED_URL) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// The redirect refusal among an error's causes, if any.
fn redirect_refusal(error: &reqwest::Error) -> Option<&RedirectRefused> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<RedirectRefused>() {
            return Some(refused);
        }
        source = cause.source();
    }
    None
}

/// A failed request: stalled (the read timeout fired), redirected in a loop
/// or too often, or any other transport failure with its causes.
pub(super) fn transport_error(
    url: &str,
    error: reqwest::Error,
    stall_timeout: Duration,
) -> RegistryError {
    if error.is_timeout() && !error.is_connect() {
        return RegistryError::Stalled {
            url: url.to_string(),
            idle: stall_timeout,
        };
    }
    if let Some(refused) = redirect_refusal(&error) {
        return RegistryError::Redirect {
            url: url.to_string(),
            message: refused.to_string(),
        };
    }
    RegistryError::Transport {
        url: url.to_string(),
        message: error_chain(&error.without_url()),
    }
}

/// "error sending request: client error (Connect): tcp connect error:
/// Connection refused (os error 111)": reqwest's own message alone says
/// too little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}
