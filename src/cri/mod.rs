//! The CRI v1 gRPC handlers. They translate between CRI messages and domain calls and
//! do no I/O of their own; `From<Error> for Status` is the one place domain errors
//! become gRPC codes.

mod container;
mod convert;
mod deadline;
mod events;
mod image;
mod list_memo;
mod list_wire;
mod metrics;
mod router;
mod runtime;
mod sandbox;
mod span;
mod stats;
mod streaming;

pub use deadline::DeadlineLayer;
pub use image::CriImageService;
pub use router::RuntimeServer;
pub use runtime::{CriRuntimeService, RuntimeInfo};
pub use span::rpc_span;

use tonic::{Code, Status};

use crate::error::Error;

/// The one place a domain error becomes the gRPC status a kubelet expects:
/// handlers return domain errors with `?`.
impl From<Error> for Status {
    fn from(err: Error) -> Status {
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
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::Unavailable(_) | Error::Interrupted(_) => Code::Unavailable,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::ResourceExhausted(_) => Code::ResourceExhausted,
        Error::DataLoss(_) => Code::DataLoss,
        Error::Cancelled(_) => Code::Cancelled,
        Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
        // The OCI runtime's own refusal, its message kept: what containerd answers.
        Error::Runtime(_) => Code::Unknown,
        Error::Internal(_) | Error::Store(_) | Error::Io { .. } => Code::Internal,
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
mod tests;
