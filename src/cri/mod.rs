//! The CRI v1 gRPC handlers. They translate between CRI messages and domain calls and
//! do no I/O of their own; `status` is the one place domain errors become gRPC codes.

mod container;
mod convert;
mod image;
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
    let code = match &err {
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
    };
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

/// The longest error message a reply carries. gRPC sends it percent-encoded in a
/// trailer, and common clients refuse header blocks over 16 KiB: a message that
/// quoted a huge input would reach them as RESOURCE_EXHAUSTED instead of the error.
const MAX_STATUS_MESSAGE: usize = 2048;

/// CRI timestamps are nanoseconds since the epoch.
pub(crate) fn now_nanos() -> i64 {
    crate::image::now_nanos()
}
