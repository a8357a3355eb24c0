//! The streaming protocols over WebSocket.
//!
//! Exec and attach use Kubernetes' channel protocol, as the kubelet's `wsstream`
//! speaks it: every binary message starts with its channel (0 stdin, 1 stdout,
//! 2 stderr, 3 error, 4 resize); from v5 the client ends its input with the
//! message [255, 0]. The server names its first writable channel with an empty
//! message when the session starts, ends with the status on the error channel,
//! and closes the connection, at which the client's streams end.
//!
//! Port forwarding tunnels SPDY through the WebSocket (`SPDY/3.1+portforward.k8s.io`):
//! binary messages carry the SPDY connection's bytes, and the SPDY session runs
//! as it would on the socket itself.

use std::future::Future;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use super::remotecommand::{self, Options};
use super::websocket::{Piece, Sender, WebSocket};
use crate::container::ProcessStreams;
use crate::error::Result;

/// Channel protocols berth speaks, best first. The base64 variants (for
/// browsers) are not offered.
pub const PROTOCOLS: [&str; 3] = ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"];
/// SPDY inside WebSocket, for port forwarding.
pub const TUNNELED_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` ends a channel.
const CLOSE: u8 = 255;

const QUEUE: usize = 16;
const CLOSE_GRACE: Duration = Duration::from_secs(5);
const READ_BUFFER: usize = 32 * 1024;

/// Runs one exec or attach session over `ws`, like [`remotecommand::serve`].
pub async fn serve<F, Fut>(
    mut messages: mpsc::Receiver<Piece>,
    ws: WebSocket,
    protocol: &str,
    opts: Options,
    run: F,
) where
    F: FnOnce(ProcessStreams) -> Fut,
    Fut: Future<Output = Result<i32>>,
{
    let version = match protocol {
        "v5.channel.k8s.io" => 5,
        "v4.channel.k8s.io" => 4,
        _ => 1,
    };
    let sender = ws.sender();
    let stderr = opts.stderr && !opts.tty;
    // The kubelet's sign that the session is up: an empty message on the first
    // channel the server writes.
    let first = if opts.stdout {
        STDOUT
    } else if stderr {
        STDERR
    } else {
        ERROR
    };
    let _ = sender.send(Bytes::copy_from_slice(&[first])).await;

    let (stdin_tx, stdin) = channel(opts.stdin);
    let (resize_tx, resize) = channel(opts.tty);
    let mut outputs = Vec::new();
    let mut output = |wanted: bool, id: u8| {
        wanted.then(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            outputs.push(tokio::spawn(copy_out(rx, sender.clone(), id)));
            tx
        })
    };
    let process = ProcessStreams {
        stdout: output(opts.stdout, STDOUT),
        stderr: output(stderr, STDERR),
        stdin,
        resize: resize.map(|data| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(remotecommand::read_resizes(data, tx));
            rx
        }),
        tty: opts.tty,
    };
    let demux = tokio::spawn(async move {
        let mut demux = Demux {
            version,
            stdin: stdin_tx,
            resize: resize_tx,
            channel: Channel::Unread,
        };
        while let Some(piece) = messages.recv().await {
            demux.piece(piece).await;
        }
    });
    let outcome = run(process).await;
    for copier in outputs {
        let _ = copier.await;
    }
    if let Some(status) = remotecommand::status(version.min(4), &outcome) {
        let mut message = BytesMut::with_capacity(status.len() + 1);
        message.put_u8(ERROR);
        message.put_slice(status.as_bytes());
        let _ = sender.send(message.freeze()).await;
    }
    if let Err(e) = &outcome {
        tracing::warn!(error = %e, "streaming session failed");
    }
    drop(sender);
    ws.close(CLOSE_GRACE).await;
    demux.abort();
}

/// Where the message being read goes, once its first byte has said.
#[derive(Clone, Copy)]
enum Channel {
    /// The message's first byte, its channel, is still to come.
    Unread,
    Stdin,
    Resize,
    /// v5's close: the channel it closes is still to come.
    Close,
    Ignored,
}

/// Routes the client's messages, piece by piece, to the session's input.
struct Demux {
    version: u8,
    stdin: Option<mpsc::Sender<Bytes>>,
    resize: Option<mpsc::Sender<Bytes>>,
    channel: Channel,
}

impl Demux {
    async fn piece(&mut self, piece: Piece) {
        let mut data = piece.data;
        if piece.start {
            self.channel = Channel::Unread;
        }
        if let Channel::Unread = self.channel {
            let Some(&first) = data.first() else { return };
            self.channel = match first {
                STDIN => Channel::Stdin,
                RESIZE => Channel::Resize,
                CLOSE if self.version >= 5 => Channel::Close,
                _ => Channel::Ignored,
            };
            data = data.slice(1..);
        }
        if data.is_empty() {
            return;
        }
        match self.channel {
            Channel::Stdin => {
                if let Some(tx) = &self.stdin
                    && tx.send(data).await.is_err()
                {
                    self.stdin = None;
                }
            }
            Channel::Resize => {
                if let Some(tx) = &self.resize {
                    let _ = tx.send(data).await;
                }
            }
            Channel::Close => {
                if data[0] == STDIN {
                    self.stdin = None;
                }
                self.channel = Channel::Ignored;
            }
            Channel::Unread | Channel::Ignored => {}
        }
    }
}

fn channel(wanted: bool) -> (Option<mpsc::Sender<Bytes>>, Option<mpsc::Receiver<Bytes>>) {
    if wanted {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    }
}

/// Copies a process's output into messages on channel `id`; stops early if the
/// client goes, dropping `from` so the process side knows.
async fn copy_out(mut from: mpsc::Receiver<Bytes>, to: Sender, id: u8) {
    loop {
        let chunk = tokio::select! {
            chunk = from.recv() => chunk,
            () = to.gone() => return,
        };
        let Some(chunk) = chunk else { return };
        let mut message = BytesMut::with_capacity(chunk.len() + 1);
        message.put_u8(id);
        message.put_slice(&chunk);
        if to.send(message.freeze()).await.is_err() {
            return;
        }
    }
}

/// The byte stream a tunneled SPDY connection runs on: what the client's
/// messages carry comes out of it, what is written to it goes out as messages.
pub fn tunnel(mut messages: mpsc::Receiver<Piece>, ws: WebSocket) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(READ_BUFFER);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let inbound = tokio::spawn(async move {
        while let Some(piece) = messages.recv().await {
            if wr.write_all(&piece.data).await.is_err() {
                break;
            }
        }
        // The client closed: the SPDY side reads the end.
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let sender = ws.sender();
        let mut buf = vec![0u8; READ_BUFFER];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0
                || sender
                    .send(Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .is_err()
            {
                break;
            }
        }
        // The SPDY side is done: close the WebSocket after what it wrote.
        drop(sender);
        ws.close(CLOSE_GRACE).await;
        inbound.abort();
    });
    ours
}
