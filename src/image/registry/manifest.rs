//! Fetching a manifest by tag or digest: size-capped, digest-checked, and its media type
//! settled even when the registry's Content-Type does not say it.

use bytes::Bytes;
use reqwest::Response;
use reqwest::header::{self, HeaderMap, HeaderValue};

use super::endpoint::{Endpoint, Failures};
use super::http::read_body;
use super::{RegistryClient, RegistryError, check_object};
use crate::image::hosts::Capability;
use crate::image::oci::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

/// The manifest types we can pull. Docker schema 1 is deliberately absent:
/// a registry that only has that answers with an error instead.
pub(super) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    /// `sha256:<hex>` of `bytes`, computed here.
    pub digest: String,
}

impl RegistryClient {
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
        let bytes = read_body(response, &url, what, max_bytes, endpoint.stall_timeout).await?;
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
pub(super) fn manifest_media_type(content_type: Option<&str>, body: &[u8]) -> String {
    const KNOWN: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];
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
        }) => OCI_INDEX.to_string(),
        Ok(Probe {
            config: Some(_), ..
        }) => OCI_MANIFEST.to_string(),
        _ => content_type.unwrap_or_default().to_string(),
    }
}

pub(super) use crate::content::sha256_digest;
