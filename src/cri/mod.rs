//! The CRI v1 gRPC handlers. They translate between CRI messages and domain calls and
//! do no I/O of their own; `status` is the one place domain errors become gRPC codes.

mod container;
mod convert;
mod image;
mod metrics;
mod runtime;
mod sandbox;
mod stats;
mod streaming;

pub use image::CriImageService;
pub use runtime::{CriRuntimeService, RuntimeInfo};

use tonic::{Code, Status};

use crate::error::Error;
use crate::image::registry::RegistryError;

/// Maps a domain error to the gRPC status a kubelet expects.
pub fn status(err: Error) -> Status {
    let code = code(&err);
    // The one place a failed call is logged, inside the call's span.
    match code {
        Code::Internal => tracing::error!(error = %err, "internal error"),
        Code::NotFound => tracing::debug!(error = %err, "not found"),
        _ => tracing::warn!(code = ?code, error = %err, "call failed"),
    }
    Status::new(
        code,
        crate::error::bounded_message(err.to_string(), MAX_STATUS_MESSAGE),
    )
}

/// The gRPC code of a domain error. A full disk is ResourceExhausted whatever
/// was being written (a blob, a layer, a file): the kubelet should see the
/// node's condition, neither a bad image nor a bug. (containerd says Unknown.)
fn code(err: &Error) -> Code {
    if err.is_out_of_space() {
        return Code::ResourceExhausted;
    }
    match err {
        Error::NotFound(_) => Code::NotFound,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::InvalidArgument(_) | Error::Reference(_) | Error::Apply(_) | Error::Archive(_) => {
            Code::InvalidArgument
        }
        Error::Hosts(_) => Code::FailedPrecondition,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::Unavailable(_) => Code::Unavailable,
        Error::ResourceExhausted(_) => Code::ResourceExhausted,
        Error::DataLoss(_) => Code::DataLoss,
        Error::Cancelled(_) => Code::Cancelled,
        Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
        Error::Runtime(_) => Code::Unknown,
        Error::Internal(_) | Error::Store(_) | Error::Io { .. } => Code::Internal,
        Error::Registry(r) => match r {
            RegistryError::NotFound { .. } => Code::NotFound,
            RegistryError::Unauthorized { .. } => Code::Unauthenticated,
            RegistryError::TooLarge { .. } | RegistryError::Invalid { .. } => Code::InvalidArgument,
            RegistryError::DigestMismatch { .. } => Code::DataLoss,
            RegistryError::Http { .. }
            | RegistryError::Transport { .. }
            | RegistryError::Stalled { .. }
            | RegistryError::Redirect { .. } => Code::Unavailable,
        },
    }
}

/// The longest error message a reply carries. gRPC sends it percent-encoded in a
/// trailer, and common clients refuse header blocks over 16 KiB: a message that
/// quoted a huge input would reach them as RESOURCE_EXHAUSTED instead of the error.
const MAX_STATUS_MESSAGE: usize = 2048;

/// CRI timestamps are nanoseconds since the epoch.
pub(crate) fn now_nanos() -> i64 {
    crate::image::now_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::apply::ApplyError;

    fn os(errno: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn a_full_disk_is_resource_exhausted_whatever_was_written() {
        let io = |errno| Error::Io {
            context: "writing ingest".into(),
            source: os(errno),
        };
        let layer = |errno| {
            Error::Apply(ApplyError::Entry {
                entry: "big".into(),
                source: os(errno),
            })
        };
        assert_eq!(code(&io(libc::ENOSPC)), Code::ResourceExhausted);
        assert_eq!(code(&io(libc::EDQUOT)), Code::ResourceExhausted);
        assert_eq!(code(&layer(libc::ENOSPC)), Code::ResourceExhausted);
        assert_eq!(
            code(&layer(libc::ENOSPC).within("pulling image")),
            Code::ResourceExhausted
        );
        // Other failures keep their kind.
        assert_eq!(code(&io(libc::EIO)), Code::Internal);
        assert_eq!(code(&layer(libc::EEXIST)), Code::InvalidArgument);
    }
}
