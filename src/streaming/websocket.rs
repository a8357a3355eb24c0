//! WebSocket (RFC 6455), server side, as far as the Kubernetes streaming clients
//! use it: binary messages, ping/pong, close. client-go's WebSocket executor
//! (`crictl exec/attach --transport websocket`) carries the channel protocol in
//! it, and its port-forward dialer tunnels SPDY through it.
//!
//! A reader task passes on the client's (masked, maybe fragmented) messages
//! and answers pings; a writer task owns the socket's write half. No extension
//! is negotiated, so frames carry no compression.
//!
//! A message may announce any length (up to 2^63): it is passed on in
//! [`Piece`]s of at most [`DATA_PIECE`] bytes as it is read, never reassembled,
//! so what a client can make the reader hold is one piece and the queue behind
//! it, however large its frames. Control frames keep RFC 6455's bound of 125
//! bytes; one over it ends the connection.

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
/// Messages are passed on in pieces of at most this: what client-go writes at
/// once.
pub const DATA_PIECE: usize = 32 * 1024;
/// RFC 6455 5.5: a control frame's payload is at most 125 bytes.
const MAX_CONTROL_PAYLOAD: u64 = 125;
/// Pieces queued for the session: with [`DATA_PIECE`], 512 KiB.
const MESSAGE_BUFFER: usize = 16;
/// Messages queued for the writer; the session's are at most a piece (plus a
/// channel byte) long, so 512 KiB a client that does not read can leave.
const OUT_BUFFER: usize = 16;

pub(super) const OP_CONTINUATION: u8 = 0x0;
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

/// A piece of a client's message, in order; `start` marks a message's first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub start: bool,
    pub data: Bytes,
}

/// A frame's header, as read.
struct Head {
    fin: bool,
    opcode: u8,
    len: u64,
    mask: [u8; 4],
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {why}"))
}

/// Reads a frame's header; `None` at the end of the connection.
async fn read_head<R: AsyncRead + Unpin>(rd: &mut R) -> io::Result<Option<Head>> {
    let mut head = [0u8; 2];
    match rd.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if head[0] & 0x70 != 0 {
        return Err(invalid("reserved bits set without an extension"));
    }
    let len = match head[1] & 0x7f {
        126 => u64::from(rd.read_u16().await?),
        127 => rd.read_u64().await?,
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        rd.read_exact(&mut mask).await?;
    }
    Ok(Some(Head {
        fin: head[0] & 0x80 != 0,
        opcode: head[0] & 0x0f,
        len,
        mask,
    }))
}

/// Reads `len` bytes of payload and unmasks them; `at` is their offset in the
/// frame's payload, where the mask's cycle stands.
async fn read_payload<R: AsyncRead + Unpin>(
    rd: &mut R,
    len: usize,
    mask: [u8; 4],
    at: u64,
) -> io::Result<Vec<u8>> {
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await?;
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[((at + i as u64) % 4) as usize];
    }
    Ok(payload)
}

/// One whole frame as read, unmasked: the client's view of the server's frames.
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Frame {
    pub(super) opcode: u8,
    pub(super) payload: Vec<u8>,
}

#[cfg(test)]
pub(super) async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R) -> io::Result<Option<Frame>> {
    let Some(head) = read_head(rd).await? else {
        return Ok(None);
    };
    let payload = read_payload(rd, head.len as usize, head.mask, 0).await?;
    Ok(Some(Frame {
        opcode: head.opcode,
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
    /// (binary or text payloads), in pieces, and ends when it closes.
    pub fn new<IO>(io: IO) -> (mpsc::Receiver<Piece>, WebSocket)
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
    messages: mpsc::Sender<Piece>,
    gone: watch::Sender<bool>,
) {
    if let Err(e) = read_messages(&mut rd, &out, &messages).await {
        tracing::debug!(error = %e, "WebSocket: reading failed");
    }
    let _ = gone.send(true);
}

/// Reads frames until the client closes, passing on messages and answering
/// control frames.
async fn read_messages<R: AsyncRead + Unpin>(
    rd: &mut R,
    out: &mpsc::WeakSender<Outgoing>,
    messages: &mpsc::Sender<Piece>,
) -> io::Result<()> {
    let send = async |message: Outgoing| {
        if let Some(out) = out.upgrade() {
            let _ = out.send(message).await;
        }
    };
    // Inside a fragmented message: its next frame is a continuation.
    let mut fragmented = false;
    while let Some(head) = read_head(rd).await? {
        if head.opcode & 0x08 != 0 {
            if !head.fin || head.len > MAX_CONTROL_PAYLOAD {
                return Err(invalid("control frame fragmented or over 125 bytes"));
            }
            let payload = read_payload(rd, head.len as usize, head.mask, 0).await?;
            match head.opcode {
                OP_PING => send(Outgoing::Pong(payload)).await,
                OP_PONG => {}
                OP_CLOSE => {
                    let code = payload
                        .get(..2)
                        .map_or(NORMAL_CLOSURE, |c| u16::from_be_bytes([c[0], c[1]]));
                    send(Outgoing::Close(code)).await;
                    return Ok(());
                }
                other => return Err(invalid(&format!("unknown opcode {other}"))),
            }
            continue;
        }
        let start = match (fragmented, head.opcode) {
            (false, OP_TEXT | OP_BINARY) => true,
            (true, OP_CONTINUATION) => false,
            (_, OP_TEXT | OP_BINARY | OP_CONTINUATION) => {
                return Err(invalid("fragments out of order"));
            }
            (_, other) => return Err(invalid(&format!("unknown opcode {other}"))),
        };
        pass_on(rd, &head, start, messages).await?;
        fragmented = !head.fin;
    }
    Ok(())
}

/// Passes a data frame's payload on in pieces as it is read; a message's first
/// piece goes even when empty, so the session sees every message begin.
async fn pass_on<R: AsyncRead + Unpin>(
    rd: &mut R,
    head: &Head,
    mut start: bool,
    messages: &mpsc::Sender<Piece>,
) -> io::Result<()> {
    let mut at = 0u64;
    while at < head.len || start {
        let n = (head.len - at).min(DATA_PIECE as u64) as usize;
        let data = read_payload(rd, n, head.mask, at).await?;
        at += n as u64;
        // A departed consumer: the rest is read and dropped.
        let _ = messages
            .send(Piece {
                start,
                data: Bytes::from(data),
            })
            .await;
        start = false;
    }
    Ok(())
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
        n if n <= usize::from(u16::MAX) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
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

    /// Reassembles pieces into messages, as a test's client would want them.
    async fn messages_of(pieces: &mut mpsc::Receiver<Piece>) -> Vec<Vec<u8>> {
        let mut messages: Vec<Vec<u8>> = Vec::new();
        while let Some(piece) = pieces.recv().await {
            assert!(piece.data.len() <= DATA_PIECE);
            if piece.start {
                messages.push(Vec::new());
            }
            messages
                .last_mut()
                .expect("a message starts with its first piece")
                .extend_from_slice(&piece.data);
        }
        messages
    }

    #[tokio::test]
    async fn messages_pings_fragments_and_close() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut messages, ws) = WebSocket::new(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let big = vec![b'z'; 3 * DATA_PIECE + 5];
        let mut wire = client_frame(true, OP_BINARY, b"\x00hello");
        wire.extend(client_frame(true, OP_PING, b"are you there"));
        wire.extend(client_frame(false, OP_BINARY, b"\x00frag"));
        wire.extend(client_frame(true, OP_CONTINUATION, &[b'x'; 200]));
        wire.extend(client_frame(true, OP_BINARY, b""));
        wire.extend(client_frame(true, OP_BINARY, &big));
        wire.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        let writer = tokio::spawn(async move {
            cwr.write_all(&wire).await.unwrap();
            cwr
        });
        let mut fragmented = b"\x00frag".to_vec();
        fragmented.extend([b'x'; 200]);
        assert_eq!(
            messages_of(&mut messages).await,
            vec![b"\x00hello".to_vec(), fragmented, vec![], big]
        );
        let _cwr = writer.await.unwrap();
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

    /// A frame header announcing `len` bytes, masked with zeros.
    fn announce(opcode: u8, len: u64) -> Vec<u8> {
        let mut out = vec![0x80 | opcode, 0x80 | 127];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out
    }

    #[tokio::test]
    async fn a_huge_message_is_passed_on_in_pieces() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut messages, _ws) = WebSocket::new(server);
        let (_crd, mut cwr) = tokio::io::split(client);
        // The largest length a frame can announce, and the first megabyte of it.
        let mut wire = announce(OP_BINARY, u64::MAX >> 1);
        wire.extend(vec![7u8; 1 << 20]);
        tokio::spawn(async move { cwr.write_all(&wire).await });
        let mut got = 0;
        while got < 1 << 20 {
            let piece = messages.recv().await.unwrap();
            assert_eq!(piece.start, got == 0);
            assert!(!piece.data.is_empty() && piece.data.len() <= DATA_PIECE);
            assert!(piece.data.iter().all(|b| *b == 7));
            got += piece.data.len();
        }
    }

    #[tokio::test]
    async fn an_oversized_control_frame_ends_the_connection() {
        for wire in [
            // A ping of a megabyte, which would be echoed whole.
            client_frame(true, OP_PING, &vec![1u8; 1 << 20]),
            // A ping announcing 2^40 bytes.
            announce(OP_PING, 1 << 40),
            // A fragmented close.
            client_frame(false, OP_CLOSE, &[3, 232]),
        ] {
            let (client, server) = tokio::io::duplex(1 << 16);
            let (mut messages, ws) = WebSocket::new(server);
            let (mut crd, mut cwr) = tokio::io::split(client);
            tokio::spawn(async move { cwr.write_all(&wire).await });
            let sender = ws.sender();
            tokio::time::timeout(Duration::from_secs(5), sender.gone())
                .await
                .expect("the reader gives up");
            assert_eq!(messages.recv().await, None);
            drop(sender);
            ws.close(Duration::from_secs(1)).await;
            // No pong: only the server's close.
            let close = read_frame(&mut crd).await.unwrap().unwrap();
            assert_eq!(close.opcode, OP_CLOSE);
        }
    }
}
