//! The shim's one error type and its single mapping onto ttrpc status codes.

use std::io;

use containerd_shim_protos::ttrpc::{self, Code};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0} is not implemented by the berth shim")]
    Unimplemented(&'static str),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{binary} {command} {id}: {message}")]
    Runtime {
        binary: String,
        command: &'static str,
        id: String,
        message: String,
    },
    #[error("{binary} {command} {id}: did not finish in {after:?}, killed")]
    Timeout {
        binary: String,
        command: &'static str,
        id: String,
        after: std::time::Duration,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Timeout { .. } => Code::DEADLINE_EXCEEDED,
            Error::Io { .. } | Error::Runtime { .. } => Code::UNKNOWN,
        }
    }
}

/// Extension to attach what was being done to an I/O or syscall error.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<io::Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}
