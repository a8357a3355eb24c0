//! Fetching a blob as a stream, resuming from an offset with a Range request.

use std::fmt;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode};

use super::endpoint::{Endpoint, Failures};
use super::http::transport_error;
use super::{RegistryClient, RegistryError, check_object};
use crate::image::hosts::Capability;

pub struct BlobResponse {
    /// Where the stream starts: the requested offset if the server honoured
    /// the Range request (206), 0 otherwise.
    pub offset: u64,
    /// The body's length as the response declares it, if it does: from
    /// `offset` to the end.
    pub length: Option<u64>,
    pub stream: BoxStream<'static, Result<Bytes, RegistryError>>,
}

impl fmt::Debug for BlobResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobResponse")
            .field("offset", &self.offset)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// GET /v2/<repo>/blobs/<digest>, from `offset` on when it is not 0
    /// (`Range: bytes=<offset>-`). Redirects (to blob storage) are followed;
    /// the Authorization header is not sent to another host (see
    /// [`super::binding`]). The caller verifies the digest.
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
        let length = response.content_length();
        let stall_timeout = endpoint.stall_timeout;
        // A body that breaks off demotes its host for the rest of this pull,
        // so that the resumed request goes to the next one.
        let health = endpoint.health.clone();
        let stream = response
            .bytes_stream()
            .map_err(move |e| {
                health.mark_failing();
                transport_error(&url, e, stall_timeout)
            })
            .boxed();
        Ok(BlobResponse {
            offset: start,
            length,
            stream,
        })
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
pub(super) fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}
