//! The remotecommand protocol of exec and attach over SPDY, as the kubelet's
//! streaming server speaks it (`k8s.io/kubelet/pkg/cri/streaming/remotecommand`).
//!
//! The client opens one stream per channel, named by its `streamtype` header:
//! `error` always, `stdin`/`stdout`/`stderr` as the request asked (no `stderr` with
//! a terminal), and from v3 on `resize` with a terminal. Once all are there the
//! command runs; its output is copied out, input and resizes in, and at the end
//! the outcome is written on the error stream — from v4 on as a JSON
//! `metav1.Status` carrying the exit code, before that as bare text on failure —
//! and every stream is closed.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::spdy::{Connection, RST_CANCEL, Stream, StreamWriter};
use crate::container::{ProcessStreams, TerminalSize};
use crate::error::Result;

/// What berth speaks, best first; v5 adds only a WebSocket close signal.
pub const PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The kubelet's default `StreamCreationTimeout`.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client gets to close its side after the session.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Output chunks in flight to one stream.
const OUTPUT_QUEUE: usize = 16;
const RESIZE_QUEUE: usize = 4;
/// Bytes of a terminal size kept while its end has not come: client-go's are
/// about 30 bytes; a client that sends more without ending one loses its resizes.
const MAX_RESIZE_PENDING: usize = 1024;

/// The stdio a session carries, from the Exec or Attach request.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The negotiated protocol, by its number.
fn version(protocol: &str) -> u8 {
    match protocol {
        "v4.channel.k8s.io" => 4,
        "v3.channel.k8s.io" => 3,
        "v2.channel.k8s.io" => 2,
        _ => 1,
    }
}

/// The client's streams, each answered.
#[derive(Default)]
struct Streams {
    error: Option<StreamWriter>,
    stdin: Option<Stream>,
    stdout: Option<StreamWriter>,
    stderr: Option<StreamWriter>,
    resize: Option<Stream>,
}

/// Runs one exec or attach session: `run` gets the session's stdio and returns
/// the exit code (attach: 0).
pub async fn serve<F, Fut>(mut conn: Connection, protocol: &str, opts: Options, run: F)
where
    F: FnOnce(ProcessStreams) -> Fut,
    Fut: Future<Output = Result<i32>>,
{
    let version = version(protocol);
    let streams = match accept_streams(&mut conn, version, opts).await {
        Ok(streams) => streams,
        Err(why) => {
            tracing::warn!("streaming session abandoned: {why}");
            conn.close(CLOSE_GRACE).await;
            return;
        }
    };
    // A session's streams are all there; more would wait for a reply forever.
    conn.stop_accepting();
    let mut outputs = Vec::new();
    let mut output = |writer: Option<StreamWriter>| {
        writer.map(|writer| {
            let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
            outputs.push(tokio::spawn(copy_out(rx, writer)));
            tx
        })
    };
    let process = ProcessStreams {
        stdout: output(streams.stdout),
        stderr: output(streams.stderr),
        stdin: streams.stdin.map(|s| s.data),
        resize: streams.resize.map(|s| {
            let (tx, rx) = mpsc::channel(RESIZE_QUEUE);
            tokio::spawn(read_resizes(s.data, tx));
            rx
        }),
        tty: opts.tty,
    };
    let outcome = run(process).await;
    // Output reaches the client before the status that ends its wait.
    for copier in outputs {
        let _ = copier.await;
    }
    if let Some(error) = streams.error {
        if let Some(status) = status(version, &outcome) {
            let _ = error.write(Bytes::from(status)).await;
        }
        let _ = error.close().await;
    }
    if let Err(e) = &outcome {
        tracing::warn!(error = %e, "streaming session failed");
    }
    conn.close(CLOSE_GRACE).await;
}

/// Answers the client's streams until every one the options call for is there.
async fn accept_streams(
    conn: &mut Connection,
    version: u8,
    opts: Options,
) -> Result<Streams, String> {
    let want_resize = opts.tty && version >= 3;
    let wanted = |s: &Streams| {
        s.error.is_some()
            && (!opts.stdin || s.stdin.is_some())
            && (!opts.stdout || s.stdout.is_some())
            && (!opts.stderr || opts.tty || s.stderr.is_some())
            && (!want_resize || s.resize.is_some())
    };
    let deadline = Instant::now() + STREAM_CREATION_TIMEOUT;
    let mut streams = Streams::default();
    while !wanted(&streams) {
        let stream = match tokio::time::timeout_at(deadline, conn.accept()).await {
            Ok(Some(stream)) => stream,
            Ok(None) => {
                return Err("the client closed the connection before opening its streams".into());
            }
            Err(_) => return Err("timed out waiting for the client to open its streams".into()),
        };
        let kind = stream
            .headers
            .get("streamtype")
            .unwrap_or_default()
            .to_string();
        let slot = match kind.as_str() {
            "error" => Slot::Writer(&mut streams.error),
            "stdout" => Slot::Writer(&mut streams.stdout),
            "stderr" => Slot::Writer(&mut streams.stderr),
            "stdin" => Slot::Stream(&mut streams.stdin),
            "resize" => Slot::Stream(&mut streams.resize),
            _ => Slot::Unknown,
        };
        if !slot.fill(stream).await {
            tracing::debug!(streamtype = %kind, "refused an unexpected stream");
        }
    }
    Ok(streams)
}

enum Slot<'a> {
    Writer(&'a mut Option<StreamWriter>),
    Stream(&'a mut Option<Stream>),
    Unknown,
}

impl Slot<'_> {
    /// Replies to `stream` and keeps it, unless its type is unknown or taken.
    async fn fill(self, stream: Stream) -> bool {
        let free = match &self {
            Slot::Writer(w) => w.is_none(),
            Slot::Stream(s) => s.is_none(),
            Slot::Unknown => false,
        };
        if !free || stream.writer.reply().await.is_err() {
            let _ = stream.writer.reset(RST_CANCEL).await;
            return false;
        }
        match self {
            // The client sends nothing on output streams: only the writer matters.
            Slot::Writer(w) => *w = Some(stream.writer),
            Slot::Stream(s) => *s = Some(stream),
            Slot::Unknown => {}
        }
        true
    }
}

/// Copies a process's output to its stream, then half-closes it. Stops early if
/// the client resets the stream or goes, dropping `from` so the process side
/// knows.
async fn copy_out(mut from: mpsc::Receiver<Bytes>, to: StreamWriter) {
    loop {
        tokio::select! {
            chunk = from.recv() => match chunk {
                Some(chunk) => {
                    if to.write(chunk).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            () = to.reset_by_peer() => return,
        }
    }
    let _ = to.close().await;
}

/// Terminal sizes as client-go's JSON encoder writes them, one object per line,
/// split across data frames anywhere.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Size {
    width: u16,
    height: u16,
}

pub(super) async fn read_resizes(
    mut data: mpsc::Receiver<Bytes>,
    sizes: mpsc::Sender<TerminalSize>,
) {
    let mut pending = Vec::new();
    while let Some(chunk) = data.recv().await {
        if pending.len() + chunk.len() > MAX_RESIZE_PENDING {
            tracing::debug!("terminal size from the client too long: resizes stopped");
            return;
        }
        pending.extend_from_slice(&chunk);
        let mut parsed = serde_json::Deserializer::from_slice(&pending).into_iter::<Size>();
        let mut used = 0;
        loop {
            match parsed.next() {
                Some(Ok(size)) => {
                    used = parsed.byte_offset();
                    let size = TerminalSize {
                        width: size.width,
                        height: size.height,
                    };
                    if sizes.send(size).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "bad terminal size from the client");
                    return;
                }
                None => {
                    used = pending.len();
                    break;
                }
            }
        }
        pending.drain(..used);
    }
}

/// What to write on the error stream for the session's outcome, if anything.
pub(super) fn status(version: u8, outcome: &Result<i32>) -> Option<String> {
    let (message, status) = match outcome {
        Ok(0) => return (version >= 4).then(|| r#"{"metadata":{},"status":"Success"}"#.into()),
        Ok(code) => {
            // Exit statuses are 0-255; the client parses the code as 8 bits.
            let code = (*code).clamp(0, 255);
            let message = format!("command terminated with non-zero exit code: {code}");
            let status = serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            });
            (message, status)
        }
        Err(e) => {
            let message = format!("Internal error occurred: {e}");
            let status = serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "details": {"causes": [{"message": e.to_string()}]},
                "code": 500,
            });
            (message, status)
        }
    };
    Some(if version >= 4 {
        status.to_string()
    } else {
        message
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn statuses_by_version() {
        assert_eq!(
            status(4, &Ok(0)).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(status(3, &Ok(0)), None);
        let failed: serde_json::Value = serde_json::from_str(&status(4, &Ok(3)).unwrap()).unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        assert_eq!(
            status(2, &Ok(3)).unwrap(),
            "command terminated with non-zero exit code: 3"
        );
        let err = Err(Error::FailedPrecondition(
            "container c is not running".into(),
        ));
        let internal: serde_json::Value = serde_json::from_str(&status(4, &err).unwrap()).unwrap();
        assert_eq!(internal["reason"], "InternalError");
        assert!(
            internal["message"]
                .as_str()
                .unwrap()
                .contains("container c is not running")
        );
    }

    #[tokio::test]
    async fn an_endless_resize_is_cut_off() {
        let (data_tx, data) = mpsc::channel(8);
        let (tx, mut sizes) = mpsc::channel(8);
        let reader = tokio::spawn(read_resizes(data, tx));
        data_tx
            .send(Bytes::from_static(b"{\"Width\":80,\"Height\":24}\n"))
            .await
            .unwrap();
        // A string that never ends: without a bound, kept whole.
        data_tx
            .send(Bytes::from_static(b"{\"Width\":80,\"x\":\""))
            .await
            .unwrap();
        let filler = Bytes::from(vec![b'a'; 512]);
        for _ in 0..4 {
            if data_tx.send(filler.clone()).await.is_err() {
                break;
            }
        }
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the reader stops at the bound")
            .unwrap();
        assert!(data_tx.is_closed());
        assert_eq!(
            sizes.recv().await,
            Some(TerminalSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(sizes.recv().await, None);
    }

    #[tokio::test]
    async fn resizes_split_anywhere_are_parsed() {
        let (data_tx, data) = mpsc::channel(8);
        let (tx, mut sizes) = mpsc::channel(8);
        let reader = tokio::spawn(read_resizes(data, tx));
        for piece in [
            &b"{\"Width\":80,\"He"[..],
            b"ight\":24}\n{\"Width\":1",
            b"00,\"Height\":50}\n",
        ] {
            data_tx.send(Bytes::from_static(piece)).await.unwrap();
        }
        drop(data_tx);
        assert_eq!(
            sizes.recv().await,
            Some(TerminalSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(
            sizes.recv().await,
            Some(TerminalSize {
                width: 100,
                height: 50
            })
        );
        reader.await.unwrap();
        assert_eq!(sizes.recv().await, None);
    }
}
