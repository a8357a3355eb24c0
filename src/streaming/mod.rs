//! The streaming server: the exec, attach and port-forward sessions whose URLs the
//! CRI Exec, Attach and PortForward calls return.
//!
//! A call checks its request and target and promises a session under a
//! single-use token ([`tokens`]); the client (the kubelet, crictl, critest) then
//! asks the URL to upgrade the connection ([`server`]) to SPDY/3.1 ([`spdy`]),
//! where it speaks remotecommand ([`remotecommand`]) or port forwarding
//! ([`portforward`]), or to WebSocket ([`websocket`]), where exec and attach use
//! the channel protocol and port forwarding tunnels SPDY ([`channels`]).
//! This module only speaks protocols: running processes, attaching to containers
//! and connecting into pods are the [`Backend`]'s domain calls.
//!
//! One caller with exec or port-forward rights cannot starve the node: every
//! count and buffer has a bound, stated where it is kept. Waiting tokens are
//! bounded per target and shed fairly ([`tokens`]); running sessions and
//! forwarded connections per target and on the node ([`sessions`]); connections
//! before their upgrade and their request heads ([`server`]); SPDY control
//! frames, header blocks, open streams and unread data per connection
//! ([`spdy`]); WebSocket control frames, with messages passed on in pieces
//! ([`websocket`]); unpaired port-forward streams ([`portforward`]); a pending
//! terminal size ([`remotecommand`]). Past a bound a call gets
//! ResourceExhausted, a stream or connection is refused or closed, and a
//! reader waits: memory never grows with what a client sends.

mod backend;
mod channels;
mod portforward;
mod remotecommand;
mod server;
mod sessions;
pub mod spdy;
#[cfg(test)]
mod tests;
mod tokens;
mod websocket;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;

pub use backend::{Backend, Node};
pub use server::Server;
use sessions::Sessions;
use tokens::{Session, Tokens};

use crate::config::StreamingConfig;
use crate::error::{Error, IoContext, Result};

/// Bytes of an exec's command line, all arguments together: Linux's own bound
/// on one argument (`MAX_ARG_STRLEN`); a pending exec keeps its command.
pub const MAX_EXEC_CMD_BYTES: usize = 128 * 1024;

/// CRI `ExecRequest`, as berth keeps it until the client comes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// CRI `AttachRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// CRI `PortForwardRequest`; the ports come with each forwarded connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    pub sandbox_id: String,
}

/// What the CRI calls use: checks a request and returns the URL of its session.
pub struct Streaming {
    tokens: Arc<Tokens>,
    sessions: Arc<Sessions>,
    backend: Arc<dyn Backend>,
    base_url: String,
}

/// Binds the server's socket; the returned [`Server`] serves it once spawned.
pub async fn bind(
    config: &StreamingConfig,
    backend: Arc<dyn Backend>,
) -> Result<(Arc<Streaming>, Server)> {
    let address = SocketAddr::new(config.address, config.port);
    let listener = TcpListener::bind(address)
        .await
        .context(|| format!("binding the streaming server to {address}"))?;
    let local = listener
        .local_addr()
        .context(|| "reading the streaming server's address".into())?;
    let tokens = Arc::new(Tokens::default());
    let sessions = Arc::new(Sessions::default());
    let streaming = Arc::new(Streaming {
        tokens: tokens.clone(),
        sessions: sessions.clone(),
        backend: backend.clone(),
        base_url: format!(
            "http://{}",
            SocketAddr::new(reachable(local.ip()), local.port())
        ),
    });
    tracing::info!(url = %streaming.base_url, "streaming server listening");
    Ok((streaming, Server::new(listener, tokens, sessions, backend)))
}

/// A wildcard address cannot go in a URL: the kubelet, on this node, uses loopback.
fn reachable(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

impl Streaming {
    pub fn exec_url(&self, mut request: ExecRequest) -> Result<String> {
        check_stdio(
            &request.container_id,
            request.tty,
            request.stdin,
            request.stdout,
            request.stderr,
        )?;
        if request.cmd.is_empty() {
            return Err(Error::InvalidArgument("cmd: empty".into()));
        }
        let cmd_bytes: usize = request.cmd.iter().map(|a| a.len() + 1).sum();
        if cmd_bytes > MAX_EXEC_CMD_BYTES {
            return Err(Error::InvalidArgument(format!(
                "cmd: {cmd_bytes} bytes, over the limit of {MAX_EXEC_CMD_BYTES}"
            )));
        }
        request.container_id = self.backend.running_container(&request.container_id)?;
        self.url(Session::Exec(request))
    }

    pub fn attach_url(&self, mut request: AttachRequest) -> Result<String> {
        check_stdio(
            &request.container_id,
            request.tty,
            request.stdin,
            request.stdout,
            request.stderr,
        )?;
        request.container_id = self.backend.running_container(&request.container_id)?;
        self.url(Session::Attach(request))
    }

    pub fn port_forward_url(&self, mut request: PortForwardRequest) -> Result<String> {
        if request.sandbox_id.is_empty() {
            return Err(Error::InvalidArgument("pod_sandbox_id: missing".into()));
        }
        request.sandbox_id = self.backend.ready_sandbox(&request.sandbox_id)?;
        self.url(Session::PortForward(request))
    }

    fn url(&self, session: Session) -> Result<String> {
        // Refused now rather than when the client comes.
        self.sessions.check(session.target())?;
        let kind = session.kind();
        let token = self.tokens.issue(session)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }
}

/// The kubelet streaming server's checks of an exec or attach request.
fn check_stdio(id: &str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("container_id: missing".into()));
    }
    if tty && stderr {
        // A terminal has one output; stderr cannot be told apart.
        return Err(Error::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(Error::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    Ok(())
}
