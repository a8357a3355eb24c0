//! Members and JSON: looking up a member by name, reading it whole as bounded JSON, reading
//! exactly its bytes, and the errors that name the archive.

use std::io::{self, Read};

use serde::de::DeserializeOwned;

use super::tar_index::Span;
use super::{Archive, ArchiveError, JSON_LIMIT};

impl Archive {
    /// The span of member `name`, following links; `None` if absent. Present but unusable
    /// (a directory, a link out of the archive...) is an error.
    pub(super) fn member(&self, name: &str) -> Result<Option<Span>, ArchiveError> {
        self.tar
            .find(name)
            .map_err(|message| self.invalid(name, message))
    }

    pub(super) fn required_member(&self, name: &str, referrer: &str) -> Result<Span, ArchiveError> {
        self.member(name)?.ok_or_else(|| {
            self.invalid(
                referrer,
                format!("names {name:?}, which is not in the archive"),
            )
        })
    }

    pub(super) fn read_member_json<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<T, ArchiveError> {
        let span = self
            .member(name)?
            .ok_or_else(|| self.invalid(name, "missing"))?;
        self.parse_json(span, name)
    }

    /// Reads a member of at most [`JSON_LIMIT`] bytes and parses it.
    pub(super) fn parse_json<T: DeserializeOwned>(
        &self,
        span: Span,
        name: &str,
    ) -> Result<T, ArchiveError> {
        if span.size > JSON_LIMIT {
            return Err(self.invalid(
                name,
                format!(
                    "{} bytes is over the {JSON_LIMIT}-byte limit for JSON",
                    span.size
                ),
            ));
        }
        let mut bytes = Vec::new();
        self.open_span(span, name)?
            .read_to_end(&mut bytes)
            .map_err(|e| self.io_error(format!("reading {name}"), e))?;
        serde_json::from_slice(&bytes).map_err(|e| self.invalid(name, e.to_string()))
    }

    pub(super) fn missing(&self, digest: &str) -> ArchiveError {
        ArchiveError::MissingBlob {
            path: self.path.clone(),
            digest: digest.into(),
        }
    }

    pub(super) fn invalid(
        &self,
        what: impl Into<String>,
        message: impl Into<String>,
    ) -> ArchiveError {
        ArchiveError::Invalid {
            path: self.path.clone(),
            what: what.into(),
            message: message.into(),
        }
    }

    pub(super) fn io_error(&self, what: impl Into<String>, source: io::Error) -> ArchiveError {
        ArchiveError::io(&self.path, what, source)
    }
}

/// Reads exactly `left` bytes: ending early is an error, not a silently short blob (the file
/// may have been truncated or replaced since it was indexed).
pub(super) struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R> Exact<R> {
    pub(super) fn new(inner: R, left: u64) -> Self {
        Exact { inner, left }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.left).map_or(buf.len(), |left| left.min(buf.len()));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside this member",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
