//! A server-side SPDY/3.1 connection on an upgraded HTTP connection: a reader task
//! that decodes the client's frames and routes them to streams, and a writer task
//! that owns the socket's write half and the compression context.
//!
//! Only the client opens streams (as every Kubernetes streaming client does); the
//! server answers each SYN_STREAM with a SYN_REPLY once it knows what the stream
//! is for. There is no flow control: spdystream neither sends nor honours
//! WINDOW_UPDATE. Back-pressure comes from bounded channels instead: a stream
//! whose consumer is slow stops the reader, and so the client's socket, as
//! spdystream's own frame workers do.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::frame::{
    Decoder, Encoder, Frame, HEADER_LEN, Headers, RST_PROTOCOL_ERROR, RST_REFUSED_STREAM, body_len,
};

/// Data frames buffered per stream before the reader waits for its consumer.
const STREAM_BUFFER: usize = 16;
/// Frames queued for the writer.
const OUT_BUFFER: usize = 64;
/// Streams announced but not yet accepted.
const ACCEPT_BUFFER: usize = 16;
/// spdystream reads 32 KiB at a time; larger data frames gain nothing.
const MAX_DATA_FRAME: usize = 32 * 1024;
/// The writer coalesces queued frames up to this many bytes per write.
const WRITE_BATCH: usize = 64 * 1024;

/// One SPDY connection. Dropping it without [`Connection::close`] aborts both tasks.
pub struct Connection {
    incoming: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Frame>,
    tasks: Tasks,
}

struct Tasks {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// A stream the client opened: its headers, the data it sends, and a way to answer.
pub struct Stream {
    pub headers: Headers,
    /// The client's data; ends at its FIN, at a reset, or when the connection goes.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

/// The server's half of a stream. Cheap to clone.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Frame>,
    /// Becomes true, or loses its sender, when the client resets the stream or the
    /// connection ends.
    reset: watch::Receiver<bool>,
}

impl Connection {
    pub fn new<IO>(io: IO) -> Connection
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(OUT_BUFFER);
        let (incoming_tx, incoming) = mpsc::channel(ACCEPT_BUFFER);
        let reader = tokio::spawn(read_loop(BufReader::new(rd), out.downgrade(), incoming_tx));
        let writer = tokio::spawn(async move {
            if let Err(e) = write_loop(wr, out_rx).await {
                tracing::debug!(error = %e, "SPDY connection: writing failed");
            }
        });
        Connection {
            incoming,
            out,
            tasks: Tasks { reader, writer },
        }
    }

    /// The next stream the client opens; `None` once it can open no more.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Refuses the streams the client opens from now on (RST_STREAM).
    pub fn stop_accepting(&mut self) {
        self.incoming.close();
    }

    /// Ends the connection once every stream writer is dropped: what is queued is
    /// written, the socket's write side is shut (so the client sees the end after
    /// the last frame), and the client gets `grace` to close its side before the
    /// socket is dropped. Closing at once could turn unread client data into a
    /// TCP reset that discards the last frames in flight.
    pub async fn close(self, grace: Duration) {
        let Connection {
            incoming,
            out,
            mut tasks,
        } = self;
        drop((incoming, out));
        if tokio::time::timeout(grace, &mut tasks.writer)
            .await
            .is_err()
        {
            tracing::debug!("SPDY connection: streams still open at close");
        }
        let _ = tokio::time::timeout(grace, &mut tasks.reader).await;
    }
}

impl StreamWriter {
    async fn send(&self, frame: Frame) -> io::Result<()> {
        self.out
            .send(frame)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "SPDY connection closed"))
    }

    /// Accepts the stream (SYN_REPLY); data may follow.
    pub async fn reply(&self) -> io::Result<()> {
        self.send(Frame::SynReply {
            stream_id: self.id,
            fin: false,
            headers: Headers::default(),
        })
        .await
    }

    pub async fn write(&self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA_FRAME));
            self.send(Frame::Data {
                stream_id: self.id,
                fin: false,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes the stream: the client reads end-of-file after what was written.
    pub async fn close(&self) -> io::Result<()> {
        self.send(Frame::Data {
            stream_id: self.id,
            fin: true,
            data: Bytes::new(),
        })
        .await
    }

    /// Abandons the stream (RST_STREAM).
    pub async fn reset(&self, status: u32) -> io::Result<()> {
        self.send(Frame::RstStream {
            stream_id: self.id,
            status,
        })
        .await
    }

    /// Resolves when the client resets the stream or the connection ends.
    pub async fn reset_by_peer(&self) {
        let mut reset = self.reset.clone();
        let _ = reset.wait_for(|r| *r).await;
    }
}

/// What the reader keeps per open stream.
struct Entry {
    /// `None` after the client's FIN, or once nobody reads the data.
    data: Option<mpsc::Sender<Bytes>>,
    reset: watch::Sender<bool>,
}

impl Entry {
    /// Nobody on our side holds the stream any more and the client cannot send.
    fn finished(&self) -> bool {
        self.reset.is_closed() && self.data.as_ref().is_none_or(|d| d.is_closed())
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    out: mpsc::WeakSender<Frame>,
    incoming: mpsc::Sender<Stream>,
) {
    let mut decoder = Decoder::default();
    let mut streams: HashMap<u32, Entry> = HashMap::new();
    let mut incoming = Some(incoming);
    let mut last_id = 0u32;
    let send = |frame: Frame| {
        let out = out.clone();
        async move {
            if let Some(out) = out.upgrade() {
                let _ = out.send(frame).await;
            }
        }
    };
    loop {
        let frame = match read_frame(&mut rd, &mut decoder).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "SPDY connection: reading failed");
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                fin,
                headers,
                ..
            } => {
                // Client streams are odd and increasing (SPDY/3 2.3.2).
                if stream_id % 2 == 0 || stream_id <= last_id {
                    send(Frame::RstStream {
                        stream_id,
                        status: RST_PROTOCOL_ERROR,
                    })
                    .await;
                    continue;
                }
                last_id = stream_id;
                let (Some(accept), Some(strong)) = (&incoming, out.upgrade()) else {
                    send(Frame::RstStream {
                        stream_id,
                        status: RST_REFUSED_STREAM,
                    })
                    .await;
                    continue;
                };
                streams.retain(|_, e| !e.finished());
                let (data_tx, data) = mpsc::channel(STREAM_BUFFER);
                let (reset_tx, reset) = watch::channel(false);
                streams.insert(
                    stream_id,
                    Entry {
                        data: (!fin).then_some(data_tx),
                        reset: reset_tx,
                    },
                );
                let stream = Stream {
                    headers,
                    data,
                    writer: StreamWriter {
                        id: stream_id,
                        out: strong,
                        reset,
                    },
                };
                if accept.send(stream).await.is_err() {
                    incoming = None;
                    streams.remove(&stream_id);
                    send(Frame::RstStream {
                        stream_id,
                        status: RST_REFUSED_STREAM,
                    })
                    .await;
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let Some(entry) = streams.get_mut(&stream_id) else {
                    continue;
                };
                if let Some(tx) = &entry.data
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    // Nobody reads this stream: drop what else comes.
                    entry.data = None;
                }
                if fin {
                    entry.data = None;
                }
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(entry) = streams.remove(&stream_id) {
                    let _ = entry.reset.send(true);
                }
            }
            // Odd ids are the client's pings, to be echoed; berth sends none.
            Frame::Ping { id } if id % 2 == 1 => send(Frame::Ping { id }).await,
            // The client opens no more streams; those open go on until it closes.
            Frame::GoAway { .. } => incoming = None,
            Frame::Ping { .. }
            | Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }
    // Dropping the entries ends every stream's data and signals its reset.
}

async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    decoder: &mut Decoder,
) -> io::Result<Option<Frame>> {
    let mut head = [0u8; HEADER_LEN];
    match rd.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; body_len(&head)];
    rd.read_exact(&mut body).await?;
    decoder
        .decode(&head, Bytes::from(body))
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut frames: mpsc::Receiver<Frame>,
) -> io::Result<()> {
    let mut encoder = Encoder::default();
    let mut buf = Vec::with_capacity(WRITE_BATCH);
    let encode = |encoder: &mut Encoder, frame: &Frame, buf: &mut Vec<u8>| {
        encoder
            .encode(frame, buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    };
    while let Some(frame) = frames.recv().await {
        buf.clear();
        encode(&mut encoder, &frame, &mut buf)?;
        while buf.len() < WRITE_BATCH {
            match frames.try_recv() {
                Ok(frame) => encode(&mut encoder, &frame, &mut buf)?,
                Err(_) => break,
            }
        }
        wr.write_all(&buf).await?;
        wr.flush().await?;
    }
    wr.shutdown().await
}
