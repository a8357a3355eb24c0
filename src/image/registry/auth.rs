//! Answering a 401: Basic, or a Bearer token from the challenge's realm
//! (Docker token auth, OAuth2 refresh tokens, or a registry token sent as it is).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::HeaderValue;
use reqwest::{Response, StatusCode};

use super::binding::realm_admits;
use super::challenge::Challenge;
use super::credentials::Credentials;
use super::endpoint::Endpoint;
use super::http::{TOKEN_BODY_LIMIT, error_message, read_body, transport_error};
use super::{RegistryClient, RegistryError};

/// `client_id` sent to OAuth2 token endpoints.
const TOKEN_CLIENT_ID: &str = "berth";

impl RegistryClient {
    /// Answers a 401's `WWW-Authenticate` challenge with an Authorization
    /// header value. Bearer is preferred: it keeps the password away from
    /// the registry itself.
    pub(super) async fn authorize(
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
        let Some((username, password)) = endpoint.credentials.as_ref().and_then(Credentials::basic)
        else {
            let why = match self.inner.binding {
                None => "no credentials were given".to_string(),
                Some(_) => self.hint(endpoint),
            };
            return Err(RegistryError::Unauthorized {
                registry: endpoint.host.host.clone(),
                message: format!("{what}: the registry requires authentication and {why}"),
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
        let credentials = endpoint.credentials.as_ref();
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
            .map_err(|e| transport_error(realm.as_str(), e, endpoint.stall_timeout))?;
        let token = self.read_token(endpoint, response, &realm).await?;
        sensitive_header(&format!("Bearer {token}"), registry)
    }

    /// With an identity token, an OAuth2 refresh-token POST; otherwise a
    /// Docker token GET, with Basic credentials when we have them and the
    /// token server may have them.
    fn token_request(
        &self,
        endpoint: &Endpoint,
        realm: &reqwest::Url,
        scope: &str,
        service: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let credentials = endpoint
            .credentials
            .as_ref()
            .filter(|_| self.realm_may_have_credentials(endpoint, realm));
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

    /// Whether the token server may receive `endpoint`'s credentials; says
    /// why not when it withholds them, since the pull may then fail.
    fn realm_may_have_credentials(&self, endpoint: &Endpoint, realm: &reqwest::Url) -> bool {
        if realm_admits(&endpoint.host, &endpoint.origin, realm) {
            return true;
        }
        if endpoint.credentials.is_some() {
            tracing::warn!(
                registry = %endpoint.host.host,
                %realm,
                "the token server is on another host: asking it for an anonymous token \
                 (list it in token_realms of the registry's hosts.toml to send it the credentials)"
            );
        }
        false
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
                message: format!(
                    "token server {realm} refused: {message}; {}",
                    self.hint(endpoint)
                ),
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Http {
                url: realm.to_string(),
                status: status.as_u16(),
                message: error_message(response).await,
            });
        }
        let body = read_body(
            response,
            realm.as_str(),
            &what,
            TOKEN_BODY_LIMIT,
            endpoint.stall_timeout,
        )
        .await?;
        parse_token(&body).ok_or_else(|| RegistryError::Invalid {
            what,
            message: "response has no token".into(),
        })
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
pub(super) fn parse_token(body: &[u8]) -> Option<String> {
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
