//! The client-to-server half of an HTTP/2 connection, frame by frame: every
//! frame passes through untouched except header blocks (HEADERS + CONTINUATION),
//! which are decoded and, when their `:authority` is not one `h2` accepts,
//! re-encoded with one it does.
//!
//! Every block is decoded, to follow the client's HPACK dynamic table. Until a
//! connection's first rewrite its blocks pass through as they came, so `h2`'s
//! table follows the client's too (the kubelet and crictl never need a
//! rewrite). A rewritten block no longer adds what the client's did to `h2`'s
//! table, so from then on every block of the connection is re-encoded, with
//! literals without indexing: `h2` is never shown a reference to its table.

use bytes::{BufMut, BytesMut};
use tonic::codegen::http::uri::Authority;

use super::hpack::Decoder;

/// What the HTTP/2 client preface is (RFC 9113 §3.4); passed through as is.
const PREFACE_LEN: usize = 24;
/// Every frame starts with 9 octets: length (24 bits), type, flags, stream id.
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Stream dependency (4 octets) and weight (1) of a HEADERS frame with PRIORITY.
const PRIORITY_LEN: usize = 5;
/// The largest frame payload we write: the smallest SETTINGS_MAX_FRAME_SIZE a
/// peer may advertise, so `h2` accepts it whatever it was configured with.
const OUT_FRAME_PAYLOAD: usize = 16_384;
/// A compressed header block we buffer, and the decoded list it may expand to:
/// four times the 16 KiB header list hyper's server accepts, so whatever `h2`
/// would take passes, and a block that would make us hold more closes the
/// connection instead.
const MAX_HEADER_BLOCK_BYTES: usize = 64 << 10;
/// The HPACK dynamic table a client may use: the RFC 7541 default, which `h2`
/// advertises unless told otherwise (berthd does not tell it).
const MAX_DYNAMIC_TABLE_BYTES: usize = 4096;
/// What a request whose `:authority` is not a URI authority gets instead: what
/// the kubelet and crictl send on a unix socket.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// Why a connection's input could not be rewritten; the connection is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("HTTP/2 header block of {0} bytes is over the {MAX_HEADER_BLOCK_BYTES}-byte bound")]
    BlockTooLarge(usize),
    #[error(
        "HTTP/2 frame of type {frame_type:#x} on stream {stream} inside a header block of stream {open}"
    )]
    Interleaved {
        frame_type: u8,
        stream: u32,
        open: u32,
    },
    #[error("HTTP/2 CONTINUATION on stream {0} without an open header block")]
    StrayContinuation(u32),
    #[error("HTTP/2 HEADERS on stream {0}: padding or priority longer than the frame")]
    BadPadding(u32),
    #[error("HTTP/2 header block on stream {stream}: HPACK: {reason}")]
    Hpack { stream: u32, reason: String },
}

/// A header block whose CONTINUATION frames are still to come.
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
}

enum State {
    /// The next octets are a frame header.
    FrameHeader,
    /// This many payload octets of a frame we pass through are still to come.
    Passthrough(usize),
}

/// The rewriter of one connection's client-to-server octets.
pub struct Rewriter {
    preface_left: usize,
    state: State,
    open: Option<OpenBlock>,
    decoder: Decoder,
    /// Whether every block so far passed through as it came.
    pristine: bool,
    /// The open block's frames as they came, and its fragment alone.
    frames: Vec<u8>,
    fragment: Vec<u8>,
    /// The block re-encoded (kept to reuse its allocation).
    encoded: Vec<u8>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter {
            preface_left: PREFACE_LEN,
            state: State::FrameHeader,
            open: None,
            decoder: Decoder::new(MAX_DYNAMIC_TABLE_BYTES),
            pristine: true,
            frames: Vec::new(),
            fragment: Vec::new(),
            encoded: Vec::new(),
        }
    }
}

impl Rewriter {
    /// Moves what it can from `input` to `output`, rewritten; leaves in `input`
    /// the start of a frame it needs more octets of.
    pub fn feed(
        &mut self,
        input: &mut BytesMut,
        output: &mut BytesMut,
    ) -> Result<(), RewriteError> {
        loop {
            if self.preface_left > 0 {
                let n = self.preface_left.min(input.len());
                output.put(input.split_to(n));
                self.preface_left -= n;
                if self.preface_left > 0 {
                    return Ok(());
                }
            }
            match self.state {
                State::Passthrough(left) => {
                    let n = left.min(input.len());
                    output.put(input.split_to(n));
                    if n < left {
                        self.state = State::Passthrough(left - n);
                        return Ok(());
                    }
                    self.state = State::FrameHeader;
                }
                State::FrameHeader => {
                    if !self.next_frame(input, output)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Handles the frame at the start of `input`; false when more octets are needed.
    fn next_frame(
        &mut self,
        input: &mut BytesMut,
        output: &mut BytesMut,
    ) -> Result<bool, RewriteError> {
        if input.len() < FRAME_HEADER_LEN {
            return Ok(false);
        }
        let len =
            (usize::from(input[0]) << 16) | (usize::from(input[1]) << 8) | usize::from(input[2]);
        let frame_type = input[3];
        let flags = input[4];
        let stream = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
        if let Some(open) = &self.open
            && (frame_type != TYPE_CONTINUATION || stream != open.stream)
        {
            return Err(RewriteError::Interleaved {
                frame_type,
                stream,
                open: open.stream,
            });
        }
        if frame_type != TYPE_HEADERS && frame_type != TYPE_CONTINUATION {
            output.put(input.split_to(FRAME_HEADER_LEN));
            self.state = State::Passthrough(len);
            return Ok(true);
        }
        if len > MAX_HEADER_BLOCK_BYTES {
            return Err(RewriteError::BlockTooLarge(len));
        }
        if input.len() < FRAME_HEADER_LEN + len {
            input.reserve(FRAME_HEADER_LEN + len - input.len());
            return Ok(false);
        }
        let frame = input.split_to(FRAME_HEADER_LEN + len);
        let payload = &frame[FRAME_HEADER_LEN..];
        if frame_type == TYPE_HEADERS {
            self.frames.clear();
            self.fragment.clear();
            self.open = Some(open_block(stream, flags, payload, &mut self.fragment)?);
        } else {
            if self.open.is_none() {
                return Err(RewriteError::StrayContinuation(stream));
            }
            self.fragment.extend_from_slice(payload);
            if self.fragment.len() > MAX_HEADER_BLOCK_BYTES {
                return Err(RewriteError::BlockTooLarge(self.fragment.len()));
            }
        }
        self.frames.extend_from_slice(&frame);
        if flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.open.take()
        {
            self.rewrite(block, output)?;
        }
        Ok(true)
    }

    /// Decodes a whole header block; writes it out as it came or, when its
    /// authority needs replacing or an earlier block's did, re-encoded.
    fn rewrite(&mut self, block: OpenBlock, output: &mut BytesMut) -> Result<(), RewriteError> {
        let encoded = &mut self.encoded;
        encoded.clear();
        let mut decoded_bytes = 0usize;
        let mut replaced = false;
        let result = self.decoder.decode(&self.fragment, |name, value| {
            decoded_bytes += name.len() + value.len();
            if decoded_bytes > MAX_HEADER_BLOCK_BYTES {
                return;
            }
            let value = if name == b":authority" && !is_authority(value) {
                replaced = true;
                REPLACEMENT_AUTHORITY
            } else {
                value
            };
            encode_literal(name, value, encoded);
        });
        result.map_err(|e| RewriteError::Hpack {
            stream: block.stream,
            reason: e.to_string(),
        })?;
        if decoded_bytes > MAX_HEADER_BLOCK_BYTES {
            return Err(RewriteError::BlockTooLarge(decoded_bytes));
        }
        self.pristine &= !replaced;
        if self.pristine {
            output.extend_from_slice(&self.frames);
        } else {
            write_block(&block, &self.encoded, output);
        }
        Ok(())
    }
}

/// A block opened by a HEADERS frame; its fragment, without the frame's padding
/// and priority, goes to `fragment`.
fn open_block(
    stream: u32,
    flags: u8,
    payload: &[u8],
    fragment: &mut Vec<u8>,
) -> Result<OpenBlock, RewriteError> {
    let mut rest = payload;
    let mut pad = 0;
    if flags & FLAG_PADDED != 0 {
        let (&n, tail) = rest.split_first().ok_or(RewriteError::BadPadding(stream))?;
        pad = usize::from(n);
        rest = tail;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let (head, tail) = rest
            .split_first_chunk::<PRIORITY_LEN>()
            .ok_or(RewriteError::BadPadding(stream))?;
        priority = Some(*head);
        rest = tail;
    }
    let end = rest
        .len()
        .checked_sub(pad)
        .ok_or(RewriteError::BadPadding(stream))?;
    fragment.extend_from_slice(&rest[..end]);
    Ok(OpenBlock {
        stream,
        end_stream: flags & FLAG_END_STREAM != 0,
        priority,
    })
}

/// What `h2` itself accepts as an `:authority`.
fn is_authority(value: &[u8]) -> bool {
    Authority::try_from(value).is_ok()
}

/// A literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2).
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    for s in [name, value] {
        encode_integer(s.len(), 7, out);
        out.extend_from_slice(s);
    }
}

/// An integer with an `n`-bit prefix, the prefix's other bits zero (RFC 7541 §5.1).
fn encode_integer(mut value: usize, n: u32, out: &mut Vec<u8>) {
    let max_prefix = (1usize << n) - 1;
    if value < max_prefix {
        out.push(value as u8);
        return;
    }
    out.push(max_prefix as u8);
    value -= max_prefix;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// One HEADERS frame and as many CONTINUATION frames as the block needs.
fn write_block(block: &OpenBlock, encoded: &[u8], output: &mut BytesMut) {
    let mut first_flags = 0;
    let mut prefix: &[u8] = &[];
    if block.end_stream {
        first_flags |= FLAG_END_STREAM;
    }
    if let Some(priority) = &block.priority {
        first_flags |= FLAG_PRIORITY;
        prefix = priority;
    }
    let room = OUT_FRAME_PAYLOAD - prefix.len();
    let (first, mut rest) = encoded.split_at(encoded.len().min(room));
    let mut frame_type = TYPE_HEADERS;
    let mut flags = first_flags;
    let mut chunk = first;
    loop {
        let last = rest.is_empty();
        if last {
            flags |= FLAG_END_HEADERS;
        }
        let len = prefix.len() + chunk.len();
        output.reserve(FRAME_HEADER_LEN + len);
        output.put_uint(len as u64, 3);
        output.put_u8(frame_type);
        output.put_u8(flags);
        output.put_u32(block.stream);
        output.put_slice(prefix);
        output.put_slice(chunk);
        if last {
            return;
        }
        let n = rest.len().min(OUT_FRAME_PAYLOAD);
        (chunk, rest) = rest.split_at(n);
        prefix = &[];
        frame_type = TYPE_CONTINUATION;
        flags = 0;
    }
}

#[cfg(test)]
#[path = "frames_tests.rs"]
mod tests;
