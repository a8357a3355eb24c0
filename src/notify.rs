//! Readiness for systemd (`Type=notify` in config/berthd.service): `READY=1` once
//! the CRI socket accepts calls, `STOPPING=1` when a shutdown begins.
//!
//! `NOTIFY_SOCKET` is taken out of the environment at start, before any thread
//! exists: every shim, runc and CNI plugin berthd starts would inherit it, and
//! runc hands a `NOTIFY_SOCKET` it inherits to the container and waits for the
//! container to report ready. That is why this is not the `sd-notify` crate,
//! which reads the variable at each call: the protocol is one datagram.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::OnceLock;

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

static SOCKET: OnceLock<PathBuf> = OnceLock::new();

/// Takes `NOTIFY_SOCKET` out of the environment and keeps it for [`ready`] and
/// [`stopping`].
///
/// # Safety
/// Changes the environment: call it before any other thread exists.
pub unsafe fn take_from_env() {
    if let Some(path) = std::env::var_os(NOTIFY_SOCKET) {
        // SAFETY: the caller guarantees no other thread reads the environment.
        unsafe { std::env::remove_var(NOTIFY_SOCKET) };
        let _ = SOCKET.set(PathBuf::from(path));
    }
}

/// Tells the service manager berthd is serving.
pub fn ready() {
    send("READY=1\n");
}

/// Tells the service manager berthd is shutting down.
pub fn stopping() {
    send("STOPPING=1\n");
}

fn send(state: &str) {
    let Some(path) = SOCKET.get() else {
        return;
    };
    if let Err(e) = send_to(path, state) {
        tracing::warn!(socket = %path.display(), error = %e, state = state.trim(), "cannot notify the service manager");
    }
}

/// One datagram to `path`; a leading `@` names an abstract socket, as systemd's
/// `sd_notify(3)` documents.
fn send_to(path: &std::path::Path, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.connect_addr(&addr)?;
    socket.send(state.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_datagram_to_a_path_or_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send_to(&path, "READY=1\n").unwrap();
        let mut buf = [0; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("berth-notify-test-{}", std::process::id());
        let abstract_listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send_to(std::path::Path::new(&format!("@{name}")), "STOPPING=1\n").unwrap();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }
}
