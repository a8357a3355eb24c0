//! The HTTP side: one HTTP/1.1 connection per session, `/<kind>/<token>` asking
//! to upgrade to SPDY/3.1 (`X-Stream-Protocol-Version`) or to WebSocket
//! (`Sec-WebSocket-Protocol`) with the stream protocols the client speaks. The
//! token is redeemed, a protocol chosen, `101 Switching Protocols` sent, and the
//! session runs on the upgraded connection. Anything else gets a plain-text
//! error, which client-go shows to the user.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{AsHeaderName, CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::Instrument;

use super::sessions::{Sessions, Slot};
use super::spdy::Connection;
use super::tokens::{Session, Tokens};
use super::websocket::{self, WebSocket};
use super::{Backend, channels, portforward, remotecommand};
use crate::container::ProcessStreams;

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";
const SPDY: &str = "SPDY/3.1";
const WS_KEY: &str = "sec-websocket-key";
const WS_ACCEPT: &str = "sec-websocket-accept";
const WS_VERSION: &str = "sec-websocket-version";
const WS_PROTOCOL: &str = "sec-websocket-protocol";
/// A client that connects must send its request head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a request head read: a path with a token and the headers the
/// kubelet's proxy passes on (a bearer token of a few KiB) fit many times over;
/// hyper's default is 400 KiB per connection.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// Connections waiting for their request head or its answer at once: each takes
/// a descriptor and up to [`MAX_REQUEST_HEAD`]; the kubelet asks once per
/// session and upgrades at once. Past it, new connections wait in the listen
/// backlog.
const MAX_HANDSHAKES: usize = 64;

pub struct Server {
    listener: TcpListener,
    tokens: Arc<Tokens>,
    sessions: Arc<Sessions>,
    forwards: Arc<Sessions>,
    backend: Arc<dyn Backend>,
}

impl Server {
    pub(super) fn new(
        listener: TcpListener,
        tokens: Arc<Tokens>,
        sessions: Arc<Sessions>,
        backend: Arc<dyn Backend>,
    ) -> Server {
        Server {
            listener,
            tokens,
            sessions,
            forwards: Arc::new(Sessions::forwards()),
            backend,
        }
    }

    /// Accepts connections until `stop` turns true. Sessions already running go on.
    pub async fn serve(self, mut stop: watch::Receiver<bool>) {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let accepted = tokio::select! {
                accepted = accept(&self.listener, &handshakes) => accepted,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let ((tcp, peer), handshake) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: give it a moment.
                    tracing::warn!(error = %e, "streaming server: accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (tokens, backend) = (self.tokens.clone(), self.backend.clone());
            let (sessions, forwards) = (self.sessions.clone(), self.forwards.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let limits = (&sessions, &forwards);
                    let kind = kind_of_path(req.uri().path());
                    let response = respond(req, &tokens, limits, &backend);
                    crate::metrics::streaming_request(kind, response.status().as_u16());
                    async move { Ok::<_, Infallible>(response) }
                });
                // The place is given back once the connection is upgraded or
                // ends; an idle one ends at the header timeout.
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_REQUEST_HEAD)
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
                drop(handshake);
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "streaming connection");
                }
            });
        }
    }
}

/// The next connection, once there is room for its handshake.
async fn accept(
    listener: &TcpListener,
    handshakes: &Arc<Semaphore>,
) -> std::io::Result<((TcpStream, SocketAddr), OwnedSemaphorePermit)> {
    let permit = handshakes
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| std::io::Error::other("the handshake semaphore is closed"))?;
    Ok((listener.accept().await?, permit))
}

/// How a session's bytes travel once the connection is upgraded.
enum Transport {
    Spdy,
    /// With the `Sec-WebSocket-Key` to answer.
    WebSocket(String),
}

/// Answers one request; a good one starts its session once upgraded.
fn respond(
    mut req: Request<Incoming>,
    tokens: &Tokens,
    (sessions, forwards): (&Arc<Sessions>, &Arc<Sessions>),
    backend: &Arc<dyn Backend>,
) -> Response<String> {
    let path = req.uri().path().trim_matches('/');
    let Some((kind, token)) = path.split_once('/') else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let Some(session) = tokens.redeem(kind, token) else {
        return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token");
    };
    let headers = req.headers();
    let (transport, offered, supported): (_, _, &[&'static str]) = if has_token(
        headers, UPGRADE, SPDY,
    ) {
        let supported: &[&'static str] = match session {
            Session::PortForward(_) => &[portforward::PROTOCOL],
            _ => &remotecommand::PROTOCOLS,
        };
        (
            Transport::Spdy,
            header_list(headers, PROTOCOL_HEADER),
            supported,
        )
    } else if has_token(headers, UPGRADE, "websocket") {
        if headers.get(WS_VERSION).is_none_or(|v| v != "13") {
            let mut response = plain(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only");
            response
                .headers_mut()
                .insert(WS_VERSION, HeaderValue::from_static("13"));
            return response;
        }
        let Some(key) = headers.get(WS_KEY).and_then(|k| k.to_str().ok()) else {
            return plain(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
        };
        let supported: &[&'static str] = match session {
            Session::PortForward(_) => &[channels::TUNNELED_PORT_FORWARD],
            _ => &channels::PROTOCOLS,
        };
        let mut offered = header_list(headers, WS_PROTOCOL);
        // A client naming no protocol gets the oldest, as from the kubelet.
        if offered.is_empty() && !matches!(session, Session::PortForward(_)) {
            offered.push("channel.k8s.io".to_string());
        }
        (Transport::WebSocket(key.to_string()), offered, supported)
    } else {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: expected Connection: Upgrade with Upgrade: SPDY/3.1 or websocket",
        );
    };
    if !has_token(headers, CONNECTION, "upgrade") {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: Connection: Upgrade is missing",
        );
    }
    let Some(protocol) = supported
        .iter()
        .copied()
        .find(|p| offered.iter().any(|o| o == p))
    else {
        let mut response = plain(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
            ),
        );
        for p in supported {
            response
                .headers_mut()
                .append(ACCEPTED_HEADER, HeaderValue::from_static(p));
        }
        return response;
    };

    let slot = match sessions.start(session.target()) {
        Ok(slot) => slot,
        Err(e) => return plain(StatusCode::TOO_MANY_REQUESTS, &e.to_string()),
    };

    let mut response = Response::new(String::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    match &transport {
        Transport::Spdy => {
            headers.insert(UPGRADE, HeaderValue::from_static(SPDY));
            headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(protocol));
        }
        Transport::WebSocket(key) => {
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(accept) = HeaderValue::from_str(&websocket::accept_key(key)) {
                headers.insert(WS_ACCEPT, accept);
            }
            headers.insert(WS_PROTOCOL, HeaderValue::from_static(protocol));
        }
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let (backend, forwards) = (backend.clone(), forwards.clone());
    tokio::spawn(async move {
        // The session's place is held until it ends.
        let _slot: Slot = slot;
        match upgrade.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                let (kind, timer) = (session.kind(), crate::metrics::Timer::start());
                run(session, protocol, transport, io, backend, forwards).await;
                crate::metrics::streaming_session(kind, timer.elapsed());
            }
            Err(e) => tracing::debug!(error = %e, "streaming upgrade failed"),
        }
    });
    response
}

/// The session kind a request path names, for metrics: one of a fixed few, as
/// the path is the client's to choose.
fn kind_of_path(path: &str) -> &'static str {
    match path.trim_matches('/').split('/').next() {
        Some("exec") => "exec",
        Some("attach") => "attach",
        Some("portforward") => "portforward",
        _ => "other",
    }
}

/// Runs a session in its own span, naming what it targets.
async fn run<IO>(
    session: Session,
    protocol: &'static str,
    transport: Transport,
    io: IO,
    backend: Arc<dyn Backend>,
    forwards: Arc<Sessions>,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    match session {
        Session::Exec(req) => {
            let span = tracing::info_span!("exec", container_id = %req.container_id);
            let opts = stdio(req.stdin, req.stdout, req.stderr, req.tty);
            let run = |streams| backend.exec(req.container_id, req.cmd, streams);
            remote_command(transport, io, protocol, opts, run)
                .instrument(span)
                .await
        }
        Session::Attach(req) => {
            let span = tracing::info_span!("attach", container_id = %req.container_id);
            let opts = stdio(req.stdin, req.stdout, req.stderr, req.tty);
            let run = |streams| {
                let attached = backend.attach(req.container_id, streams);
                async move { attached.await.map(|()| 0) }
            };
            remote_command(transport, io, protocol, opts, run)
                .instrument(span)
                .await
        }
        Session::PortForward(req) => {
            let span = tracing::info_span!("port_forward", pod_id = %req.sandbox_id);
            let connect = |port| backend.connect(req.sandbox_id.clone(), port);
            let conn = match transport {
                Transport::Spdy => Connection::new(io),
                Transport::WebSocket(_) => {
                    let (messages, ws) = WebSocket::new(io);
                    Connection::new(channels::tunnel(messages, ws))
                }
            };
            portforward::serve(conn, connect, forwards, &req.sandbox_id)
                .instrument(span)
                .await
        }
    }
}

/// An exec or attach session on either transport.
async fn remote_command<IO, F, Fut>(
    transport: Transport,
    io: IO,
    protocol: &str,
    opts: remotecommand::Options,
    run: F,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    F: FnOnce(ProcessStreams) -> Fut,
    Fut: Future<Output = crate::error::Result<i32>>,
{
    match transport {
        Transport::Spdy => remotecommand::serve(Connection::new(io), protocol, opts, run).await,
        Transport::WebSocket(_) => {
            let (messages, ws) = WebSocket::new(io);
            channels::serve(messages, ws, protocol, opts, run).await
        }
    }
}

fn stdio(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> remotecommand::Options {
    remotecommand::Options {
        stdin,
        stdout,
        stderr,
        tty,
    }
}

/// Whether a (comma-separated) header has `token`, in any case.
fn has_token(headers: &HeaderMap, name: impl AsHeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// A header given once per value or comma-separated.
fn header_list(headers: &HeaderMap, name: impl AsHeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn plain(status: StatusCode, message: &str) -> Response<String> {
    let mut response = Response::new(format!("{message}\n"));
    *response.status_mut() = status;
    response
}
