//! The `/metrics` endpoint: plain HTTP/1 on the configured address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::families::Inventory;
use crate::error::{Error, IoContext, Result};

/// Connections served at once: a node has one or two scrapers; more is a
/// misbehaving client, which waits rather than costing berthd memory.
const MAX_CONNECTIONS: usize = 8;
/// A scraper that does not send its request head in this long is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `address` and serves `/metrics` until `stop` turns true. Metrics must
/// have been enabled. Returns the bound address (port 0 picks one).
pub async fn serve(
    address: SocketAddr,
    inventory: Arc<dyn Inventory>,
    mut stop: watch::Receiver<bool>,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(address)
        .await
        .context(|| format!("metrics.address: binding {address}"))?;
    let bound = listener
        .local_addr()
        .context(|| "metrics.address: reading the bound address".into())?;
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = connections.clone().acquire_owned() => p,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok(permit) = permit else { return };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics server: accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let inventory = inventory.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| respond(req, inventory.clone()));
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
                drop(permit);
            });
        }
    });
    Ok(bound)
}

async fn respond<B>(
    req: Request<B>,
    inventory: Arc<dyn Inventory>,
) -> std::result::Result<Response<String>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "only /metrics is served\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n"));
    }
    let scraped = tokio::task::spawn_blocking(move || scrape(&*inventory)).await;
    Ok(match scraped {
        Ok(Ok(text)) => {
            let mut response = Response::new(text);
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            );
            response
        }
        Ok(Err(e)) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    })
}

fn scrape(inventory: &dyn Inventory) -> Result<String> {
    let families = super::families()
        .ok_or_else(|| Error::Internal("metrics are served but were not enabled".into()))?;
    families
        .scrape(inventory)
        .map_err(|e| Error::Internal(format!("encoding metrics: {e}")))
}

fn plain(status: StatusCode, body: &str) -> Response<String> {
    let mut response = Response::new(body.to_string());
    *response.status_mut() = status;
    response
}
