//! A pull-only client for the OCI distribution API (registry v2): manifests
//! and blobs from one repository, over the hosts `hosts.toml` configures
//! (mirrors first, then the upstream), with Basic and Bearer token auth.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Response, StatusCode};
use sha2::{Digest as _, Sha256};

use super::hosts::{Capability, RegistryHost};

pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The manifest types we can pull. Docker schema 1 is deliberately absent:
/// a registry that only has that answers with an error instead.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));
/// `client_id` sent to OAuth2 token endpoints.
const TOKEN_CLIENT_ID: &str = "berth";
/// Bounds for bodies read only to get a token or an error message.
const TOKEN_BODY_LIMIT: u64 = 1 << 20;
const ERROR_BODY_LIMIT: u64 = 64 << 10;
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

#[derive(Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token, exchanged at the token realm.
    pub identity_token: String,
    /// A bearer token sent to the registry as it is.
    pub registry_token: String,
}

/// Secrets stay out of logs: only whether each field is set.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("identity_token", &redacted(&self.identity_token))
            .field("registry_token", &redacted(&self.registry_token))
            .finish()
    }
}

impl Credentials {
    /// From the CRI `AuthConfig` fields. `auth` is base64("user:pass") and is
    /// used when `username` is empty. `None` when nothing is set.
    pub fn from_cri(
        username: &str,
        password: &str,
        auth: &str,
        identity_token: &str,
        registry_token: &str,
    ) -> Result<Option<Credentials>, RegistryError> {
        let mut credentials = Credentials {
            username: username.to_string(),
            password: password.to_string(),
            identity_token: identity_token.to_string(),
            registry_token: registry_token.to_string(),
        };
        if username.is_empty() && !auth.is_empty() {
            (credentials.username, credentials.password) = decode_auth(auth)?;
        }
        let empty = credentials.username.is_empty()
            && credentials.password.is_empty()
            && credentials.identity_token.is_empty()
            && credentials.registry_token.is_empty();
        Ok((!empty).then_some(credentials))
    }

    fn basic(&self) -> Option<(&str, &str)> {
        (!self.username.is_empty()).then_some((&self.username, &self.password))
    }
}

/// Decodes a Docker config `auth` value; the error never quotes it.
fn decode_auth(auth: &str) -> Result<(String, String), RegistryError> {
    // Some tools drop the '=' padding; accept it either way.
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let invalid = |message: &str| RegistryError::Invalid {
        what: "registry credentials".into(),
        message: message.into(),
    };
    let decoded = engine
        .decode(auth.trim())
        .map_err(|_| invalid("auth is not valid base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid("auth is not UTF-8"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| invalid("auth is not base64 of \"username:password\""))?;
    // containerd trims NULs that some credential helpers leave behind.
    Ok((
        username.to_string(),
        password.trim_end_matches('\0').to_string(),
    ))
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    /// `sha256:<hex>` of `bytes`, computed here.
    pub digest: String,
}

pub struct BlobResponse {
    /// Where the stream starts: the requested offset if the server honoured
    /// the Range request (206), 0 otherwise.
    pub offset: u64,
    pub stream: BoxStream<'static, Result<Bytes, RegistryError>>,
}

impl fmt::Debug for BlobResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobResponse")
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

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

/// One host to try, with its HTTP client and what it has authorised us with.
struct Endpoint {
    host: RegistryHost,
    /// "https://host/v2/<repository>"
    base: String,
    http: reqwest::Client,
    /// The host's configured extra headers.
    headers: HeaderMap,
    /// The Authorization header that last worked here (a token or Basic).
    authorization: Mutex<Option<HeaderValue>>,
}

impl Endpoint {
    fn url(&self, kind: &str, object: &str) -> String {
        format!("{}/{kind}/{object}", self.base)
    }

    fn cached_authorization(&self) -> Option<HeaderValue> {
        // A poisoned lock still holds a usable value.
        self.authorization
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn cache_authorization(&self, value: HeaderValue) {
        *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }

    async fn get(
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
        request.send().await.map_err(|e| transport_error(url, e))
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

    /// GET /v2/<repo>/manifests/<tag-or-digest>, accepting OCI index and
    /// manifest and Docker list and v2 manifest. Refuses bodies over
    /// `max_bytes`. When `object` is a digest, the body must match it.
    pub async fn fetch_manifest(
        &self,
        object: &str,
        max_bytes: u64,
    ) -> Result<Manifest, RegistryError> {
        let by_digest = object.contains(':');
        let separator = if by_digest { '@' } else { ':' };
        let what = format!("manifest {}{separator}{object}", self.name());
        check_object(&what, object, by_digest)?;
        // Turning a tag into a digest is "resolve"; content by digest is "pull".
        let capability = if by_digest {
            Capability::Pull
        } else {
            Capability::Resolve
        };
        let mut failures = Failures::default();
        for (endpoint, is_upstream) in self.endpoints_for(capability) {
            match self
                .manifest_from(endpoint, object, by_digest, max_bytes, &what)
                .await
            {
                Ok(manifest) => return Ok(manifest),
                Err(error) => failures.record(endpoint, is_upstream, &what, error),
            }
        }
        Err(failures.into_error(self, capability, &what))
    }

    /// GET /v2/<repo>/blobs/<digest>, from `offset` on when it is not 0
    /// (`Range: bytes=<offset>-`). Redirects (to blob storage) are followed;
    /// the Authorization header is not sent to another host (reqwest drops
    /// it on cross-host redirects). The caller verifies the digest.
    pub async fn fetch_blob(
        &self,
        digest: &str,
        offset: u64,
    ) -> Result<BlobResponse, RegistryError> {
        let what = format!("blob {}@{digest}", self.name());
        check_object(&what, digest, true)?;
        let mut headers = HeaderMap::new();
        if offset > 0 {
            let range = HeaderValue::try_from(format!("bytes={offset}-")).map_err(|e| {
                RegistryError::Invalid {
                    what: what.clone(),
                    message: e.to_string(),
                }
            })?;
            headers.insert(header::RANGE, range);
        }
        let mut failures = Failures::default();
        for (endpoint, is_upstream) in self.endpoints_for(Capability::Pull) {
            match self
                .blob_from(endpoint, digest, offset, &headers, &what)
                .await
            {
                Ok(blob) => return Ok(blob),
                Err(error) => failures.record(endpoint, is_upstream, &what, error),
            }
        }
        Err(failures.into_error(self, Capability::Pull, &what))
    }

    async fn manifest_from(
        &self,
        endpoint: &Endpoint,
        object: &str,
        by_digest: bool,
        max_bytes: u64,
        what: &str,
    ) -> Result<Manifest, RegistryError> {
        let url = endpoint.url("manifests", object);
        let accept =
            HeaderMap::from_iter([(header::ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT))]);
        let response = self.send(endpoint, &url, what, &accept).await?;
        let content_type = content_type(&response);
        let bytes = read_body(response, &url, what, max_bytes).await?;
        let digest = sha256_digest(&bytes);
        if by_digest && digest != object {
            return Err(RegistryError::DigestMismatch {
                what: what.to_string(),
                expected: object.to_string(),
                actual: digest,
            });
        }
        let media_type = manifest_media_type(content_type.as_deref(), &bytes);
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    async fn blob_from(
        &self,
        endpoint: &Endpoint,
        digest: &str,
        offset: u64,
        headers: &HeaderMap,
        what: &str,
    ) -> Result<BlobResponse, RegistryError> {
        let url = endpoint.url("blobs", digest);
        let response = self.send(endpoint, &url, what, headers).await?;
        let start = stream_start(&response, offset, what)?;
        let stream = response
            .bytes_stream()
            .map_err(move |e| transport_error(&url, e))
            .boxed();
        Ok(BlobResponse {
            offset: start,
            stream,
        })
    }

    /// "127.0.0.1:5000/test/image", for messages.
    fn name(&self) -> String {
        format!("{}/{}", self.inner.registry, self.inner.repository)
    }

    /// The hosts that may serve `capability`, in order, each with whether it
    /// is the upstream (the last host).
    fn endpoints_for(&self, capability: Capability) -> impl Iterator<Item = (&Endpoint, bool)> {
        let upstream = self.inner.endpoints.len() - 1;
        self.inner
            .endpoints
            .iter()
            .enumerate()
            .filter(move |(_, endpoint)| endpoint.host.has(capability))
            .map(move |(index, endpoint)| (endpoint, index == upstream))
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

    /// Answers a 401's `WWW-Authenticate` challenge with an Authorization
    /// header value. Bearer is preferred: it keeps the password away from
    /// the registry itself.
    async fn authorize(
        &self,
        endpoint: &Endpoint,
        challenges: &[Challenge],
        what: &str,
    ) -> Result<HeaderValue, RegistryError> {
        if let Some(bearer) = challenges.iter().find(|c| c.is("bearer")) {
            return self.bearer_token(endpoint, bearer).await;
        }
        if challenges.iter().any(|c| c.is("basic")) {
            return self.basic_authorization(endpoint, what);
        }
        Err(RegistryError::Unauthorized {
            registry: endpoint.host.host.clone(),
            message: format!("{what}: 401 without a Basic or Bearer challenge"),
        })
    }

    fn basic_authorization(
        &self,
        endpoint: &Endpoint,
        what: &str,
    ) -> Result<HeaderValue, RegistryError> {
        let Some((username, password)) =
            self.inner.credentials.as_ref().and_then(Credentials::basic)
        else {
            return Err(RegistryError::Unauthorized {
                registry: endpoint.host.host.clone(),
                message: format!(
                    "{what}: the registry requires authentication and no credentials were given"
                ),
            });
        };
        let encoded = STANDARD.encode(format!("{username}:{password}"));
        sensitive_header(&format!("Basic {encoded}"), &endpoint.host.host)
    }

    /// Gets a bearer token for the challenge (Docker token auth / OAuth2).
    async fn bearer_token(
        &self,
        endpoint: &Endpoint,
        challenge: &Challenge,
    ) -> Result<HeaderValue, RegistryError> {
        let registry = &endpoint.host.host;
        let credentials = self.inner.credentials.as_ref();
        if let Some(token) = credentials
            .map(|c| &c.registry_token)
            .filter(|t| !t.is_empty())
        {
            return sensitive_header(&format!("Bearer {token}"), registry);
        }
        let realm = token_realm(challenge, registry)?;
        let default_scope = format!("repository:{}:pull", self.inner.repository);
        let scope = challenge.param("scope").unwrap_or(&default_scope);
        let service = challenge.param("service");
        let response = self
            .token_request(endpoint, &realm, scope, service)
            .send()
            .await
            .map_err(|e| transport_error(realm.as_str(), e))?;
        let token = self.read_token(endpoint, response, &realm).await?;
        sensitive_header(&format!("Bearer {token}"), registry)
    }

    /// With an identity token, an OAuth2 refresh-token POST; otherwise a
    /// Docker token GET, with Basic credentials when we have them.
    fn token_request(
        &self,
        endpoint: &Endpoint,
        realm: &reqwest::Url,
        scope: &str,
        service: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let credentials = self.inner.credentials.as_ref();
        let mut params = vec![("scope", scope)];
        params.extend(service.map(|service| ("service", service)));
        let request = match credentials.filter(|c| !c.identity_token.is_empty()) {
            Some(c) => {
                params.extend([
                    ("grant_type", "refresh_token"),
                    ("refresh_token", c.identity_token.as_str()),
                    ("client_id", TOKEN_CLIENT_ID),
                ]);
                endpoint.http.post(realm.clone()).form(&params)
            }
            None => {
                let request = endpoint.http.get(realm.clone()).query(&params);
                match credentials.and_then(Credentials::basic) {
                    Some((username, password)) => request.basic_auth(username, Some(password)),
                    None => request,
                }
            }
        };
        request.headers(endpoint.headers.clone())
    }

    async fn read_token(
        &self,
        endpoint: &Endpoint,
        response: Response,
        realm: &reqwest::Url,
    ) -> Result<String, RegistryError> {
        let what = format!("token from {realm}");
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let message = error_message(response).await;
            return Err(RegistryError::Unauthorized {
                registry: endpoint.host.host.clone(),
                message: format!("token server {realm} refused: {message}; {}", self.hint()),
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Http {
                url: realm.to_string(),
                status: status.as_u16(),
                message: error_message(response).await,
            });
        }
        let body = read_body(response, realm.as_str(), &what, TOKEN_BODY_LIMIT).await?;
        parse_token(&body).ok_or_else(|| RegistryError::Invalid {
            what,
            message: "response has no token".into(),
        })
    }
}

/// The errors of the hosts tried so far. Any failure moves on to the next
/// host (as containerd does): a mirror may be down, lack the content, or
/// want other credentials. When all fail, the most telling error is kept.
#[derive(Default)]
struct Failures {
    best: Option<(u8, RegistryError)>,
}

impl Failures {
    fn record(&mut self, endpoint: &Endpoint, is_upstream: bool, what: &str, error: RegistryError) {
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

    fn into_error(
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

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq)]
struct Challenge {
    scheme: String,
    /// Parameter names lowercased, values unquoted.
    params: Vec<(String, String)>,
}

impl Challenge {
    fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The challenges of all `WWW-Authenticate` headers of a response.
fn challenges_of(response: &Response) -> Vec<Challenge> {
    response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

/// Parses `WWW-Authenticate` (RFC 9110 section 11.6.1): one or more
/// challenges, `scheme [param=value, ...]`, values tokens or quoted strings,
/// all separated by commas. Malformed input yields what parsed before it.
fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut parser = HeaderParser { rest: header };
    let mut challenges = Vec::new();
    loop {
        parser.skip_separators();
        let scheme = parser.token();
        if scheme.is_empty() {
            return challenges;
        }
        let mut challenge = Challenge {
            scheme: scheme.to_string(),
            params: Vec::new(),
        };
        while let Some((name, value)) = parser.param() {
            challenge.params.push((name.to_ascii_lowercase(), value));
        }
        challenges.push(challenge);
    }
}

struct HeaderParser<'a> {
    rest: &'a str,
}

impl<'a> HeaderParser<'a> {
    fn skip_whitespace(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    fn skip_separators(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t', ',']);
    }

    fn token(&mut self) -> &'a str {
        let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        let end = self.rest.find(|c| !is_tchar(c)).unwrap_or(self.rest.len());
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        token
    }

    /// The next `name=value` of the current challenge, or `None` when the
    /// next item is a new challenge (a token not followed by '=') or the end.
    fn param(&mut self) -> Option<(&'a str, String)> {
        let saved = self.rest;
        self.skip_separators();
        let name = self.token();
        self.skip_whitespace();
        let Some(after_equals) = self.rest.strip_prefix('=').filter(|_| !name.is_empty()) else {
            self.rest = saved;
            return None;
        };
        self.rest = after_equals;
        self.skip_whitespace();
        let value = if self.rest.starts_with('"') {
            self.quoted_string()
        } else {
            self.token().to_string()
        };
        Some((name, value))
    }

    /// A quoted string with backslash escapes; an unterminated one runs to
    /// the end of the header.
    fn quoted_string(&mut self) -> String {
        let mut value = String::new();
        let mut chars = self.rest.char_indices().skip(1);
        while let Some((index, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[index + 1..];
                    return value;
                }
                '\\' => value.extend(chars.next().map(|(_, escaped)| escaped)),
                c => value.push(c),
            }
        }
        self.rest = "";
        value
    }
}

/// The challenge's realm, which must be an http(s) URL.
fn token_realm(challenge: &Challenge, registry: &str) -> Result<reqwest::Url, RegistryError> {
    let invalid = |message: String| RegistryError::Invalid {
        what: format!("Bearer challenge from {registry}"),
        message,
    };
    let realm = challenge
        .param("realm")
        .ok_or_else(|| invalid("no realm".into()))?;
    let url = reqwest::Url::parse(realm).map_err(|e| invalid(format!("realm {realm:?}: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(invalid(format!("realm {realm:?} is not an http(s) URL")));
    }
    Ok(url)
}

/// `token` (Docker token auth) or `access_token` (OAuth2), whichever is set.
fn parse_token(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        #[serde(default)]
        token: String,
        #[serde(default)]
        access_token: String,
    }
    let response: TokenResponse = serde_json::from_slice(body).ok()?;
    [response.token, response.access_token]
        .into_iter()
        .find(|t| !t.is_empty())
}

fn sensitive_header(value: &str, registry: &str) -> Result<HeaderValue, RegistryError> {
    let mut value = HeaderValue::try_from(value).map_err(|_| RegistryError::Invalid {
        what: format!("credentials for {registry}"),
        message: "not valid in an HTTP header".into(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// How much an error from one host says about the object, to pick the one
/// to report when every host failed: the upstream's answer is
/// authoritative, a mirror's answer beats a host we could not reach, and a
/// mirror lacking the object says least.
fn usefulness(error: &RegistryError, from_upstream: bool) -> u8 {
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

/// Reads a whole body, refusing more than `limit` bytes: a declared length
/// over it fails at once, an undeclared one while reading.
async fn read_body(
    mut response: Response,
    url: &str,
    what: &str,
    limit: u64,
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
        .map_err(|e| transport_error(url, e))?
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
async fn error_message(response: Response) -> String {
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
    let Ok(body) = read_body(response, &url, "error body", ERROR_BODY_LIMIT).await else {
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

/// Where a blob response's data starts. A 206 must start where we asked:
/// anything else would corrupt a resumed download.
fn stream_start(response: &Response, requested: u64, what: &str) -> Result<u64, RegistryError> {
    if response.status() != StatusCode::PARTIAL_CONTENT {
        return Ok(0);
    }
    let start = response
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(content_range_start)
        .unwrap_or(requested);
    if start != requested {
        return Err(RegistryError::Invalid {
            what: what.to_string(),
            message: format!("asked for bytes from {requested}, got a range starting at {start}"),
        });
    }
    Ok(start)
}

/// "bytes 100-199/200" → 100.
fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

fn content_type(response: &Response) -> Option<String> {
    let value = response
        .headers()
        .get(header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    let media_type = value.split(';').next().unwrap_or_default().trim();
    Some(media_type.to_ascii_lowercase())
}

/// The manifest's media type: Content-Type when it is a manifest type;
/// otherwise (some registries say application/json or nothing) what the
/// document says of itself; otherwise Content-Type for the caller to refuse.
fn manifest_media_type(content_type: Option<&str>, body: &[u8]) -> String {
    const KNOWN: [&str; 4] = [
        MEDIA_TYPE_OCI_INDEX,
        MEDIA_TYPE_OCI_MANIFEST,
        MEDIA_TYPE_DOCKER_LIST,
        MEDIA_TYPE_DOCKER_MANIFEST,
    ];
    if let Some(known) = content_type.filter(|ct| KNOWN.contains(ct)) {
        return known.to_string();
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        config: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(Probe {
            media_type: Some(media_type),
            ..
        }) => media_type,
        // OCI documents may omit mediaType; their shape tells them apart.
        Ok(Probe {
            manifests: Some(_), ..
        }) => MEDIA_TYPE_OCI_INDEX.to_string(),
        Ok(Probe {
            config: Some(_), ..
        }) => MEDIA_TYPE_OCI_MANIFEST.to_string(),
        _ => content_type.unwrap_or_default().to_string(),
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
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

fn configured_headers(host: &RegistryHost) -> Result<HeaderMap, String> {
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
#[derive(Default)]
struct HttpClients {
    built: Vec<(TlsSettings, reqwest::Client)>,
}

#[derive(PartialEq)]
struct TlsSettings {
    skip_verify: bool,
    ca: Vec<std::path::PathBuf>,
    client: Vec<(std::path::PathBuf, Option<std::path::PathBuf>)>,
}

impl HttpClients {
    fn for_host(&mut self, host: &RegistryHost) -> Result<reqwest::Client, RegistryError> {
        let settings = TlsSettings {
            skip_verify: host.skip_verify,
            ca: host.ca.clone(),
            client: host.client.clone(),
        };
        if let Some((_, client)) = self.built.iter().find(|(s, _)| *s == settings) {
            return Ok(client.clone());
        }
        let client = build_client(&settings, &host.host)?;
        self.built.push((settings, client.clone()));
        Ok(client)
    }
}

/// No overall timeout: a big blob may take long; a dead connection is
/// caught connecting or by the caller.
fn build_client(settings: &TlsSettings, host: &str) -> Result<reqwest::Client, RegistryError> {
    let invalid = |message: String| RegistryError::Invalid {
        what: format!("TLS configuration for {host}"),
        message,
    };
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
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

fn transport_error(url: &str, error: reqwest::Error) -> RegistryError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::process::{Child, Command, Stdio};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const LIMIT: u64 = 1 << 20;

    fn http_host(addr: &str, capabilities: &[Capability]) -> RegistryHost {
        RegistryHost {
            scheme: "http".into(),
            host: addr.into(),
            path: "/v2".into(),
            capabilities: capabilities.to_vec(),
            skip_verify: false,
            ca: Vec::new(),
            client: Vec::new(),
            header: Vec::new(),
        }
    }

    const ALL: [Capability; 3] = [Capability::Pull, Capability::Resolve, Capability::Push];

    fn user_pass(user: &str, pass: &str) -> Option<Credentials> {
        Some(Credentials {
            username: user.into(),
            password: pass.into(),
            ..Credentials::default()
        })
    }

    async fn collect(blob: BlobResponse) -> Vec<u8> {
        let chunks: Vec<Bytes> = blob.stream.try_collect().await.expect("blob stream");
        chunks.concat()
    }

    /// A port nothing listens on (for a host that is down).
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        addr
    }

    // ---- WWW-Authenticate ----

    fn challenge(scheme: &str, params: &[(&str, &str)]) -> Challenge {
        Challenge {
            scheme: scheme.into(),
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let got = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            got,
            [challenge(
                "Bearer",
                &[
                    ("realm", "https://auth.docker.io/token"),
                    ("service", "registry.docker.io"),
                    ("scope", "repository:library/busybox:pull"),
                ]
            )]
        );
        assert_eq!(got[0].param("service"), Some("registry.docker.io"));
        assert!(got[0].is("bearer"));
    }

    #[test]
    fn parses_challenge_variants() {
        assert_eq!(
            parse_challenges(r#"Basic realm="test""#),
            [challenge("Basic", &[("realm", "test")])]
        );
        // Several challenges, unquoted values, odd spacing and case, commas in quotes.
        assert_eq!(
            parse_challenges(
                r#"Basic realm="a" ,  bearer Realm = "https://x/t" , service=svc,scope="repository:a:pull,push""#
            ),
            [
                challenge("Basic", &[("realm", "a")]),
                challenge(
                    "bearer",
                    &[
                        ("realm", "https://x/t"),
                        ("service", "svc"),
                        ("scope", "repository:a:pull,push")
                    ]
                ),
            ]
        );
        assert_eq!(
            parse_challenges(r#"Bearer realm="a\"b\\c",x="""#),
            [challenge("Bearer", &[("realm", "a\"b\\c"), ("x", "")])]
        );
        assert_eq!(parse_challenges("Bearer"), [challenge("Bearer", &[])]);
        assert_eq!(
            parse_challenges(r#"Bearer realm="unterminated"#),
            [challenge("Bearer", &[("realm", "unterminated")])]
        );
        assert_eq!(parse_challenges(""), []);
        assert_eq!(parse_challenges(" , "), []);
        // token68 forms and junk must not panic; the scheme still parses.
        assert_eq!(parse_challenges("Negotiate abc==")[0].scheme, "Negotiate");
        assert_eq!(parse_challenges("=== \"")[..], []);
    }

    // ---- credentials ----

    fn from_cri(
        username: &str,
        password: &str,
        auth: &str,
        identity: &str,
        token: &str,
    ) -> Option<Credentials> {
        Credentials::from_cri(username, password, auth, identity, token).expect("valid credentials")
    }

    #[test]
    fn credentials_from_cri() {
        assert!(from_cri("", "", "", "", "").is_none());

        let c = from_cri("user", "pass", &STANDARD.encode("other:x"), "", "").expect("some");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("user", "pass"));

        let c = from_cri("", "", &STANDARD.encode("user:pa:ss"), "", "").expect("some");
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("user", "pa:ss")
        );

        // Missing padding and NULs left by credential helpers are tolerated.
        let unpadded = STANDARD.encode("ab:c").trim_end_matches('=').to_string();
        assert_ne!(unpadded, STANDARD.encode("ab:c"));
        let c = from_cri("", "", &unpadded, "", "").expect("some");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("ab", "c"));
        let c = from_cri("", "", &STANDARD.encode("u:p\0\0"), "", "").expect("some");
        assert_eq!(c.password, "p");

        let c = from_cri("", "", "", "refresh", "").expect("some");
        assert_eq!(c.identity_token, "refresh");
        assert!(c.basic().is_none());
        let c = from_cri("", "", "", "", "bearer").expect("some");
        assert_eq!(c.registry_token, "bearer");
    }

    #[test]
    fn bad_auth_is_an_error_that_does_not_leak_it() {
        for auth in ["not base64!!", &STANDARD.encode("no-colon-secret")] {
            match Credentials::from_cri("", "", auth, "", "") {
                Err(e @ RegistryError::Invalid { .. }) => {
                    let message = e.to_string();
                    assert!(
                        !message.contains(auth) && !message.contains("secret"),
                        "{message}"
                    );
                }
                other => panic!("{auth}: {other:?}"),
            }
        }
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = Credentials {
            username: "user".into(),
            password: "hunter2".into(),
            identity_token: "id-secret".into(),
            registry_token: String::new(),
        };
        let debug = format!("{c:?}");
        assert!(
            debug.contains("user") && !debug.contains("hunter2") && !debug.contains("id-secret"),
            "{debug}"
        );
    }

    #[test]
    fn token_responses() {
        assert_eq!(
            parse_token(br#"{"token":"a","access_token":"b"}"#).as_deref(),
            Some("a")
        );
        assert_eq!(
            parse_token(br#"{"access_token":"b","expires_in":300}"#).as_deref(),
            Some("b")
        );
        assert_eq!(parse_token(br#"{"token":""}"#), None);
        assert_eq!(parse_token(b"nope"), None);
    }

    // ---- manifests ----

    #[test]
    fn manifest_accept_header() {
        let accepted: Vec<&str> = MANIFEST_ACCEPT.split(',').map(str::trim).collect();
        assert_eq!(
            accepted,
            [
                MEDIA_TYPE_OCI_INDEX,
                MEDIA_TYPE_OCI_MANIFEST,
                MEDIA_TYPE_DOCKER_LIST,
                MEDIA_TYPE_DOCKER_MANIFEST
            ]
        );
        assert!(HeaderValue::from_str(MANIFEST_ACCEPT).is_ok());
    }

    #[test]
    fn manifest_media_type_sources() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{}}"#;
        assert_eq!(
            manifest_media_type(Some(MEDIA_TYPE_OCI_INDEX), body),
            MEDIA_TYPE_OCI_INDEX
        );
        assert_eq!(
            manifest_media_type(Some("application/json"), body),
            MEDIA_TYPE_DOCKER_MANIFEST
        );
        assert_eq!(
            manifest_media_type(None, br#"{"schemaVersion":2,"manifests":[]}"#),
            MEDIA_TYPE_OCI_INDEX
        );
        assert_eq!(
            manifest_media_type(None, br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            MEDIA_TYPE_OCI_MANIFEST
        );
        assert_eq!(
            manifest_media_type(Some("text/plain"), b"junk"),
            "text/plain"
        );
        assert_eq!(manifest_media_type(None, b"junk"), "");
    }

    #[test]
    fn objects_and_repositories_are_checked() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(check_object("m", &digest, true).is_ok());
        assert!(check_object("m", "latest", false).is_ok());
        for (object, by_digest) in [
            ("sha256:abc", true),
            ("sha512:abc", true),
            ("../x", false),
            ("", false),
            ("a/b", false),
        ] {
            assert!(check_object("m", object, by_digest).is_err(), "{object}");
        }
        assert!(is_repository_name("library/busybox"));
        assert!(is_repository_name("a/b-c/d_e.f"));
        for bad in ["", "a//b", "../x", "A", "a?b", "a b"] {
            assert!(!is_repository_name(bad), "{bad}");
        }
        let host = http_host("127.0.0.1:1", &ALL);
        assert!(RegistryClient::new(vec![host], "../etc", None).is_err());
        assert!(RegistryClient::new(Vec::new(), "a", None).is_err());
    }

    #[test]
    fn content_ranges_and_error_ranking() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("items 1-2/3"), None);

        let not_found = RegistryError::NotFound { what: "m".into() };
        let transport = RegistryError::Transport {
            url: "u".into(),
            message: "m".into(),
        };
        assert!(usefulness(&not_found, true) > usefulness(&transport, false));
        assert!(usefulness(&transport, true) > usefulness(&not_found, false));
    }

    #[test]
    fn futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let client =
            RegistryClient::new(vec![http_host("127.0.0.1:1", &ALL)], "a", None).expect("client");
        assert_send(&client.fetch_manifest("latest", 1));
        assert_send(&client.fetch_blob("sha256:00", 0));
    }

    #[tokio::test]
    async fn hosts_without_the_capability_are_not_asked() {
        let pull_only = http_host(&closed_port(), &[Capability::Pull]);
        let client = RegistryClient::new(vec![pull_only], "a", None).expect("client");
        match client.fetch_manifest("latest", LIMIT).await {
            Err(RegistryError::Invalid { what, message }) => {
                assert!(what.contains("a:latest"), "{what}");
                assert!(message.contains("resolve"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    // ---- a real registry: Debian's docker-registry (distribution 2.8) ----

    /// A `docker-registry` on a loopback port, killed on drop.
    struct TestRegistry {
        child: Child,
        addr: String,
        credentials: Option<(String, String)>,
        dir: tempfile::TempDir,
    }

    struct TestImage {
        manifest: Vec<u8>,
        manifest_digest: String,
        layer: Vec<u8>,
        layer_digest: String,
    }

    impl Drop for TestRegistry {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl TestRegistry {
        async fn start() -> TestRegistry {
            Self::start_with(None).await
        }

        async fn start_with_htpasswd(user: &str, pass: &str) -> TestRegistry {
            Self::start_with(Some((user.into(), pass.into()))).await
        }

        async fn start_with(credentials: Option<(String, String)>) -> TestRegistry {
            // The port is picked before the registry binds it, so another
            // process may take it meanwhile: try a few.
            let mut last_log = String::new();
            for _ in 0..5 {
                match Self::try_start(credentials.clone()).await {
                    Ok(registry) => return registry,
                    Err(log) => last_log = log,
                }
            }
            panic!("docker-registry did not start:\n{last_log}");
        }

        async fn try_start(credentials: Option<(String, String)>) -> Result<TestRegistry, String> {
            let dir = tempfile::tempdir().expect("tempdir");
            let addr = closed_port();
            let mut config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                dir.path().join("data").display()
            );
            if let Some((user, pass)) = &credentials {
                let htpasswd = dir.path().join("htpasswd");
                let output = Command::new("htpasswd")
                    .args(["-Bbn", user, pass])
                    .output()
                    .expect("run htpasswd");
                assert!(output.status.success(), "htpasswd failed");
                std::fs::write(&htpasswd, output.stdout).expect("write htpasswd");
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).expect("write config");
            let log = std::fs::File::create(dir.path().join("log")).expect("log");
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn docker-registry");
            let mut registry = TestRegistry {
                child,
                addr,
                credentials,
                dir,
            };
            registry.wait_ready().await?;
            Ok(registry)
        }

        async fn wait_ready(&mut self) -> Result<(), String> {
            for _ in 0..200 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break; // exited: most likely the port was taken
                }
                if TcpStream::connect(&self.addr).await.is_ok() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default())
        }

        fn host(&self) -> RegistryHost {
            http_host(&self.addr, &ALL)
        }

        fn base(&self) -> String {
            format!("http://{}", self.addr)
        }

        fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
            match &self.credentials {
                Some((user, pass)) => request.basic_auth(user, Some(pass)),
                None => request,
            }
        }

        /// The two-step monolithic upload: POST for a session, PUT with the digest.
        async fn push_blob(&self, repository: &str, data: &[u8]) -> String {
            let http = reqwest::Client::new();
            let digest = sha256_digest(data);
            let url = format!("{}/v2/{repository}/blobs/uploads/", self.base());
            let started = self
                .authed(http.post(url))
                .send()
                .await
                .expect("start upload");
            assert_eq!(started.status(), StatusCode::ACCEPTED, "start upload");
            let location = started.headers()[header::LOCATION]
                .to_str()
                .expect("location");
            let mut url = reqwest::Url::parse(&self.base())
                .and_then(|b| b.join(location))
                .expect("upload url");
            url.query_pairs_mut().append_pair("digest", &digest);
            let put = self
                .authed(http.put(url))
                .header(header::CONTENT_TYPE, "application/octet-stream");
            let finished = put.body(data.to_vec()).send().await.expect("finish upload");
            assert_eq!(finished.status(), StatusCode::CREATED, "finish upload");
            digest
        }

        async fn push_manifest(&self, repository: &str, reference: &str, manifest: &[u8]) {
            let url = format!("{}/v2/{repository}/manifests/{reference}", self.base());
            let request = self
                .authed(reqwest::Client::new().put(url))
                .header(header::CONTENT_TYPE, MEDIA_TYPE_OCI_MANIFEST);
            let response = request
                .body(manifest.to_vec())
                .send()
                .await
                .expect("put manifest");
            assert_eq!(response.status(), StatusCode::CREATED, "put manifest");
        }

        /// Pushes a one-layer OCI image whose layer is `seed`-dependent bytes.
        async fn push_image(&self, repository: &str, tag: &str, seed: u8) -> TestImage {
            let layer: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8 ^ seed).collect();
            let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
            let config_digest = self.push_blob(repository, config).await;
            let layer_digest = self.push_blob(repository, &layer).await;
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
            });
            let manifest = serde_json::to_vec(&manifest).expect("json");
            self.push_manifest(repository, tag, &manifest).await;
            TestImage {
                manifest_digest: sha256_digest(&manifest),
                manifest,
                layer,
                layer_digest,
            }
        }
    }

    #[tokio::test]
    async fn pulls_manifests_and_blobs_from_a_registry() {
        let registry = TestRegistry::start().await;
        let image = registry.push_image("test/image", "v1", 0).await;
        let client =
            RegistryClient::new(vec![registry.host()], "test/image", None).expect("client");

        let by_tag = client
            .fetch_manifest("v1", LIMIT)
            .await
            .expect("manifest by tag");
        assert_eq!(by_tag.bytes, image.manifest);
        assert_eq!(by_tag.digest, image.manifest_digest);
        assert_eq!(by_tag.media_type, MEDIA_TYPE_OCI_MANIFEST);

        let by_digest = client
            .fetch_manifest(&image.manifest_digest, LIMIT)
            .await
            .expect("manifest by digest");
        assert_eq!(by_digest.bytes, image.manifest);
        assert_eq!(by_digest.digest, image.manifest_digest);

        let whole = client
            .fetch_blob(&image.layer_digest, 0)
            .await
            .expect("blob");
        assert_eq!(whole.offset, 0);
        assert_eq!(collect(whole).await, image.layer);

        let rest = client
            .fetch_blob(&image.layer_digest, 100)
            .await
            .expect("blob range");
        assert_eq!(rest.offset, 100);
        assert_eq!(collect(rest).await, image.layer[100..]);

        // A clone shares the hosts and works the same.
        let clone = client.clone();
        assert_eq!(
            clone
                .fetch_manifest("v1", LIMIT)
                .await
                .expect("clone")
                .digest,
            image.manifest_digest
        );
    }

    #[tokio::test]
    async fn missing_content_is_not_found() {
        let registry = TestRegistry::start().await;
        let image = registry.push_image("test/image", "v1", 0).await;
        let client =
            RegistryClient::new(vec![registry.host()], "test/image", None).expect("client");
        let absent_digest = sha256_digest(b"absent");
        let expect_not_found = |result: Result<_, RegistryError>, want: &str| match result {
            Err(RegistryError::NotFound { what }) => assert_eq!(what, want),
            Err(other) => panic!("{want}: {other}"),
            Ok(_) => panic!("{want}: found"),
        };
        let name = format!("{}/test/image", registry.addr);
        expect_not_found(
            client.fetch_manifest("v2", LIMIT).await.map(drop),
            &format!("manifest {name}:v2"),
        );
        expect_not_found(
            client.fetch_manifest(&absent_digest, LIMIT).await.map(drop),
            &format!("manifest {name}@{absent_digest}"),
        );
        expect_not_found(
            client.fetch_blob(&absent_digest, 0).await.map(drop),
            &format!("blob {name}@{absent_digest}"),
        );

        let other = RegistryClient::new(vec![registry.host()], "test/other", None).expect("client");
        assert!(matches!(
            other.fetch_manifest("v1", LIMIT).await,
            Err(RegistryError::NotFound { .. })
        ));
        assert!(matches!(
            other.fetch_blob(&image.layer_digest, 0).await,
            Err(RegistryError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn manifests_over_the_limit_are_refused() {
        let registry = TestRegistry::start().await;
        let image = registry.push_image("test/image", "v1", 0).await;
        let client =
            RegistryClient::new(vec![registry.host()], "test/image", None).expect("client");
        let size = image.manifest.len() as u64;
        match client.fetch_manifest("v1", size - 1).await {
            Err(RegistryError::TooLarge { what, limit }) => {
                assert!(what.contains("test/image:v1"), "{what}");
                assert_eq!(limit, size - 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(client.fetch_manifest("v1", size).await.is_ok());
    }

    #[tokio::test]
    async fn htpasswd_basic_auth() {
        let registry = TestRegistry::start_with_htpasswd("user", "pass").await;
        let image = registry.push_image("test/image", "v1", 0).await;

        let client = RegistryClient::new(
            vec![registry.host()],
            "test/image",
            user_pass("user", "pass"),
        )
        .expect("client");
        let manifest = client
            .fetch_manifest("v1", LIMIT)
            .await
            .expect("manifest with the right password");
        assert_eq!(manifest.digest, image.manifest_digest);
        // Now with the cached Authorization header.
        let blob = client
            .fetch_blob(&image.layer_digest, 0)
            .await
            .expect("blob");
        assert_eq!(collect(blob).await, image.layer);

        let wrong = RegistryClient::new(
            vec![registry.host()],
            "test/image",
            user_pass("user", "nope"),
        )
        .expect("client");
        match wrong.fetch_manifest("v1", LIMIT).await {
            Err(RegistryError::Unauthorized {
                registry: host,
                message,
            }) => {
                assert_eq!(host, registry.addr);
                assert!(message.contains("authentication required"), "{message}");
                assert!(message.contains("check the credentials"), "{message}");
                assert!(message.contains("test/image:v1"), "{message}");
            }
            other => panic!("{other:?}"),
        }

        let anonymous =
            RegistryClient::new(vec![registry.host()], "test/image", None).expect("client");
        match anonymous.fetch_manifest("v1", LIMIT).await {
            Err(RegistryError::Unauthorized { message, .. }) => {
                assert!(
                    message.contains("requires authentication and no credentials"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_down_mirror_is_skipped() {
        let registry = TestRegistry::start().await;
        let image = registry.push_image("test/image", "v1", 0).await;
        let down = http_host(&closed_port(), &ALL);
        let client = RegistryClient::new(vec![down.clone(), registry.host()], "test/image", None)
            .expect("client");
        assert_eq!(
            client
                .fetch_manifest("v1", LIMIT)
                .await
                .expect("manifest")
                .digest,
            image.manifest_digest
        );
        let blob = client
            .fetch_blob(&image.layer_digest, 0)
            .await
            .expect("blob");
        assert_eq!(collect(blob).await, image.layer);

        // Nothing up at all: the transport error says where it tried.
        let client = RegistryClient::new(vec![down.clone()], "test/image", None).expect("client");
        match client.fetch_manifest("v1", LIMIT).await {
            Err(RegistryError::Transport { url, message }) => {
                assert_eq!(
                    url,
                    format!("http://{}/v2/test/image/manifests/v1", down.host)
                );
                assert!(message.to_lowercase().contains("connect"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn mirrors_fall_back_to_the_upstream() {
        let upstream = TestRegistry::start().await;
        let mirror = TestRegistry::start().await;
        let image = upstream.push_image("test/image", "v1", 0).await;
        let client = RegistryClient::new(vec![mirror.host(), upstream.host()], "test/image", None)
            .expect("client");
        // 404 from the mirror: the upstream has it.
        assert_eq!(
            client
                .fetch_manifest("v1", LIMIT)
                .await
                .expect("manifest")
                .digest,
            image.manifest_digest
        );
        assert!(client.fetch_blob(&image.layer_digest, 0).await.is_ok());
        // 404 everywhere: the upstream's NotFound.
        assert!(matches!(
            client.fetch_manifest("v9", LIMIT).await,
            Err(RegistryError::NotFound { .. })
        ));

        // A mirror without "resolve" is not asked for tags, only by digest.
        let mirror_image = mirror.push_image("test/image", "v1", 7).await;
        let pull_only = http_host(&mirror.addr, &[Capability::Pull]);
        let client = RegistryClient::new(vec![pull_only, upstream.host()], "test/image", None)
            .expect("client");
        assert_eq!(
            client
                .fetch_manifest("v1", LIMIT)
                .await
                .expect("by tag")
                .digest,
            image.manifest_digest
        );
        let by_digest = client
            .fetch_manifest(&mirror_image.manifest_digest, LIMIT)
            .await
            .expect("by digest");
        assert_eq!(by_digest.bytes, mirror_image.manifest);
    }

    // ---- a scripted HTTP server, for token auth and redirects ----

    #[derive(Debug, Clone)]
    struct Recorded {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Recorded {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    struct Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    }

    fn reply(status: u16, headers: &[(&'static str, &str)], body: &[u8]) -> Reply {
        Reply {
            status,
            headers: headers.iter().map(|(n, v)| (*n, v.to_string())).collect(),
            body: body.to_vec(),
        }
    }

    type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

    struct FakeServer {
        requests: Arc<Mutex<Vec<Recorded>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FakeServer {
        fn requests(&self) -> Vec<Recorded> {
            self.requests.lock().expect("lock").clone()
        }
    }

    async fn bind() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    /// Answers each request with `handler`, one request per connection.
    fn serve(
        listener: TcpListener,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> FakeServer {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, handler.clone(), recorded.clone()));
            }
        });
        FakeServer { requests, task }
    }

    async fn answer(mut stream: TcpStream, handler: Handler, requests: Arc<Mutex<Vec<Recorded>>>) {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&data[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = data[head_end + 4..].to_vec();
        while body.len() < length {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
            }
        }
        let request = Recorded {
            method: request_line.first().unwrap_or(&"").to_string(),
            target: request_line.get(1).unwrap_or(&"").to_string(),
            headers,
            body: String::from_utf8_lossy(&body).to_string(),
        };
        let reply = handler(&request);
        requests.lock().expect("lock").push(request);
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
            reply.status,
            reply.body.len()
        );
        for (name, value) in reply.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend(reply.body);
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    }

    const MANIFEST_BODY: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;

    /// A registry at /v2/r that wants `Bearer good-token`, and a token
    /// endpoint at /token answering with `token_reply`.
    async fn token_registry(
        token_reply: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> (FakeServer, String) {
        let (listener, addr) = bind().await;
        let challenge = format!(
            r#"Bearer realm="http://{addr}/token",service="fake-registry",scope="repository:r:pull""#
        );
        let server = serve(listener, move |request| {
            if request.target.starts_with("/token") {
                return token_reply(request);
            }
            if request.header("authorization") == Some("Bearer good-token") {
                reply(
                    200,
                    &[("Content-Type", MEDIA_TYPE_OCI_MANIFEST)],
                    MANIFEST_BODY,
                )
            } else {
                let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#;
                reply(401, &[("WWW-Authenticate", &challenge)], body)
            }
        });
        (server, addr.to_string())
    }

    fn token_json(key: &str) -> Reply {
        reply(
            200,
            &[("Content-Type", "application/json")],
            format!(r#"{{"{key}":"good-token"}}"#).as_bytes(),
        )
    }

    #[tokio::test]
    async fn bearer_token_with_basic_credentials() {
        let expected_basic = format!("Basic {}", STANDARD.encode("user:pass"));
        let (server, addr) = token_registry(move |request| {
            if request.header("authorization") == Some(expected_basic.as_str()) {
                token_json("token")
            } else {
                reply(401, &[], br#"{"details":"bad"}"#)
            }
        })
        .await;
        let client =
            RegistryClient::new(vec![http_host(&addr, &ALL)], "r", user_pass("user", "pass"))
                .expect("client");
        let manifest = client.fetch_manifest("t", LIMIT).await.expect("manifest");
        assert_eq!(manifest.bytes, MANIFEST_BODY);
        // The token is cached: the second fetch goes straight through.
        client
            .fetch_manifest("t", LIMIT)
            .await
            .expect("manifest again");

        let requests = server.requests();
        let targets: Vec<&str> = requests.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets.len(), 4, "{targets:?}");
        assert_eq!(targets[0], "/v2/r/manifests/t");
        assert!(targets[1].starts_with("/token?"), "{targets:?}");
        assert!(
            targets[1].contains("scope=repository%3Ar%3Apull")
                && targets[1].contains("service=fake-registry")
        );
        assert_eq!(&targets[2..], ["/v2/r/manifests/t", "/v2/r/manifests/t"]);
        assert!(requests[0].header("authorization").is_none());
        assert!(
            requests[0]
                .header("accept")
                .is_some_and(|a| a.contains(MEDIA_TYPE_DOCKER_LIST))
        );
        assert_eq!(
            requests[3].header("authorization"),
            Some("Bearer good-token")
        );

        // Wrong password: the token server refuses.
        let client =
            RegistryClient::new(vec![http_host(&addr, &ALL)], "r", user_pass("user", "nope"))
                .expect("client");
        match client.fetch_manifest("t", LIMIT).await {
            Err(RegistryError::Unauthorized { message, .. }) => {
                assert!(
                    message.contains("token server") && message.contains("check the credentials"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn anonymous_bearer_token() {
        let (server, addr) = token_registry(|request| {
            assert!(request.header("authorization").is_none());
            token_json("token")
        })
        .await;
        let client = RegistryClient::new(vec![http_host(&addr, &ALL)], "r", None).expect("client");
        client.fetch_manifest("t", LIMIT).await.expect("manifest");
        assert_eq!(server.requests().len(), 3);
    }

    #[tokio::test]
    async fn identity_token_is_exchanged_with_a_post() {
        let (server, addr) = token_registry(|request| {
            if request.method == "POST" && request.body.contains("refresh_token=refresh-me") {
                token_json("access_token")
            } else {
                reply(400, &[], b"")
            }
        })
        .await;
        let credentials = Credentials::from_cri("", "", "", "refresh-me", "").expect("credentials");
        let client =
            RegistryClient::new(vec![http_host(&addr, &ALL)], "r", credentials).expect("client");
        client.fetch_manifest("t", LIMIT).await.expect("manifest");
        let token_request = server
            .requests()
            .into_iter()
            .find(|r| r.target.starts_with("/token"))
            .expect("token request");
        let form = &token_request.body;
        for part in [
            "grant_type=refresh_token",
            "client_id=berth",
            "service=fake-registry",
            "scope=repository%3Ar%3Apull",
        ] {
            assert!(form.contains(part), "{form}");
        }
        assert_eq!(
            token_request.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
    }

    #[tokio::test]
    async fn registry_token_is_used_as_is() {
        let (server, addr) =
            token_registry(|_| panic!("the token endpoint must not be asked")).await;
        let credentials = Credentials::from_cri("", "", "", "", "good-token").expect("credentials");
        let client =
            RegistryClient::new(vec![http_host(&addr, &ALL)], "r", credentials).expect("client");
        client.fetch_manifest("t", LIMIT).await.expect("manifest");
        assert!(
            server
                .requests()
                .iter()
                .all(|r| !r.target.starts_with("/token"))
        );
    }

    #[tokio::test]
    async fn digest_mismatch_is_detected() {
        let (listener, addr) = bind().await;
        let _server = serve(listener, |_| {
            reply(
                200,
                &[("Content-Type", MEDIA_TYPE_OCI_MANIFEST)],
                MANIFEST_BODY,
            )
        });
        let client = RegistryClient::new(vec![http_host(&addr.to_string(), &ALL)], "r", None)
            .expect("client");
        let wanted = sha256_digest(b"something else");
        match client.fetch_manifest(&wanted, LIMIT).await {
            Err(RegistryError::DigestMismatch {
                expected, actual, ..
            }) => {
                assert_eq!(expected, wanted);
                assert_eq!(actual, sha256_digest(MANIFEST_BODY));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn server_errors_carry_the_registry_message() {
        let (listener, addr) = bind().await;
        let _server = serve(listener, |_| {
            reply(
                500,
                &[],
                br#"{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}"#,
            )
        });
        let client = RegistryClient::new(vec![http_host(&addr.to_string(), &ALL)], "r", None)
            .expect("client");
        match client.fetch_manifest("t", LIMIT).await {
            Err(RegistryError::Http {
                url,
                status,
                message,
            }) => {
                assert_eq!(url, format!("http://{addr}/v2/r/manifests/t"));
                assert_eq!((status, message.as_str()), (500, "disk on fire"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn blob_redirects_do_not_carry_credentials() {
        let blob = b"0123456789";
        let digest = sha256_digest(blob);
        let (storage_listener, storage_addr) = bind().await;
        let storage = serve(storage_listener, move |request| {
            match request.header("range") {
                Some("bytes=3-") => reply(206, &[("Content-Range", "bytes 3-9/10")], &blob[3..]),
                _ => reply(200, &[], blob),
            }
        });
        let (listener, addr) = bind().await;
        let location = format!("http://{storage_addr}/storage/blob?signed=1");
        let registry = serve(listener, move |request| {
            if request.header("authorization").is_some() {
                reply(307, &[("Location", &location)], b"")
            } else {
                reply(401, &[("WWW-Authenticate", r#"Basic realm="fake""#)], b"")
            }
        });
        let client = RegistryClient::new(
            vec![http_host(&addr.to_string(), &ALL)],
            "r",
            user_pass("user", "pass"),
        )
        .expect("client");

        let response = client.fetch_blob(&digest, 3).await.expect("blob");
        assert_eq!(response.offset, 3);
        assert_eq!(collect(response).await, &blob[3..]);
        let response = client.fetch_blob(&digest, 0).await.expect("blob");
        assert_eq!(response.offset, 0);
        assert_eq!(collect(response).await, blob);

        let registry_requests = registry.requests();
        assert!(
            registry_requests[1]
                .header("authorization")
                .is_some_and(|a| a.starts_with("Basic "))
        );
        let storage_requests = storage.requests();
        assert_eq!(storage_requests.len(), 2);
        assert!(
            storage_requests
                .iter()
                .all(|r| r.header("authorization").is_none()),
            "{storage_requests:?}"
        );
        assert_eq!(storage_requests[0].header("range"), Some("bytes=3-"));
        assert_eq!(storage_requests[0].target, "/storage/blob?signed=1");
    }

    #[tokio::test]
    async fn a_range_from_the_wrong_offset_is_refused() {
        let (listener, addr) = bind().await;
        let _server = serve(listener, |_| {
            reply(206, &[("Content-Range", "bytes 0-9/10")], b"0123456789")
        });
        let client = RegistryClient::new(vec![http_host(&addr.to_string(), &ALL)], "r", None)
            .expect("client");
        let digest = sha256_digest(b"x");
        assert!(matches!(
            client.fetch_blob(&digest, 5).await,
            Err(RegistryError::Invalid { .. })
        ));
    }
}
