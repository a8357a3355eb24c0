//! SPDY/3.1 frames, as moby/spdystream (the library behind the kubelet's and
//! kubectl's streaming clients) writes and reads them.
//!
//! Every frame starts with 8 bytes: a control bit, then either a version and a
//! type (control frames) or a stream id (data frames), then 8 bits of flags and a
//! 24-bit body length. Name/value header blocks inside SYN_STREAM, SYN_REPLY and
//! HEADERS are zlib-compressed with one compression context per direction for the
//! whole connection, primed with the SPDY/3 dictionary, so the [`Decoder`] must see
//! every frame of its direction in order, ignored ones included.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::dictionary;

pub const VERSION: u16 = 3;
pub const HEADER_LEN: usize = 8;
/// Lengths are 24 bits.
pub const MAX_BODY: usize = (1 << 24) - 1;
/// Largest control frame body read: the Kubernetes clients' SYN_STREAMs carry a
/// compressed header block of a few dozen bytes; a control frame is read whole
/// before it is decoded, so this bounds that buffer. (Data frames are read in
/// pieces, whatever their length.)
pub const MAX_CONTROL_FRAME: usize = 16 * 1024;
/// A header block inflates to at most this: `streamtype`, `port` and `requestid`
/// take under a hundred bytes, and zlib's 1:1032 ratio would otherwise turn one
/// control frame into 16 MiB.
pub const MAX_HEADER_BLOCK: usize = 16 * 1024;

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes berth sends.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("SPDY frame of type {kind} is malformed: {why}")]
    Malformed { kind: u16, why: &'static str },
    #[error("SPDY version {0} is not supported")]
    Version(u16),
    #[error("SPDY header block: {0}")]
    Compression(String),
    #[error(
        "SPDY control frame of type {kind} is {len} bytes long, over the limit of {MAX_CONTROL_FRAME}"
    )]
    TooLarge { kind: u16, len: usize },
}

/// A header block: lower-case names, values as sent (several values of one name
/// are joined by NUL bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
                .collect(),
        )
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or_default())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// Flow-control and other hints; spdystream sends none and berth heeds none.
    Settings {
        entries: Vec<(u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame type SPDY/3 does not define: skipped, as the spec says.
    Unknown {
        kind: u16,
    },
}

/// The body length announced by a frame header.
pub fn body_len(head: &[u8; HEADER_LEN]) -> usize {
    u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize
}

/// Whether a frame header starts a data frame (control bit clear).
pub fn is_data(head: &[u8; HEADER_LEN]) -> bool {
    head[0] & 0x80 == 0
}

/// Refuses a control frame whose body would be too large to read whole.
pub fn check_control_len(head: &[u8; HEADER_LEN]) -> Result<(), FrameError> {
    let len = body_len(head);
    if !is_data(head) && len > MAX_CONTROL_FRAME {
        let kind = u16::from_be_bytes([head[2], head[3]]);
        return Err(FrameError::TooLarge { kind, len });
    }
    Ok(())
}

/// Reads frames of one direction; owns that direction's inflate context.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            inflate: Decompress::new(true),
        }
    }
}

impl Decoder {
    /// Decodes the frame with header `head` and body `body` (`body_len(head)` bytes).
    pub fn decode(&mut self, head: &[u8; HEADER_LEN], body: Bytes) -> Result<Frame, FrameError> {
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        if first & 0x8000_0000 == 0 {
            return Ok(Frame::Data {
                stream_id: first,
                fin: flags & FLAG_FIN != 0,
                data: body,
            });
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        let kind = (first & 0xffff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let bad = |why| FrameError::Malformed { kind, why };
        let word = |at: usize| -> Result<u32, FrameError> {
            body.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(bad("too short"))
        };
        if body.len() > MAX_CONTROL_FRAME {
            return Err(FrameError::TooLarge {
                kind,
                len: body.len(),
            });
        }
        let fin = flags & FLAG_FIN != 0;
        Ok(match kind {
            SYN_STREAM => {
                if body.len() < 10 {
                    return Err(bad("too short"));
                }
                Frame::SynStream {
                    stream_id: word(0)? & 0x7fff_ffff,
                    associated_to: word(4)? & 0x7fff_ffff,
                    priority: body[8] >> 5,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.header_block(kind, &body[10..])?,
                }
            }
            SYN_REPLY => Frame::SynReply {
                stream_id: word(0)? & 0x7fff_ffff,
                fin,
                headers: self.header_block(kind, &body[4..])?,
            },
            HEADERS => Frame::Headers {
                stream_id: word(0)? & 0x7fff_ffff,
                fin,
                headers: self.header_block(kind, &body[4..])?,
            },
            RST_STREAM => Frame::RstStream {
                stream_id: word(0)? & 0x7fff_ffff,
                status: word(4)?,
            },
            SETTINGS => {
                let count = word(0)? as usize;
                if body.len() != 4 + count * 8 {
                    return Err(bad("entry count does not match the length"));
                }
                let entries = (0..count)
                    .map(|i| Ok((word(4 + i * 8)? & 0x00ff_ffff, word(8 + i * 8)?)))
                    .collect::<Result<_, FrameError>>()?;
                Frame::Settings { entries }
            }
            PING => Frame::Ping { id: word(0)? },
            GOAWAY => Frame::GoAway {
                last_good_stream_id: word(0)? & 0x7fff_ffff,
                status: word(4)?,
            },
            WINDOW_UPDATE => Frame::WindowUpdate {
                stream_id: word(0)? & 0x7fff_ffff,
                delta: word(4)? & 0x7fff_ffff,
            },
            other => Frame::Unknown { kind: other },
        })
    }

    fn header_block(&mut self, kind: u16, compressed: &[u8]) -> Result<Headers, FrameError> {
        let block = self.inflate(compressed)?;
        parse_header_block(&block).ok_or(FrameError::Malformed {
            kind,
            why: "bad header block",
        })
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let z = &mut self.inflate;
        let start = z.total_in();
        let mut out = Vec::with_capacity((input.len() * 4 + 64).min(MAX_HEADER_BLOCK));
        loop {
            let used = (z.total_in() - start) as usize;
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(FrameError::Compression(format!(
                        "header block inflates to over {MAX_HEADER_BLOCK} bytes"
                    )));
                }
                out.reserve_exact(out.capacity().min(MAX_HEADER_BLOCK - out.len()));
            }
            let out_before = out.len();
            match z.decompress_vec(&input[used..], &mut out, FlushDecompress::Sync) {
                Ok(Status::StreamEnd) => {
                    return Err(FrameError::Compression(
                        "the peer ended its zlib stream".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    z.set_dictionary(dictionary())
                        .map_err(|e| FrameError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(FrameError::Compression(e.to_string())),
            }
            let all_in = (z.total_in() - start) as usize == input.len();
            if all_in && out.len() < out.capacity() {
                return Ok(out);
            }
            if !all_in && out.len() == out_before && (z.total_in() - start) as usize == used {
                return Err(FrameError::Compression("no progress inflating".into()));
            }
        }
    }
}

/// Writes frames of one direction; owns that direction's deflate context.
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate
            .set_dictionary(dictionary())
            .expect("a fresh zlib stream takes a dictionary");
        Encoder { deflate }
    }
}

impl Encoder {
    /// Appends the encoding of `frame` to `out`. Data longer than [`MAX_BODY`]
    /// must be split by the caller.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                push_flags_len(out, flag(*fin, FLAG_FIN), data.len());
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                let block = self.deflate(&header_block(headers))?;
                let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
                control(out, SYN_STREAM, flags, 10 + block.len());
                out.extend_from_slice(&stream_id.to_be_bytes());
                out.extend_from_slice(&associated_to.to_be_bytes());
                out.extend_from_slice(&[priority << 5, 0]);
                out.extend_from_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let block = self.deflate(&header_block(headers))?;
                control(out, kind, flag(*fin, FLAG_FIN), 4 + block.len());
                out.extend_from_slice(&stream_id.to_be_bytes());
                out.extend_from_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                two_words(out, RST_STREAM, *stream_id, *status);
            }
            Frame::Settings { entries } => {
                control(out, SETTINGS, 0, 4 + entries.len() * 8);
                out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for (id, value) in entries {
                    out.extend_from_slice(&(id & 0x00ff_ffff).to_be_bytes());
                    out.extend_from_slice(&value.to_be_bytes());
                }
            }
            Frame::Ping { id } => {
                control(out, PING, 0, 4);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => two_words(out, GOAWAY, *last_good_stream_id, *status),
            Frame::WindowUpdate { stream_id, delta } => {
                two_words(out, WINDOW_UPDATE, *stream_id, *delta)
            }
            Frame::Unknown { kind } => control(out, *kind, 0, 0),
        }
        Ok(())
    }

    /// Compresses one header block and sync-flushes, so the peer can inflate it
    /// from this frame alone while the context carries on to the next.
    fn deflate(&mut self, input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let z = &mut self.deflate;
        let start = z.total_in();
        let mut out = Vec::with_capacity(input.len() + 64);
        loop {
            let used = (z.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            z.compress_vec(&input[used..], &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compression(e.to_string()))?;
            if (z.total_in() - start) as usize == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

fn push_flags_len(out: &mut Vec<u8>, flags: u8, len: usize) {
    debug_assert!(len <= MAX_BODY);
    out.extend_from_slice(&((u32::from(flags) << 24) | len as u32).to_be_bytes());
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, len: usize) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    push_flags_len(out, flags, len);
}

fn two_words(out: &mut Vec<u8>, kind: u16, a: u32, b: u32) {
    control(out, kind, 0, 8);
    out.extend_from_slice(&a.to_be_bytes());
    out.extend_from_slice(&b.to_be_bytes());
}

/// `count, (len, name, len, value)*`, every number 32 bits big-endian.
fn header_block(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&(headers.0.len() as u32).to_be_bytes());
    for (name, value) in &headers.0 {
        for part in [name.to_ascii_lowercase().as_bytes(), value.as_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

fn parse_header_block(mut block: &[u8]) -> Option<Headers> {
    fn take<'a>(block: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(block.get(..4)?.try_into().ok()?) as usize;
        let value = block.get(4..4 + len)?;
        *block = &block[4 + len..];
        Some(value)
    }
    let count = u32::from_be_bytes(block.get(..4)?.try_into().ok()?) as usize;
    block = &block[4..];
    // Each pair takes at least 8 bytes: a bogus count cannot make us allocate.
    let mut headers = Vec::with_capacity(count.min(block.len() / 8));
    for _ in 0..count {
        let name = String::from_utf8(take(&mut block)?.to_vec()).ok()?;
        let value = String::from_utf8_lossy(take(&mut block)?).into_owned();
        headers.push((name.to_ascii_lowercase(), value));
    }
    Some(Headers(headers))
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
