//! A total deadline for reading request headers.
//!
//! Pingora reads request headers with a timeout per read only, so a client that sends one byte
//! every few seconds can hold a connection open indefinitely (slowloris). [`Guarded`] wraps each
//! accepted connection in [`HeaderDeadline`], which starts a clock at the first byte of a
//! request and fails the read with `TimedOut` (the connection is closed) unless the end of the
//! header (an empty line) arrives within [`HEADER_DEADLINE`]. The clock stops at the end of the
//! header, so bodies and responses are not limited, and restarts with the next request after
//! the edge begins a response; the idle time between keep-alive requests stays governed by
//! Pingora's keep-alive timeout.
//!
//! The same wrapper refuses illegal request lines. Pingora rewrites a request line that does not
//! parse (a space, tab or other control byte inside the target: `GET /a b HTTP/1.1`) by
//! percent-escaping the target and forwards it (`/a%20b`), so the request reaches the app as
//! something the client did not send. [`Clock`] watches each request line as it is read and turns
//! the first byte that makes it illegal (a third space, a control byte) into a line feed, which
//! neither Pingora's parser nor its escaping fallback accepts: Pingora answers 400 and closes.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest time from the first byte of a request to the end of its headers.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: no clock.
    Idle,
    /// Inside a request header: the clock runs.
    Header,
    /// After the header (body, response): no clock.
    Body,
}

/// A connection whose request headers must arrive within a deadline.
pub struct HeaderDeadline {
    inner: Stream,
    clock: Clock,
}

impl HeaderDeadline {
    /// Wrap `inner` with a header deadline of `limit`.
    pub fn new(inner: Stream, limit: Duration) -> HeaderDeadline {
        HeaderDeadline {
            inner,
            clock: Clock::new(limit),
        }
    }
}

/// Where a connection is in the request cycle, from the bytes read and written.
struct Clock {
    limit: Duration,
    phase: Phase,
    /// Polled only in [`Phase::Header`]. One timer per connection, reset for each request:
    /// resetting a registered timer to a later deadline does not touch the timer wheel, where
    /// creating and dropping one per request did.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// True right after a line feed: a second one ends the header (CR is ignored).
    at_line_start: bool,
    /// Where the reader is in the request line, while it is being read.
    line: RequestLine,
}

/// Progress through a request line (`METHOD SP TARGET SP VERSION CRLF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestLine {
    /// Before its first byte (empty lines before a request are allowed).
    Before,
    /// Inside it, after this many spaces, right after a CR or not.
    Inside { spaces: u8, cr: bool },
    /// Read (or spoiled): the rest of the header is Pingora's to check.
    Done,
}

impl Clock {
    fn new(limit: Duration) -> Clock {
        Clock {
            limit,
            phase: Phase::Idle,
            timer: None,
            at_line_start: false,
            line: RequestLine::Before,
        }
    }

    /// Account for `bytes` just read; may rewrite one byte of an illegal request line (see the
    /// module documentation).
    fn saw(&mut self, bytes: &mut [u8]) {
        if self.phase == Phase::Idle {
            self.phase = Phase::Header;
            self.at_line_start = false;
            self.line = RequestLine::Before;
            let deadline = tokio::time::Instant::now() + self.limit;
            match self.timer.as_mut() {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        if self.phase != Phase::Header {
            return;
        }
        self.check_request_line(bytes);
        for &b in bytes.iter() {
            match b {
                b'\n' if self.at_line_start => {
                    self.phase = Phase::Body;
                    return;
                }
                b'\n' => self.at_line_start = true,
                b'\r' => {}
                _ => self.at_line_start = false,
            }
        }
    }

    /// Follow the request line through `bytes`; spoil it at the first byte that makes it
    /// illegal: a third space (a space inside the target), or a control byte other than the
    /// CR LF that ends it.
    fn check_request_line(&mut self, bytes: &mut [u8]) {
        for b in bytes.iter_mut() {
            let (spaces, cr) = match self.line {
                RequestLine::Done => return,
                RequestLine::Before if matches!(*b, b'\r' | b'\n') => continue,
                RequestLine::Before => (0, false),
                RequestLine::Inside { spaces, cr } => (spaces, cr),
            };
            self.line = match *b {
                b'\n' => RequestLine::Done,
                _ if cr => RequestLine::Done,
                b'\r' => RequestLine::Inside { spaces, cr: true },
                b' ' if spaces < 2 => RequestLine::Inside {
                    spaces: spaces + 1,
                    cr: false,
                },
                b' ' | 0..=0x1f | 0x7f => RequestLine::Done,
                _ => RequestLine::Inside { spaces, cr: false },
            };
            if self.line == RequestLine::Done && *b != b'\n' {
                *b = b'\n';
                return;
            }
        }
    }

    fn wrote(&mut self, bytes: &[u8]) {
        // A final (non-1xx) status line starts a response: the next bytes read belong to the
        // next request.
        if bytes.starts_with(b"HTTP/1.") && bytes.get(9).is_some_and(|&c| c != b'1') {
            self.phase = Phase::Idle;
        }
    }
}

impl fmt::Debug for HeaderDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderDeadline")
            .field("inner", &self.inner)
            .field("phase", &self.clock.phase)
            .finish()
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let (Phase::Header, Some(timer)) = (this.clock.phase, this.clock.timer.as_mut()) {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request header deadline passed",
                )));
            }
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let fresh = &mut buf.filled_mut()[before..];
            if !fresh.is_empty() {
                this.clock.saw(fresh);
            }
        }
        result
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.clock.wrote(buf);
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.clock.wrote(first);
        }
        Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

/// The TLS state of the wrapped connection shows through: Pingora picks HTTP/2 by the ALPN
/// result, and the proxy reads the TLS digest (`x-forwarded-proto`).
impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// A server app whose connections get a [`HeaderDeadline`].
pub struct Guarded<A> {
    inner: Arc<A>,
    limit: Duration,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, limit: Duration) -> Guarded<A> {
        Guarded {
            inner: Arc::new(inner),
            limit,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    /// Runs for each accepted connection: wrap it once, then serve it with the inner app (which
    /// loops over keep-alive requests itself).
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // The deadline reads HTTP/1 header bytes; an HTTP/2 connection (TLS with ALPN `h2`)
        // frames its headers in binary and is left to Pingora's HTTP/2 limits.
        if stream.selected_alpn_proto() == Some(pingora::protocols::ALPN::H2) {
            return self.inner.process_new(stream, shutdown).await;
        }
        let guarded: Stream = Box::new(HeaderDeadline::new(stream, self.limit));
        self.inner.process_new(guarded, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tracks_header_boundaries() {
        let mut g = Clock::new(Duration::from_secs(1));
        g.saw(&mut b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec());
        assert_eq!(g.phase, Phase::Header);
        assert!(g.timer.is_some());
        g.saw(&mut b"\r".to_vec());
        g.saw(&mut b"\nbody\r\n\r\n".to_vec());
        assert_eq!(g.phase, Phase::Body);
        g.wrote(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(g.phase, Phase::Body);
        g.wrote(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(g.phase, Phase::Idle);
        g.saw(&mut b"GET / HTTP/1.1\n\n".to_vec());
        assert_eq!(g.phase, Phase::Body);
    }

    /// The request line as the guard passes it on, fed in pieces of `chunk` bytes.
    fn passed_on(line: &[u8], chunk: usize) -> Vec<u8> {
        let mut g = Clock::new(Duration::from_secs(1));
        let mut out = Vec::new();
        for piece in line.chunks(chunk) {
            let mut piece = piece.to_vec();
            g.saw(&mut piece);
            out.extend_from_slice(&piece);
        }
        out
    }

    #[tokio::test]
    async fn spoils_illegal_request_lines_only() {
        for chunk in [1, 3, 100] {
            for good in [
                &b"GET /a?b=c HTTP/1.1\r\nHost: a b\r\n\r\n"[..],
                b"\r\nGET / HTTP/1.1\r\nX: \t\r\n\r\n",
                b"GET / HTTP/1.1\n\n",
            ] {
                assert_eq!(passed_on(good, chunk), good, "{}", good.escape_ascii());
            }
            for (bad, spoiled) in [
                (
                    &b"GET /a b HTTP/1.1\r\n\r\n"[..],
                    &b"GET /a b\nHTTP/1.1\r\n\r\n"[..],
                ),
                (b"GET /a\tb HTTP/1.1\r\n\r\n", b"GET /a\nb HTTP/1.1\r\n\r\n"),
                (
                    b"GET /a\rb HTTP/1.1\r\n\r\n",
                    b"GET /a\r\n HTTP/1.1\r\n\r\n",
                ),
                (b"GET /\x00 HTTP/1.1\r\n\r\n", b"GET /\n HTTP/1.1\r\n\r\n"),
            ] {
                assert_eq!(passed_on(bad, chunk), spoiled, "{}", bad.escape_ascii());
            }
        }
    }
}
