//! The HTTP side: one HTTP/1.1 connection per session, `POST /<kind>/<token>`
//! asking to upgrade to SPDY/3.1 with the stream protocols the client speaks.
//! The token is redeemed, a protocol chosen, `101 Switching Protocols` sent, and
//! the session runs on the upgraded connection. Anything else gets a plain-text
//! error, which client-go shows to the user.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use super::spdy::Connection;
use super::tokens::{Session, Tokens};
use super::{Backend, portforward, remotecommand};

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";
const SPDY: &str = "SPDY/3.1";
/// A client that connects must send its request head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Server {
    listener: TcpListener,
    tokens: Arc<Tokens>,
    backend: Arc<dyn Backend>,
}

impl Server {
    pub(super) fn new(
        listener: TcpListener,
        tokens: Arc<Tokens>,
        backend: Arc<dyn Backend>,
    ) -> Server {
        Server {
            listener,
            tokens,
            backend,
        }
    }

    /// Accepts connections until `stop` turns true. Sessions already running go on.
    pub async fn serve(self, mut stop: watch::Receiver<bool>) {
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: give it a moment.
                    tracing::warn!(error = %e, "streaming server: accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (tokens, backend) = (self.tokens.clone(), self.backend.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let response = respond(req, &tokens, &backend);
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "streaming connection");
                }
            });
        }
    }
}

/// Answers one request; a good one starts its session once upgraded.
fn respond(
    mut req: Request<Incoming>,
    tokens: &Tokens,
    backend: &Arc<dyn Backend>,
) -> Response<String> {
    let path = req.uri().path().trim_matches('/');
    let Some((kind, token)) = path.split_once('/') else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let Some(session) = tokens.redeem(kind, token) else {
        return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token");
    };
    if !asks_for_spdy(req.headers()) {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: this server speaks SPDY/3.1 only (Connection: Upgrade, Upgrade: SPDY/3.1)",
        );
    }
    let supported: &[&'static str] = match session {
        Session::PortForward(_) => &[portforward::PROTOCOL],
        _ => &remotecommand::PROTOCOLS,
    };
    let offered = offered_protocols(req.headers());
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
    let upgrade = hyper::upgrade::on(&mut req);
    let backend = backend.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                run(
                    session,
                    protocol,
                    Connection::new(TokioIo::new(upgraded)),
                    backend,
                )
                .await
            }
            Err(e) => tracing::debug!(error = %e, "streaming upgrade failed"),
        }
    });
    let mut response = Response::new(String::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(SPDY));
    headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(protocol));
    response
}

/// Runs a session in its own span, naming what it targets.
async fn run(
    session: Session,
    protocol: &'static str,
    conn: Connection,
    backend: Arc<dyn Backend>,
) {
    match session {
        Session::Exec(req) => {
            let span = tracing::info_span!("exec", container_id = %req.container_id);
            let opts = remotecommand::Options {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                tty: req.tty,
            };
            let run = |streams| backend.exec(req.container_id.clone(), req.cmd.clone(), streams);
            remotecommand::serve(conn, protocol, opts, run)
                .instrument(span)
                .await
        }
        Session::Attach(req) => {
            let span = tracing::info_span!("attach", container_id = %req.container_id);
            let opts = remotecommand::Options {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                tty: req.tty,
            };
            let run = |streams| {
                let attached = backend.attach(req.container_id.clone(), streams);
                async move { attached.await.map(|()| 0) }
            };
            remotecommand::serve(conn, protocol, opts, run)
                .instrument(span)
                .await
        }
        Session::PortForward(req) => {
            let span = tracing::info_span!("port_forward", pod_id = %req.sandbox_id);
            let connect = |port| backend.connect(req.sandbox_id.clone(), port);
            portforward::serve(conn, connect).instrument(span).await
        }
    }
}

fn asks_for_spdy(headers: &HeaderMap) -> bool {
    let has = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(CONNECTION, "upgrade") && has(UPGRADE, SPDY)
}

/// `X-Stream-Protocol-Version`, given once per protocol or comma-separated.
fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(PROTOCOL_HEADER)
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
