//! Sessions end to end over an in-memory pipe, without root: a client built on
//! the frame codec against `remotecommand::serve` and `portforward::serve`, with
//! fake processes and a loopback echo server standing in for the node.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::sessions::MAX_FORWARDS_PER_POD;
use super::spdy::{
    Connection, DATA_PIECE, Decoder, Encoder, Frame, HEADER_LEN, Headers, INBOUND_BUDGET,
    MAX_STREAMS, Stream, body_len,
};
use super::{portforward, remotecommand};
use crate::container::{ProcessStreams, TerminalSize};
use crate::error::Error;

/// The client's view: what arrived per stream, and whether it ended.
struct Client {
    rd: ReadHalf<DuplexStream>,
    wr: WriteHalf<DuplexStream>,
    encoder: Encoder,
    decoder: Decoder,
    next_id: u32,
    data: HashMap<u32, Vec<u8>>,
    fin: HashMap<u32, bool>,
    pongs: Vec<u32>,
    eof: bool,
}

impl Client {
    fn new(io: DuplexStream) -> Client {
        let (rd, wr) = tokio::io::split(io);
        Client {
            rd,
            wr,
            encoder: Encoder::default(),
            decoder: Decoder::default(),
            next_id: 1,
            data: HashMap::new(),
            fin: HashMap::new(),
            pongs: Vec::new(),
            eof: false,
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut buf = Vec::new();
        self.encoder.encode(&frame, &mut buf).unwrap();
        self.wr.write_all(&buf).await.unwrap();
    }

    async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: Headers::new(headers),
        })
        .await;
        id
    }

    async fn data(&mut self, id: u32, data: &'static [u8], fin: bool) {
        self.send(Frame::Data {
            stream_id: id,
            fin,
            data: Bytes::from_static(data),
        })
        .await;
    }

    /// Reads until the server closes; the order in which streams ended.
    async fn read_all(&mut self) -> Vec<u32> {
        let mut ended = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.eof {
            let mut head = [0u8; HEADER_LEN];
            let read = tokio::time::timeout_at(deadline, self.rd.read_exact(&mut head)).await;
            if read.expect("the server ends the session").is_err() {
                // As client-go does once the session is over.
                self.wr.shutdown().await.unwrap();
                self.eof = true;
                break;
            }
            let mut body = vec![0u8; body_len(&head)];
            self.rd.read_exact(&mut body).await.unwrap();
            match self.decoder.decode(&head, Bytes::from(body)).unwrap() {
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } => {
                    assert!(!self.fin.get(&stream_id).copied().unwrap_or(false));
                    self.data
                        .entry(stream_id)
                        .or_default()
                        .extend_from_slice(&data);
                    if fin {
                        self.fin.insert(stream_id, true);
                        ended.push(stream_id);
                    }
                }
                Frame::Ping { id } => self.pongs.push(id),
                _ => {}
            }
        }
        ended
    }

    fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.data.get(&id).map_or(&[][..], |d| d)).into_owned()
    }
}

fn pipe() -> (Client, Connection) {
    let (client, server) = tokio::io::duplex(1 << 16);
    (Client::new(client), Connection::new(server))
}

fn opts(stdin: bool, tty: bool) -> remotecommand::Options {
    remotecommand::Options {
        stdin,
        stdout: true,
        stderr: !tty,
        tty,
    }
}

/// A process that shouts its input back and complains once on stderr.
async fn shout(streams: ProcessStreams) -> crate::error::Result<i32> {
    let ProcessStreams {
        stdin,
        stdout,
        stderr,
        ..
    } = streams;
    stderr
        .unwrap()
        .send(Bytes::from_static(b"complaint"))
        .await
        .unwrap();
    let (mut stdin, stdout) = (stdin.unwrap(), stdout.unwrap());
    while let Some(chunk) = stdin.recv().await {
        let upper = chunk.to_ascii_uppercase();
        stdout.send(Bytes::from(upper)).await.unwrap();
    }
    Ok(3)
}

#[tokio::test]
async fn exec_session_output_before_status_then_close() {
    let (mut c, conn) = pipe();
    let server = tokio::spawn(remotecommand::serve(
        conn,
        "v4.channel.k8s.io",
        opts(true, false),
        shout,
    ));
    let error = c.open(&[("streamtype", "error")]).await;
    let stdin = c.open(&[("streamtype", "stdin")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    let stderr = c.open(&[("streamtype", "stderr")]).await;
    c.send(Frame::Ping { id: 1 }).await;
    c.data(stdin, b"hello ", false).await;
    c.data(stdin, b"there", true).await;
    let ended = c.read_all().await;
    server.await.unwrap();
    assert_eq!(c.text(stdout), "HELLO THERE");
    assert_eq!(c.text(stderr), "complaint");
    // The status comes last: client-go stops reading when it arrives.
    assert_eq!(ended.last(), Some(&error), "{ended:?}");
    let status: serde_json::Value = serde_json::from_str(&c.text(error)).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert_eq!(c.pongs, [1]);
}

#[tokio::test]
async fn terminal_session_passes_resizes_and_has_one_output() {
    let (mut c, conn) = pipe();
    let run = async |streams: ProcessStreams| {
        assert!(streams.tty && streams.stderr.is_none());
        let mut sizes = streams.resize.unwrap();
        let stdout = streams.stdout.unwrap();
        while let Some(TerminalSize { width, height }) = sizes.recv().await {
            let line = format!("{width}x{height};");
            stdout.send(Bytes::from(line)).await.unwrap();
            if width == 1 {
                break;
            }
        }
        Ok(0)
    };
    let server = tokio::spawn(remotecommand::serve(
        conn,
        "v4.channel.k8s.io",
        opts(false, true),
        run,
    ));
    let error = c.open(&[("streamtype", "error")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    let resize = c.open(&[("streamtype", "resize")]).await;
    c.data(
        resize,
        b"{\"Width\":80,\"Height\":24}\n{\"Width\":1,",
        false,
    )
    .await;
    c.data(resize, b"\"Height\":2}\n", false).await;
    c.read_all().await;
    server.await.unwrap();
    assert_eq!(c.text(stdout), "80x24;1x2;");
    assert_eq!(c.text(error), r#"{"metadata":{},"status":"Success"}"#);
}

#[tokio::test]
async fn a_departed_client_ends_the_session() {
    let (mut c, conn) = pipe();
    let run = async |streams: ProcessStreams| {
        // As attach does: follow the client until it is gone.
        streams.stdout.unwrap().closed().await;
        Err(Error::Unavailable("client gone".into()))
    };
    let server = tokio::spawn(remotecommand::serve(
        conn,
        "v3.channel.k8s.io",
        opts(false, false),
        run,
    ));
    c.open(&[("streamtype", "error")]).await;
    c.open(&[("streamtype", "stdout")]).await;
    c.open(&[("streamtype", "stderr")]).await;
    drop(c);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the session ends")
        .unwrap();
}

#[tokio::test]
async fn unwanted_streams_are_refused_and_errors_before_v4_are_text() {
    let (mut c, conn) = pipe();
    let run = async |_: ProcessStreams| Err(Error::FailedPrecondition("no such thing".into()));
    let server = tokio::spawn(remotecommand::serve(
        conn,
        "v2.channel.k8s.io",
        opts(false, false),
        run,
    ));
    c.open(&[("streamtype", "bogus")]).await;
    let error = c.open(&[("streamtype", "error")]).await;
    c.open(&[("streamtype", "error")]).await;
    c.open(&[("streamtype", "stdout")]).await;
    c.open(&[("streamtype", "stderr")]).await;
    c.read_all().await;
    server.await.unwrap();
    assert_eq!(c.text(error), "Internal error occurred: no such thing");
}

#[tokio::test]
async fn port_forward_pairs_streams_and_reports_failures() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = tcp.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            });
        }
    });
    let (mut c, conn) = pipe();
    let connect = move |p: u16| async move {
        if p == port {
            Ok(TcpStream::connect(("127.0.0.1", port)).await.unwrap())
        } else {
            Err(Error::Unavailable(format!("port {p} refused")))
        }
    };
    let forwards = std::sync::Arc::new(super::sessions::Sessions::forwards());
    let server = tokio::spawn(portforward::serve(conn, connect, forwards, "pod"));
    let port_text = port.to_string();
    let pair = |kind, port, id| [("streamtype", kind), ("port", port), ("requestid", id)];
    // Streams of two requests, interleaved.
    let err0 = c.open(&pair("error", &port_text, "0")).await;
    let err1 = c.open(&pair("error", "81", "1")).await;
    let data0 = c.open(&pair("data", &port_text, "0")).await;
    let data1 = c.open(&pair("data", "81", "1")).await;
    c.data(data0, b"echo me", true).await;
    // Wait for both to finish before the client goes.
    while !(c.fin.get(&err0).copied().unwrap_or(false)
        && c.fin.get(&err1).copied().unwrap_or(false))
    {
        let mut head = [0u8; HEADER_LEN];
        c.rd.read_exact(&mut head).await.unwrap();
        let mut body = vec![0u8; body_len(&head)];
        c.rd.read_exact(&mut body).await.unwrap();
        if let Frame::Data {
            stream_id,
            fin,
            data,
        } = c.decoder.decode(&head, Bytes::from(body)).unwrap()
        {
            c.data
                .entry(stream_id)
                .or_default()
                .extend_from_slice(&data);
            if fin {
                c.fin.insert(stream_id, true);
            }
        }
    }
    assert_eq!(c.text(data0), "echo me");
    assert_eq!(c.text(err0), "");
    assert!(c.fin[&data0]);
    assert!(c.text(err1).contains("port 81 refused"), "{}", c.text(err1));
    assert!(c.fin.get(&data1).copied().unwrap_or(false));
    c.send(Frame::GoAway {
        last_good_stream_id: 0,
        status: 0,
    })
    .await;
    drop(c);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the session ends")
        .unwrap();
}

#[tokio::test]
async fn websocket_channels_carry_a_session() {
    use super::channels;
    use super::websocket::{self, OP_BINARY, OP_CLOSE, OP_CONTINUATION, WebSocket, client_frame};

    let (client, server) = tokio::io::duplex(1 << 16);
    let (messages, ws) = WebSocket::new(server);
    let session = tokio::spawn(channels::serve(
        messages,
        ws,
        "v5.channel.k8s.io",
        opts(true, false),
        shout,
    ));
    let (mut rd, mut wr) = tokio::io::split(client);
    let mut wire = client_frame(true, OP_BINARY, b"\x00abc");
    // Fragments split anywhere, even between a channel and its data.
    wire.extend(client_frame(false, OP_BINARY, b"\x00"));
    wire.extend(client_frame(true, OP_CONTINUATION, b"def"));
    // v5: the end of stdin.
    wire.extend(client_frame(false, OP_BINARY, &[255]));
    wire.extend(client_frame(true, OP_CONTINUATION, &[0]));
    wr.write_all(&wire).await.unwrap();
    let mut by_channel: HashMap<u8, Vec<u8>> = HashMap::new();
    let mut first = None;
    loop {
        let frame = websocket::read_frame(&mut rd).await.unwrap().unwrap();
        if frame.opcode == OP_CLOSE {
            assert_eq!(frame.payload, 1000u16.to_be_bytes());
            break;
        }
        assert_eq!(frame.opcode, OP_BINARY);
        first.get_or_insert(frame.payload.clone());
        by_channel
            .entry(frame.payload[0])
            .or_default()
            .extend_from_slice(&frame.payload[1..]);
    }
    // The session announced itself on stdout, the first channel it writes.
    assert_eq!(first.unwrap(), [1]);
    assert_eq!(by_channel[&1], b"ABCDEF");
    assert_eq!(by_channel[&2], b"complaint");
    let status: serde_json::Value = serde_json::from_slice(&by_channel[&3]).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    // The client answers the close and goes.
    wr.write_all(&client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    drop(wr);
    tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .expect("the session ends")
        .unwrap();
}

/// Hands out every stream a connection accepts, for a test to hold unread.
fn hoard(mut conn: Connection) -> tokio::sync::mpsc::UnboundedReceiver<Stream> {
    let (tx, streams) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(stream) = conn.accept().await {
            if tx.send(stream).is_err() {
                break;
            }
        }
    });
    streams
}

fn syn(stream_id: u32) -> Frame {
    Frame::SynStream {
        stream_id,
        associated_to: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::new(&[("streamtype", "data")]),
    }
}

#[tokio::test]
async fn a_connection_bounds_its_streams_and_unread_data() {
    let (c, conn) = pipe();
    let mut accepted = hoard(conn);
    let Client {
        mut rd,
        mut wr,
        mut encoder,
        mut decoder,
        ..
    } = c;
    // More streams than a connection may hold open, and 32 KiB on each of the
    // first 40: more than the budget for data nobody has read.
    let (extra, loaded) = (10u32, 40u32);
    let mut wire = Vec::new();
    for i in 0..MAX_STREAMS as u32 + extra {
        encoder.encode(&syn(2 * i + 1), &mut wire).unwrap();
    }
    let piece = Bytes::from(vec![1u8; DATA_PIECE]);
    for i in 0..loaded {
        let frame = Frame::Data {
            stream_id: 2 * i + 1,
            fin: false,
            data: piece.clone(),
        };
        encoder.encode(&frame, &mut wire).unwrap();
    }
    let writer = tokio::spawn(async move { wr.write_all(&wire).await.map(|()| wr) });

    // The streams past the bound are refused.
    let mut refused = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while refused.len() < extra as usize {
        let mut head = [0u8; HEADER_LEN];
        tokio::time::timeout_at(deadline, rd.read_exact(&mut head))
            .await
            .expect("the refusals")
            .unwrap();
        let mut body = vec![0u8; body_len(&head)];
        rd.read_exact(&mut body).await.unwrap();
        if let Frame::RstStream { stream_id, status } =
            decoder.decode(&head, Bytes::from(body)).unwrap()
        {
            assert_eq!(status, 3, "REFUSED_STREAM");
            refused.push(stream_id);
        }
    }
    let first_refused = 2 * MAX_STREAMS as u32 + 1;
    assert_eq!(
        refused,
        (0..extra)
            .map(|i| first_refused + 2 * i)
            .collect::<Vec<_>>()
    );

    // The reader stops at the budget: the client cannot send the rest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    while let Ok(stream) = accepted.try_recv() {
        held.push(stream);
    }
    assert_eq!(held.len(), MAX_STREAMS);
    let queued: usize = held.iter().map(|s| s.data.len() * DATA_PIECE).sum();
    assert!(
        (INBOUND_BUDGET / 2..=INBOUND_BUDGET).contains(&queued),
        "{queued} bytes queued"
    );
    assert!(
        !writer.is_finished(),
        "the connection is not read past its budget"
    );

    // Data taken gives its room back: everything arrives, nothing is lost.
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while received < loaded as usize * DATA_PIECE {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{received} received"
        );
        for stream in &mut held {
            while let Ok(piece) = stream.data.try_recv() {
                received += piece.len();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_long_data_frame_arrives_in_pieces() {
    let (mut c, conn) = pipe();
    let mut accepted = hoard(conn);
    let id = c.open(&[("streamtype", "stdin")]).await;
    let long = vec![9u8; 3 * DATA_PIECE + 100];
    c.send(Frame::Data {
        stream_id: id,
        fin: true,
        data: Bytes::from(long.clone()),
    })
    .await;
    let mut stream = accepted.recv().await.unwrap();
    let mut got = Vec::new();
    while let Some(piece) = stream.data.recv().await {
        assert!(piece.len() <= DATA_PIECE, "{}", piece.len());
        got.extend_from_slice(&piece);
    }
    assert_eq!(got, long);
}

#[tokio::test]
async fn forwards_into_a_pod_are_bounded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds every connection.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let (mut c, conn) = pipe();
    let connect =
        move |_| async move { Ok(TcpStream::connect(("127.0.0.1", port)).await.unwrap()) };
    let forwards = std::sync::Arc::new(super::sessions::Sessions::forwards());
    tokio::spawn(portforward::serve(conn, connect, forwards, "pod"));
    let port = port.to_string();
    let mut errors = Vec::new();
    for i in 0..=MAX_FORWARDS_PER_POD {
        let id = i.to_string();
        let pair = |kind| {
            [
                ("streamtype", kind),
                ("port", port.as_str()),
                ("requestid", id.as_str()),
            ]
        };
        errors.push(c.open(&pair("error")).await);
        c.open(&pair("data")).await;
    }
    // The one past the bound is told why on its error stream, and ends.
    let last = *errors.last().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !c.fin.get(&last).copied().unwrap_or(false) {
        let mut head = [0u8; HEADER_LEN];
        tokio::time::timeout_at(deadline, c.rd.read_exact(&mut head))
            .await
            .expect("the refusal of the forward past the bound")
            .unwrap();
        let mut body = vec![0u8; body_len(&head)];
        c.rd.read_exact(&mut body).await.unwrap();
        if let Frame::Data {
            stream_id,
            fin,
            data,
        } = c.decoder.decode(&head, Bytes::from(body)).unwrap()
        {
            c.data
                .entry(stream_id)
                .or_default()
                .extend_from_slice(&data);
            if fin {
                c.fin.insert(stream_id, true);
            }
        }
    }
    let message = c.text(last);
    assert!(message.contains("limit per target"), "{message}");
    // The others are still open.
    assert!(
        errors[..MAX_FORWARDS_PER_POD]
            .iter()
            .all(|e| !c.fin.contains_key(e))
    );
}
