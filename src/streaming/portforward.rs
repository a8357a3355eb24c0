//! The port-forward protocol over SPDY (`portforward.k8s.io`), as the kubelet's
//! streaming server speaks it.
//!
//! For each connection it forwards, the client opens two streams with the same
//! `requestid` and `port` headers: `streamtype: error`, then `streamtype: data`.
//! Once both are there the pod's port is connected and bytes are copied both
//! ways; a failure is written as text on the error stream, and closing the error
//! stream tells the client the forwarding is over.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::sessions::{Sessions, Slot};
use super::spdy::{Connection, MAX_STREAMS, RST_CANCEL, Stream, StreamWriter};
use crate::error::Result;

pub const PROTOCOL: &str = "portforward.k8s.io";

/// How long the second stream of a pair may keep the first waiting.
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
/// First streams waiting for their second on one session. client-go opens a
/// pair back to back, so a connection has a few at a time even when many local
/// connections start at once; half the connection's stream cap, so pairs can
/// always complete. Past it a new first stream is reset.
const MAX_UNPAIRED: usize = MAX_STREAMS / 2;
/// After one direction ends, how long the other gets (containerd's choice).
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(1);
const CLOSE_GRACE: Duration = Duration::from_secs(5);
const READ_BUFFER: usize = 32 * 1024;

/// The first stream of a pair, waiting for the second.
struct Pending {
    data: Option<Stream>,
    error: Option<Stream>,
    since: Instant,
}

/// Runs one port-forward session into `pod` until the client closes it;
/// `connect` opens a connection to a port of the pod, within the bounds of
/// `forwards`.
pub async fn serve<F, Fut>(mut conn: Connection, connect: F, forwards: Arc<Sessions>, pod: &str)
where
    F: Fn(u16) -> Fut,
    Fut: Future<Output = Result<TcpStream>> + Send + 'static,
{
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut running = JoinSet::new();
    loop {
        let stream = match tokio::time::timeout(PAIR_TIMEOUT, conn.accept()).await {
            Ok(Some(stream)) => stream,
            Ok(None) => break,
            Err(_) => {
                expire(&mut pending).await;
                continue;
            }
        };
        expire(&mut pending).await;
        let (Some(id), Some(kind)) = (
            stream.headers.get("requestid").map(str::to_string),
            stream.headers.get("streamtype").map(str::to_string),
        ) else {
            let _ = stream.writer.reset(RST_CANCEL).await;
            continue;
        };
        if !pending.contains_key(&id) && pending.len() >= MAX_UNPAIRED {
            tracing::debug!(requestid = %id, "refused a stream: too many unpaired streams");
            let _ = stream.writer.reset(RST_CANCEL).await;
            continue;
        }
        if stream.writer.reply().await.is_err() {
            break;
        }
        let pair = pending.entry(id.clone()).or_insert_with(|| Pending {
            data: None,
            error: None,
            since: Instant::now(),
        });
        let slot = match kind.as_str() {
            "data" => &mut pair.data,
            "error" => &mut pair.error,
            _ => {
                let _ = stream.writer.reset(RST_CANCEL).await;
                continue;
            }
        };
        if slot.is_some() {
            let _ = stream.writer.reset(RST_CANCEL).await;
            continue;
        }
        *slot = Some(stream);
        if pair.data.is_some()
            && pair.error.is_some()
            && let Some(Pending {
                data: Some(data),
                error: Some(error),
                ..
            }) = pending.remove(&id)
        {
            let port = data.headers.get("port").and_then(|p| p.parse::<u16>().ok());
            let admitted = forwards.start(pod);
            let connecting = port.filter(|p| *p > 0 && admitted.is_ok()).map(&connect);
            running.spawn(forward(data, error, port, admitted, connecting).in_current_span());
        }
    }
    // The client is done; what still runs ends with its streams.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    running.abort_all();
    conn.close(CLOSE_GRACE).await;
}

/// Drops pairs whose second stream never came.
async fn expire(pending: &mut HashMap<String, Pending>) {
    let stale: Vec<String> = pending
        .iter()
        .filter(|(_, p)| p.since.elapsed() > PAIR_TIMEOUT)
        .map(|(id, _)| id.clone())
        .collect();
    for id in stale {
        if let Some(p) = pending.remove(&id) {
            for stream in [p.data, p.error].into_iter().flatten() {
                let _ = stream.writer.reset(RST_CANCEL).await;
            }
        }
    }
}

/// Forwards one connection, holding its place among the pod's and node's
/// forwards, then closes both streams: the client waits for the end of the data
/// stream, then of the error stream.
async fn forward(
    data: Stream,
    error: Stream,
    port: Option<u16>,
    admitted: Result<Slot>,
    connecting: Option<impl Future<Output = Result<TcpStream>>>,
) {
    let Stream {
        headers,
        data: from_client,
        writer: to_client,
    } = data;
    // The client sends nothing on the error stream: what it might is not kept.
    let Stream { writer: error, .. } = error;
    let fin_sent = AtomicBool::new(false);
    let outcome = match (port, admitted, connecting) {
        (Some(port), Err(e), _) => Err(format!("error forwarding port {port}: {e}")),
        (Some(port), Ok(_slot), Some(connecting)) => match connecting.await {
            Ok(tcp) => copy_both(tcp, from_client, &to_client, &fin_sent)
                .await
                .map_err(|e| format!("error forwarding port {port}: {e}")),
            Err(e) => Err(format!("error forwarding port {port}: {e}")),
        },
        _ => Err(format!(
            "invalid port {:?}: expected a number from 1 to 65535",
            headers.get("port").unwrap_or_default()
        )),
    };
    if !fin_sent.load(Ordering::Relaxed) {
        let _ = to_client.close().await;
    }
    if let Err(message) = outcome {
        tracing::info!("{message}");
        let _ = error.write(Bytes::from(message)).await;
    }
    let _ = error.close().await;
}

/// Copies between the client's data stream and the pod's port until both
/// directions end, or one has ended and the other had a moment, or the client
/// resets the stream. The pod's end of output is passed on at once.
async fn copy_both(
    tcp: TcpStream,
    mut from_client: mpsc::Receiver<Bytes>,
    to_client: &StreamWriter,
    fin_sent: &AtomicBool,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = tcp.into_split();
    let upstream = async {
        while let Some(chunk) = from_client.recv().await {
            wr.write_all(&chunk).await?;
        }
        // The client is done sending: so are we, towards the pod.
        wr.shutdown().await
    };
    let downstream = async {
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            to_client.write(Bytes::copy_from_slice(&buf[..n])).await?;
        }
        fin_sent.store(true, Ordering::Relaxed);
        to_client.close().await
    };
    tokio::pin!(upstream, downstream);
    let (first, upstream_done) = tokio::select! {
        r = &mut upstream => (r, true),
        r = &mut downstream => (r, false),
        () = to_client.reset_by_peer() => return Ok(()),
    };
    let grace = tokio::time::sleep(HALF_CLOSE_GRACE);
    let second = if upstream_done {
        tokio::select! {
            r = &mut downstream => r,
            () = to_client.reset_by_peer() => Ok(()),
            () = grace => Ok(()),
        }
    } else {
        tokio::select! {
            r = &mut upstream => r,
            () = to_client.reset_by_peer() => Ok(()),
            () = grace => Ok(()),
        }
    };
    first.and(second)
}
