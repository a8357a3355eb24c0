//! WebSocket (RFC 6455), server side, as far as the Kubernetes streaming clients
//! use it: binary messages, ping/pong, close. client-go's WebSocket executor
//! (`crictl exec/attach --transport websocket`) carries the channel protocol in
//! it, and its port-forward dialer tunnels SPDY through it.
//!
//! A reader task reassembles the client's (masked, maybe fragmented) messages
//! and answers pings; a writer task owns the socket's write half. No extension
//! is negotiated, so frames carry no compression.

use std::io;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// RFC 6455 section 1.3.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest message accepted; stdin chunks and resizes are small.
const MAX_MESSAGE: usize = 16 << 20;
const MESSAGE_BUFFER: usize = 16;
const OUT_BUFFER: usize = 64;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
pub(super) const OP_BINARY: u8 = 0x2;
pub(super) const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;
/// The close code of a session that ended as it should.
pub const NORMAL_CLOSURE: u16 = 1000;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// One frame as read, unmasked.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Frame {
    fin: bool,
    pub(super) opcode: u8,
    pub(super) payload: Vec<u8>,
}

pub(super) async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 2];
    match rd.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {why}"));
    if head[0] & 0x70 != 0 {
        return Err(bad("reserved bits set without an extension"));
    }
    let len = match head[1] & 0x7f {
        126 => u64::from(rd.read_u16().await?),
        127 => rd.read_u64().await?,
        n => u64::from(n),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(bad("frame too large"));
    }
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        rd.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    rd.read_exact(&mut payload).await?;
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    Ok(Some(Frame {
        fin: head[0] & 0x80 != 0,
        opcode: head[0] & 0x0f,
        payload,
    }))
}

/// A whole, unmasked frame, as a server sends them.
fn encode_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

enum Outgoing {
    Message(Bytes),
    Pong(Vec<u8>),
    Close(u16),
}

/// The server's side of a WebSocket connection; the client's messages come on a
/// channel of their own, see [`WebSocket::new`].
pub struct WebSocket {
    sender: Sender,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// Sends binary messages. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    out: mpsc::Sender<Outgoing>,
    gone: watch::Receiver<bool>,
}

impl WebSocket {
    /// Starts the connection's tasks; the receiver yields the client's messages
    /// (binary or text payloads) and ends when it closes.
    pub fn new<IO>(io: IO) -> (mpsc::Receiver<Bytes>, WebSocket)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(OUT_BUFFER);
        let (messages_tx, messages) = mpsc::channel(MESSAGE_BUFFER);
        let (gone_tx, gone) = watch::channel(false);
        let reader = tokio::spawn(read_loop(
            BufReader::new(rd),
            out.downgrade(),
            messages_tx,
            gone_tx,
        ));
        let writer = tokio::spawn(async move {
            if let Err(e) = write_loop(wr, out_rx).await {
                tracing::debug!(error = %e, "WebSocket: writing failed");
            }
        });
        let ws = WebSocket {
            sender: Sender { out, gone },
            reader,
            writer,
        };
        (messages, ws)
    }

    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Sends the close frame after what is queued, once every [`Sender`] is
    /// dropped, and gives the client `grace` to answer and close.
    pub async fn close(mut self, grace: Duration) {
        let _ = self.sender.out.send(Outgoing::Close(NORMAL_CLOSURE)).await;
        drop(self.sender);
        if tokio::time::timeout(grace, &mut self.writer).await.is_err() {
            self.writer.abort();
        }
        if tokio::time::timeout(grace, &mut self.reader).await.is_err() {
            self.reader.abort();
        }
    }
}

impl Sender {
    pub async fn send(&self, message: Bytes) -> io::Result<()> {
        self.out
            .send(Outgoing::Message(message))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed"))
    }

    /// Resolves once the client has gone (closed, or its socket broke).
    pub async fn gone(&self) {
        let mut gone = self.gone.clone();
        let _ = gone.wait_for(|g| *g).await;
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    out: mpsc::WeakSender<Outgoing>,
    messages: mpsc::Sender<Bytes>,
    gone: watch::Sender<bool>,
) {
    let send = async |message: Outgoing| {
        if let Some(out) = out.upgrade() {
            let _ = out.send(message).await;
        }
    };
    let mut partial: Option<Vec<u8>> = None;
    loop {
        let frame = match read_frame(&mut rd).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket: reading failed");
                break;
            }
        };
        match frame.opcode {
            OP_PING => send(Outgoing::Pong(frame.payload)).await,
            OP_PONG => {}
            OP_CLOSE => {
                let code = frame
                    .payload
                    .get(..2)
                    .map_or(NORMAL_CLOSURE, |c| u16::from_be_bytes([c[0], c[1]]));
                send(Outgoing::Close(code)).await;
                break;
            }
            OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                let mut message = match (partial.take(), frame.opcode) {
                    (None, OP_CONTINUATION) | (Some(_), OP_TEXT | OP_BINARY) => {
                        tracing::debug!("WebSocket: fragments out of order");
                        break;
                    }
                    (Some(mut started), _) => {
                        started.extend_from_slice(&frame.payload);
                        started
                    }
                    (None, _) => frame.payload,
                };
                if message.len() > MAX_MESSAGE {
                    tracing::debug!("WebSocket: message too large");
                    break;
                }
                if !frame.fin {
                    partial = Some(std::mem::take(&mut message));
                    continue;
                }
                // A departed consumer: the rest is read and dropped.
                let _ = messages.send(Bytes::from(message)).await;
            }
            _ => {
                tracing::debug!(opcode = frame.opcode, "WebSocket: unknown opcode");
                break;
            }
        }
    }
    let _ = gone.send(true);
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut frames: mpsc::Receiver<Outgoing>,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut closed = false;
    while let Some(frame) = frames.recv().await {
        buf.clear();
        match frame {
            // Nothing may follow a close frame.
            _ if closed => continue,
            Outgoing::Message(data) => encode_frame(OP_BINARY, &data, &mut buf),
            Outgoing::Pong(data) => encode_frame(OP_PONG, &data, &mut buf),
            Outgoing::Close(code) => {
                encode_frame(OP_CLOSE, &code.to_be_bytes(), &mut buf);
                closed = true;
            }
        }
        wr.write_all(&buf).await?;
        wr.flush().await?;
    }
    wr.shutdown().await
}

/// A client frame: masked, as RFC 6455 requires of clients.
#[cfg(test)]
pub(super) fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_of_rfc_6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn server_frames_by_length() {
        for (len, head) in [(5, 2), (300, 4), (70_000, 10)] {
            let mut out = Vec::new();
            encode_frame(OP_BINARY, &vec![7u8; len], &mut out);
            assert_eq!(out.len(), head + len);
            assert_eq!(out[0], 0x82);
        }
    }

    #[tokio::test]
    async fn messages_pings_fragments_and_close() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut messages, ws) = WebSocket::new(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut wire = client_frame(true, OP_BINARY, b"\x00hello");
        wire.extend(client_frame(true, OP_PING, b"are you there"));
        wire.extend(client_frame(false, OP_BINARY, b"\x00frag"));
        wire.extend(client_frame(true, OP_CONTINUATION, &[b'x'; 200]));
        wire.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        cwr.write_all(&wire).await.unwrap();
        assert_eq!(
            messages.recv().await.unwrap(),
            Bytes::from_static(b"\x00hello")
        );
        let mut fragmented = b"\x00frag".to_vec();
        fragmented.extend([b'x'; 200]);
        assert_eq!(messages.recv().await.unwrap(), fragmented);
        assert_eq!(messages.recv().await, None);
        let sender = ws.sender();
        sender.gone().await;
        drop(sender);
        ws.close(Duration::from_secs(1)).await;
        // The pong, the close echoed, and nothing after it.
        let pong = read_frame(&mut crd).await.unwrap().unwrap();
        assert_eq!(
            (pong.opcode, pong.payload),
            (OP_PONG, b"are you there".to_vec())
        );
        let close = read_frame(&mut crd).await.unwrap().unwrap();
        assert_eq!((close.opcode, close.payload), (OP_CLOSE, vec![0x03, 0xe8]));
        assert_eq!(read_frame(&mut crd).await.unwrap(), None);
    }
}
