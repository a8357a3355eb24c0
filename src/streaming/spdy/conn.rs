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
//!
//! What a client can make the reader hold is bounded whatever it sends: control
//! frames by [`MAX_CONTROL_FRAME`](super::MAX_CONTROL_FRAME) and their header
//! blocks by [`MAX_HEADER_BLOCK`](super::MAX_HEADER_BLOCK); data frames of any
//! length are read in pieces of [`DATA_PIECE`], and what sits queued on all of a
//! connection's streams together by [`INBOUND_BUDGET`]; open streams by
//! [`MAX_STREAMS`]. Past a budget the reader waits; a frame over a bound ends
//! the connection.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::frame::{
    Decoder, Encoder, Frame, HEADER_LEN, Headers, RST_PROTOCOL_ERROR, RST_REFUSED_STREAM, body_len,
    check_control_len, is_data,
};

/// Data pieces buffered per stream before the reader waits for its consumer.
const STREAM_BUFFER: usize = 16;
/// Frames queued for the writer: with data frames of [`MAX_DATA_FRAME`], 512 KiB
/// a client that does not read can leave in berthd per connection.
const OUT_BUFFER: usize = 16;
/// Data frames are read and queued in pieces of at most this, whatever length
/// they announce (up to 16 MiB): what client-go writes at once.
pub const DATA_PIECE: usize = 32 * 1024;
/// Client data read but not yet taken by the streams' consumers, all of a
/// connection's streams together. Bounds what streams nobody reads (unpaired
/// port-forward streams, a stdin the process ignores) hold; one stream's full
/// buffer, so a consumer that keeps up never comes near it.
pub const INBOUND_BUDGET: usize = STREAM_BUFFER * DATA_PIECE;
/// Streams open at once on one connection: an exec takes five, a port forward
/// two per forwarded connection, so 128 connections forwarded at once; past
/// it a new stream is refused (RST_STREAM), as HTTP/2 does past its
/// SETTINGS_MAX_CONCURRENT_STREAMS.
pub const MAX_STREAMS: usize = 256;
/// Streams announced but not yet accepted.
const ACCEPT_BUFFER: usize = 16;
/// spdystream reads 32 KiB at a time; larger data frames gain nothing.
const MAX_DATA_FRAME: usize = DATA_PIECE;
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
    /// The client's data, in pieces of at most [`DATA_PIECE`] that hold their
    /// share of the connection's [`INBOUND_BUDGET`] until dropped; ends at its
    /// FIN, at a reset, or when the connection goes.
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
    let budget = Arc::new(Semaphore::new(INBOUND_BUDGET));
    let send = |frame: Frame| {
        let out = out.clone();
        async move {
            if let Some(out) = out.upgrade() {
                let _ = out.send(frame).await;
            }
        }
    };
    loop {
        let frame = match read_frame(&mut rd, &mut decoder, &mut streams, &budget).await {
            Ok(Some(Some(frame))) => frame,
            // A data frame, delivered as it was read.
            Ok(Some(None)) => continue,
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
                streams.retain(|_, e| !e.finished());
                let (Some(accept), Some(strong), true) =
                    (&incoming, out.upgrade(), streams.len() < MAX_STREAMS)
                else {
                    send(Frame::RstStream {
                        stream_id,
                        status: RST_REFUSED_STREAM,
                    })
                    .await;
                    continue;
                };
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
            Frame::RstStream { stream_id, .. } => {
                if let Some(entry) = streams.remove(&stream_id) {
                    let _ = entry.reset.send(true);
                }
            }
            // Odd ids are the client's pings, to be echoed; berth sends none.
            Frame::Ping { id } if id % 2 == 1 => send(Frame::Ping { id }).await,
            // The client opens no more streams; those open go on until it closes.
            Frame::GoAway { .. } => incoming = None,
            Frame::Data { .. }
            | Frame::Ping { .. }
            | Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }
    // Dropping the entries ends every stream's data and signals its reset.
}

/// Reads one frame: a control frame is returned, a data frame is delivered to
/// its stream as it is read (`Some(None)`); `None` at the end of the connection.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    decoder: &mut Decoder,
    streams: &mut HashMap<u32, Entry>,
    budget: &Arc<Semaphore>,
) -> io::Result<Option<Option<Frame>>> {
    let mut head = [0u8; HEADER_LEN];
    match rd.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
    if is_data(&head) {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let fin = head[4] & 0x01 != 0;
        let entry = streams.get_mut(&stream_id);
        receive_data(rd, entry, body_len(&head), fin, budget).await?;
        return Ok(Some(None));
    }
    check_control_len(&head).map_err(invalid)?;
    let mut body = vec![0u8; body_len(&head)];
    rd.read_exact(&mut body).await?;
    decoder
        .decode(&head, Bytes::from(body))
        .map(|frame| Some(Some(frame)))
        .map_err(invalid)
}

/// A piece of client data holding its share of the connection's
/// [`INBOUND_BUDGET`] until its consumer drops it.
struct Budgeted {
    data: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// Reads `len` bytes of a data frame and queues them on the stream in pieces of
/// at most [`DATA_PIECE`], each taken from `budget` before it is read; data for
/// a stream that is gone, finished or unread is read and dropped.
async fn receive_data<R: AsyncRead + Unpin>(
    rd: &mut R,
    mut entry: Option<&mut Entry>,
    mut len: usize,
    fin: bool,
    budget: &Arc<Semaphore>,
) -> io::Result<()> {
    while len > 0 {
        let n = len.min(DATA_PIECE);
        len -= n;
        let Some(tx) = entry.as_ref().and_then(|e| e.data.as_ref()) else {
            tokio::io::copy(&mut (&mut *rd).take(n as u64), &mut tokio::io::sink()).await?;
            continue;
        };
        let permit = budget
            .clone()
            .acquire_many_owned(n as u32)
            .await
            .map_err(|_| io::Error::other("SPDY connection: inbound budget closed"))?;
        let mut data = vec![0u8; n];
        rd.read_exact(&mut data).await?;
        let piece = Bytes::from_owner(Budgeted {
            data,
            _permit: permit,
        });
        if tx.send(piece).await.is_err() {
            // Nobody reads this stream: drop what else comes.
            if let Some(entry) = entry.as_mut() {
                entry.data = None;
            }
        }
    }
    if fin && let Some(entry) = entry {
        entry.data = None;
    }
    Ok(())
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
