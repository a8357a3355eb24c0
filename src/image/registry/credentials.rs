//! A pull's registry credentials, as the CRI `AuthConfig` gives them. Where they
//! may be sent is [`super::binding`]'s business; how a 401 is answered with them,
//! [`super::auth`]'s.

use std::fmt;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};

use super::RegistryError;
use super::binding::normalise_server_address;

#[derive(Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token, exchanged at the token realm.
    pub identity_token: String,
    /// A bearer token sent to the registry as it is.
    pub registry_token: String,
    /// The registry these are for (normalised; empty: the image's registry).
    pub server_address: String,
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
            .field("server_address", &self.server_address)
            .finish()
    }
}

impl Credentials {
    /// From the CRI `AuthConfig` fields. `auth` is base64("user:pass") and is
    /// used when `username` is empty. `None` when no secret is set.
    pub fn from_cri(
        username: &str,
        password: &str,
        auth: &str,
        identity_token: &str,
        registry_token: &str,
        server_address: &str,
    ) -> Result<Option<Credentials>, RegistryError> {
        let server_address = match server_address.trim() {
            "" => String::new(),
            address => normalise_server_address(address)?,
        };
        let mut credentials = Credentials {
            username: username.to_string(),
            password: password.to_string(),
            identity_token: identity_token.to_string(),
            registry_token: registry_token.to_string(),
            server_address,
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

    pub(super) fn basic(&self) -> Option<(&str, &str)> {
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
