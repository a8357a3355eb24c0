//! Any gRPC client can call berthd, whatever `:authority` it sends.
//!
//! gRPC clients dialing a unix socket with their defaults send the socket path
//! as the HTTP/2 `:authority`: grpc-go and gRPC core (Python, C++) percent-encode
//! it (`%2Frun%2Fberth%2Fberth.sock`), grpc-java sends it raw. `h2` parses the
//! pseudo-header as a URI authority before tonic sees the request and resets the
//! stream with PROTOCOL_ERROR when it does not parse, and it has no option to
//! relax that. containerd and CRI-O (grpc-go servers) ignore the authority on
//! their sockets, so these clients work there.
//!
//! [`AnyAuthority`] wraps each accepted connection and rewrites, on its way in,
//! an `:authority` that is not a URI authority to `localhost` (what the kubelet
//! sends); nothing else in the request changes, and berthd routes on the path
//! alone. See [`frames`] for how header blocks are rewritten.

mod frames;
mod hpack;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

pub use frames::{REPLACEMENT_AUTHORITY, RewriteError, Rewriter};

/// Octets read from the socket at once: a few frames, the size of h2's own reads.
const READ_CHUNK: usize = 16 << 10;

/// A server-side connection whose incoming header blocks carry an `:authority`
/// `h2` accepts. Writes go through untouched.
pub struct AnyAuthority<S> {
    inner: S,
    rewriter: Rewriter,
    /// Octets read but not yet rewritten (at most the start of one frame).
    raw: BytesMut,
    /// Octets rewritten and not yet handed to the reader.
    ready: BytesMut,
    scratch: Box<[u8]>,
    eof: bool,
}

impl<S> AnyAuthority<S> {
    pub fn new(inner: S) -> Self {
        AnyAuthority {
            inner,
            rewriter: Rewriter::default(),
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AnyAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // A frame cut short by the peer is dropped: h2 sees the end.
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
                continue;
            }
            this.raw.extend_from_slice(read.filled());
            this.rewriter
                .feed(&mut this.raw, &mut this.ready)
                .map_err(|e| {
                    tracing::debug!(error = %e, "closing a connection whose headers cannot be rewritten");
                    io::Error::new(io::ErrorKind::InvalidData, e)
                })?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AnyAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AnyAuthority<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
