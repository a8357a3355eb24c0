//! A small SPDY/3.1 client for the streaming tests, built on berth's own frame
//! codec: it upgrades a streaming URL the way client-go does, opens streams with
//! headers, sends data, and collects what the server sends per stream. It is not
//! a general client: it reads frames only while a test waits for something.

use std::collections::HashMap;
use std::time::Duration;

use berth::streaming::spdy::{Decoder, Encoder, Frame, HEADER_LEN, Headers, body_len};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub const REMOTECOMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
pub const PORTFORWARD: &[&str] = &["portforward.k8s.io"];

/// What the server sent on one stream.
#[derive(Debug, Default, Clone)]
pub struct StreamState {
    pub replied: bool,
    pub data: Vec<u8>,
    pub fin: bool,
    pub reset: bool,
}

pub struct Client {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    encoder: Encoder,
    decoder: Decoder,
    next_id: u32,
    pub streams: HashMap<u32, StreamState>,
    /// The connection ended (the server closed its side).
    pub eof: bool,
    pub protocol: String,
}

/// The status line and headers of a non-upgrade answer.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub head: String,
}

/// Sends the HTTP upgrade request; the response head, and the connection.
pub async fn request(url: &str, headers: &[(&str, &str)]) -> (String, TcpStream) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut tcp = TcpStream::connect(host)
        .await
        .expect("connect to the streaming server");
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    // Read byte by byte up to the blank line: SPDY frames may follow at once.
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut byte).await.expect("read the response");
        assert!(
            n == 1,
            "connection closed in the response head: {response:?}"
        );
        response.push(byte[0]);
    }
    (String::from_utf8(response).unwrap(), tcp)
}

impl Client {
    /// Upgrades `url` offering `protocols`.
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<Client, Refusal> {
        let mut headers = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
        headers.extend(protocols.iter().map(|p| ("X-Stream-Protocol-Version", *p)));
        let (head, tcp) = request(url, &headers).await;
        let status: u16 = head[9..12].parse().unwrap();
        if status != 101 {
            return Err(Refusal { status, head });
        }
        let protocol = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("x-stream-protocol-version")
                    .then(|| value.trim().to_string())
            })
            .expect("a negotiated protocol");
        let (rd, wr) = tcp.into_split();
        Ok(Client {
            rd,
            wr,
            encoder: Encoder::default(),
            decoder: Decoder::default(),
            next_id: 1,
            streams: HashMap::new(),
            eof: false,
            protocol,
        })
    }

    pub async fn send_frame(&mut self, frame: Frame) {
        let mut buf = Vec::new();
        self.encoder.encode(&frame, &mut buf).unwrap();
        self.wr.write_all(&buf).await.expect("write a frame");
    }

    /// Opens a stream and waits for the server's reply.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        self.send_frame(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: Headers::new(headers),
        })
        .await;
        self.streams.insert(id, StreamState::default());
        self.wait(&format!("the reply to stream {id}"), |c| {
            c.streams[&id].replied || c.streams[&id].reset
        })
        .await;
        id
    }

    pub async fn send(&mut self, id: u32, data: &[u8], fin: bool) {
        self.send_frame(Frame::Data {
            stream_id: id,
            fin,
            data: Bytes::copy_from_slice(data),
        })
        .await;
    }

    /// Reads frames until `done` holds; panics after 30 s.
    pub async fn wait(&mut self, what: &str, done: impl Fn(&Client) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(
                !self.eof,
                "connection closed while waiting for {what}: {:?}",
                self.streams
            );
            match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Ok(()) => {}
                Err(_) => panic!("timed out waiting for {what}: {:?}", self.streams),
            }
        }
    }

    /// Waits for the server's FIN on `id` and returns what the stream carried.
    pub async fn read_to_end(&mut self, id: u32) -> Vec<u8> {
        self.wait(&format!("the end of stream {id}"), |c| {
            c.streams[&id].fin || c.streams[&id].reset
        })
        .await;
        self.streams[&id].data.clone()
    }

    /// Waits until stream `id` has carried at least `needle`.
    pub async fn read_until(&mut self, id: u32, needle: &str) -> String {
        self.wait(&format!("{needle:?} on stream {id}"), |c| {
            String::from_utf8_lossy(&c.streams[&id].data).contains(needle)
        })
        .await;
        String::from_utf8_lossy(&self.streams[&id].data).into_owned()
    }

    /// Waits until the server closes the connection.
    pub async fn wait_closed(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.eof {
            tokio::time::timeout_at(deadline, self.read_frame())
                .await
                .expect("the server closes the connection");
        }
    }

    async fn read_frame(&mut self) {
        let mut head = [0u8; HEADER_LEN];
        if self.rd.read_exact(&mut head).await.is_err() {
            self.eof = true;
            return;
        }
        let mut body = vec![0u8; body_len(&head)];
        self.rd.read_exact(&mut body).await.expect("a whole frame");
        let frame = self
            .decoder
            .decode(&head, Bytes::from(body))
            .expect("a valid frame");
        match frame {
            Frame::SynReply { stream_id, fin, .. } => {
                let s = self.streams.entry(stream_id).or_default();
                s.replied = true;
                s.fin |= fin;
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let s = self.streams.entry(stream_id).or_default();
                assert!(s.replied, "data on stream {stream_id} before its reply");
                assert!(!s.fin, "data on stream {stream_id} after its end");
                s.data.extend_from_slice(&data);
                s.fin |= fin;
            }
            Frame::RstStream { stream_id, .. } => {
                self.streams.entry(stream_id).or_default().reset = true;
            }
            Frame::Ping { id } => self.send_frame(Frame::Ping { id }).await,
            _ => {}
        }
    }
}

/// Parses a v4 status from an error stream.
pub fn status(error_stream: &[u8]) -> serde_json::Value {
    serde_json::from_slice(error_stream)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(error_stream)))
}
