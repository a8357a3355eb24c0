//! The one mapping of domain errors to gRPC codes, and what each module's own
//! errors become on the way there.

use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Status};

use super::code;
use crate::error::Error;
use crate::image::archive::ArchiveError;
use crate::image::hosts::HostsError;
use crate::image::reference::Reference;
use crate::image::registry::RegistryError;
use crate::snapshot::apply::ApplyError;

fn os(errno: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(errno)
}

fn io(errno: i32) -> Error {
    Error::Io {
        context: "writing ingest".into(),
        source: os(errno),
    }
}

fn layer(errno: i32) -> Error {
    ApplyError::Entry {
        entry: "big".into(),
        source: os(errno),
    }
    .into()
}

#[test]
fn each_kind_has_its_code() {
    let m = || "m".to_string();
    let cases = [
        (Error::NotFound(m()), Code::NotFound),
        (Error::AlreadyExists(m()), Code::AlreadyExists),
        (Error::InvalidArgument(m()), Code::InvalidArgument),
        (Error::FailedPrecondition(m()), Code::FailedPrecondition),
        (Error::Unavailable(m()), Code::Unavailable),
        (Error::Interrupted(m()), Code::Unavailable),
        (Error::Unauthenticated(m()), Code::Unauthenticated),
        (Error::ResourceExhausted(m()), Code::ResourceExhausted),
        (Error::DataLoss(m()), Code::DataLoss),
        (Error::Cancelled(m()), Code::Cancelled),
        (Error::DeadlineExceeded(m()), Code::DeadlineExceeded),
        (Error::Runtime(m()), Code::Unknown),
        (Error::Internal(m()), Code::Internal),
        (Error::Store(m()), Code::Internal),
        (io(libc::EIO), Code::Internal),
    ];
    for (err, want) in cases {
        let shown = err.to_string();
        let status = Status::from(err);
        assert_eq!(status.code(), want, "{shown}");
        assert!(status.message().contains(&shown), "{shown}");
    }
}

#[test]
fn a_full_disk_is_resource_exhausted_whatever_was_written() {
    assert_eq!(code(&io(libc::ENOSPC)), Code::ResourceExhausted);
    assert_eq!(code(&io(libc::EDQUOT)), Code::ResourceExhausted);
    assert_eq!(code(&layer(libc::ENOSPC)), Code::ResourceExhausted);
    assert_eq!(
        code(&layer(libc::ENOSPC).within("pulling image")),
        Code::ResourceExhausted
    );
    // Re-made with context around it (kind kept, errno lost): still a full disk.
    let wrapped = std::io::Error::new(std::io::ErrorKind::StorageFull, "writing a: full");
    let archive: Error = ArchiveError::Io {
        path: PathBuf::from("/a.tar"),
        what: "blob".into(),
        source: wrapped,
    }
    .into();
    assert_eq!(code(&archive), Code::ResourceExhausted);
}

#[test]
fn an_unpack_that_fails_on_the_node_is_not_the_images_fault() {
    assert_eq!(code(&layer(libc::EIO)), Code::Internal);
    assert_eq!(code(&layer(libc::EROFS)), Code::Internal);
    let read: Error = ApplyError::Read(os(libc::EIO)).into();
    assert_eq!(code(&read), Code::Internal);
    // What the layer itself gets wrong stays its fault.
    assert_eq!(code(&layer(libc::ENAMETOOLONG)), Code::InvalidArgument);
    // Wrapped with what was being done (as the unpacker does), the errno still counts.
    let wrapped = |errno| -> Error {
        #[derive(Debug)]
        struct Doing(std::io::Error);
        impl std::fmt::Display for Doing {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "creating parent: {}", self.0)
            }
        }
        impl std::error::Error for Doing {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let inner = os(errno);
        ApplyError::Entry {
            entry: "d/f".into(),
            source: std::io::Error::new(inner.kind(), Doing(inner)),
        }
        .into()
    };
    assert_eq!(code(&wrapped(libc::EIO)), Code::Internal);
    assert_eq!(code(&wrapped(libc::ENOSPC)), Code::ResourceExhausted);
    assert_eq!(code(&wrapped(libc::ENOTDIR)), Code::InvalidArgument);
    let unsafe_entry: Error = ApplyError::Unsafe {
        entry: "../x".into(),
        reason: "leaves the snapshot".into(),
    }
    .into();
    assert_eq!(code(&unsafe_entry), Code::InvalidArgument);
    let corrupt: Error = ApplyError::Read(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "corrupt deflate stream",
    ))
    .into();
    assert_eq!(code(&corrupt), Code::InvalidArgument);
}

#[test]
fn each_module_classifies_its_own_errors() {
    let url = || "https://r/v2/".to_string();
    let registry = |e: RegistryError| code(&e.into());
    assert_eq!(
        registry(RegistryError::NotFound { what: "x".into() }),
        Code::NotFound
    );
    assert_eq!(
        registry(RegistryError::Unauthorized {
            registry: "r".into(),
            message: "no".into()
        }),
        Code::Unauthenticated
    );
    assert_eq!(
        registry(RegistryError::DigestMismatch {
            what: "x".into(),
            expected: "a".into(),
            actual: "b".into()
        }),
        Code::DataLoss
    );
    assert_eq!(
        registry(RegistryError::Invalid {
            what: "x".into(),
            message: "m".into()
        }),
        Code::InvalidArgument
    );
    let stalled: Error = RegistryError::Stalled {
        url: url(),
        idle: Duration::from_secs(1),
    }
    .into();
    assert!(matches!(stalled, Error::Interrupted(_)), "resumable");
    assert_eq!(
        registry(RegistryError::Http {
            url: url(),
            status: 503,
            message: "busy".into()
        }),
        Code::Unavailable
    );

    let reference: Error = Reference::parse("a b").unwrap_err().into();
    assert_eq!(code(&reference), Code::InvalidArgument);

    let hosts = |e: HostsError| code(&e.into());
    assert_eq!(
        hosts(HostsError::Syntax {
            path: "/etc/berth/hosts.toml".into(),
            message: "m".into()
        }),
        Code::FailedPrecondition
    );
    assert_eq!(
        hosts(HostsError::InvalidRegistry {
            registry: "..".into()
        }),
        Code::InvalidArgument
    );
    assert_eq!(
        hosts(HostsError::Io {
            path: "/etc/berth/hosts.toml".into(),
            source: os(libc::EIO)
        }),
        Code::Internal
    );

    let archive: Error = ArchiveError::MissingBlob {
        path: "/a.tar".into(),
        digest: "sha256:1".into(),
    }
    .into();
    assert_eq!(code(&archive), Code::InvalidArgument);
}
