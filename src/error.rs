//! berth's one domain error. Each variant says what kind of failure it is; `cri`
//! maps them to gRPC codes in exactly one place (`From<Error> for tonic::Status`).
//! Messages name the object and the field.
//!
//! This module depends on no other of berth's: each module with an error type
//! of its own (registry, reference, hosts, archive, layer apply) says in its own
//! `From` impl which kind each of its failures is. I/O failures stay [`Error::Io`]
//! with their source, so a full disk is found by [`Error::is_out_of_space`]
//! wherever it happened.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    /// A transfer that broke off midway (a reset connection, a stalled body):
    /// Unavailable to a client, and worth resuming where it stopped.
    #[error("{0}")]
    Interrupted(String),
    /// A registry refused the credentials berth has for it.
    #[error("{0}")]
    Unauthenticated(String),
    /// A bound on what one caller may hold at once (pending streaming sessions...).
    #[error("{0}")]
    ResourceExhausted(String),
    /// Content that does not match its digest, or a store that lost data.
    #[error("{0}")]
    DataLoss(String),
    #[error("{0}")]
    Cancelled(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The OCI runtime refused what it was asked (its own message): gRPC Unknown,
    /// as containerd answers a failed runc call.
    #[error("{0}")]
    Runtime(String),
    /// A bug: something berth itself got wrong.
    #[error("{0}")]
    Internal(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata store: {0}")]
    Store(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to an I/O error.
pub trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

/// A full filesystem or an exhausted quota: the node's condition, not a bug
/// and not the request's fault, and it clears when space frees.
/// Also true of an error re-made with context around one.
pub fn is_out_of_space(err: &std::io::Error) -> bool {
    matches!(os_errno(err), Some(libc::ENOSPC | libc::EDQUOT))
        || err.kind() == std::io::ErrorKind::StorageFull
}

/// The errno of an I/O error, or of the I/O error it wraps with context (an
/// `io::Error` made from an error whose source is the original).
pub fn os_errno(err: &std::io::Error) -> Option<i32> {
    let mut current = err;
    // Bounded: a chain of context wrappers is a few deep, never a cycle.
    for _ in 0..MAX_WRAPPED {
        if let Some(errno) = current.raw_os_error() {
            return Some(errno);
        }
        current = current
            .get_ref()?
            .source()?
            .downcast_ref::<std::io::Error>()?;
    }
    None
}

/// How many context wrappers [`os_errno`] looks through: more than any path in
/// berth adds around one I/O error.
const MAX_WRAPPED: usize = 8;

/// An I/O error that describes the node (its disks, memory, descriptors) rather
/// than the input being read or written: whatever was being unpacked, the same
/// request can succeed once the node recovers. Anything else an unpacker meets
/// (a name too long, a path that is not a directory, a corrupt stream) is the
/// input's fault.
pub fn is_node_failure(err: &std::io::Error) -> bool {
    is_out_of_space(err)
        || matches!(
            os_errno(err),
            Some(libc::EIO | libc::EROFS | libc::ENOMEM | libc::EMFILE | libc::ENFILE)
        )
}

impl Error {
    /// Whether an I/O error anywhere in the chain is [`is_out_of_space`].
    pub fn is_out_of_space(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(is_out_of_space)
            {
                return true;
            }
            cause = e.source();
        }
        false
    }

    /// Prefixes the message with what was being done, keeping the kind.
    pub fn within(self, what: &str) -> Error {
        match self {
            Error::NotFound(m) => Error::NotFound(format!("{what}: {m}")),
            Error::AlreadyExists(m) => Error::AlreadyExists(format!("{what}: {m}")),
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{what}: {m}")),
            Error::FailedPrecondition(m) => Error::FailedPrecondition(format!("{what}: {m}")),
            Error::Unavailable(m) => Error::Unavailable(format!("{what}: {m}")),
            Error::Interrupted(m) => Error::Interrupted(format!("{what}: {m}")),
            Error::Unauthenticated(m) => Error::Unauthenticated(format!("{what}: {m}")),
            Error::Cancelled(m) => Error::Cancelled(format!("{what}: {m}")),
            Error::ResourceExhausted(m) => Error::ResourceExhausted(format!("{what}: {m}")),
            Error::DataLoss(m) => Error::DataLoss(format!("{what}: {m}")),
            Error::Internal(m) => Error::Internal(format!("{what}: {m}")),
            Error::DeadlineExceeded(m) => Error::DeadlineExceeded(format!("{what}: {m}")),
            Error::Runtime(m) => Error::Runtime(format!("{what}: {m}")),
            Error::Io { context, source } => Error::Io {
                context: format!("{what}: {context}"),
                source,
            },
            Error::Store(m) => Error::Store(format!("{what}: {m}")),
        }
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Store(e.to_string())
    }
}

macro_rules! store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.to_string())
            }
        }
    )*};
}
store_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("background task failed: {e}"))
    }
}

/// The most of one input value an error message quotes: enough to recognise it,
/// never enough to make a reply larger than a client accepts.
pub const MAX_QUOTED: usize = 200;

/// `value` quoted for an error message, cut to [`MAX_QUOTED`] bytes (on a character
/// boundary) with its full length said when cut.
pub fn quote(value: &str) -> String {
    match cut(value, MAX_QUOTED) {
        Some(head) => format!("{head:?}... ({} bytes)", value.len()),
        None => format!("{value:?}"),
    }
}

/// Cuts an error message to `max` bytes (on a character boundary): the last guard,
/// for messages that quote what they should not in full.
pub fn bounded_message(message: String, max: usize) -> String {
    match cut(&message, max) {
        Some(head) => format!(
            "{head}... (message cut at {max} of {} bytes)",
            message.len()
        ),
        None => message,
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character
/// boundary, or `None` when `text` fits whole.
fn cut(text: &str, max: usize) -> Option<&str> {
    if text.len() <= max {
        return None;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(&text[..end])
}

#[cfg(test)]
mod quote_tests {
    use super::*;

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "é".repeat(1000);
        let q = quote(&long);
        assert!(q.len() < MAX_QUOTED + 40, "{q}");
        assert!(q.ends_with("... (2000 bytes)"), "{q}");
        let m = bounded_message("x".repeat(10_000), 100);
        assert!(m.starts_with(&"x".repeat(100)) && m.len() < 160, "{m}");
    }
}
