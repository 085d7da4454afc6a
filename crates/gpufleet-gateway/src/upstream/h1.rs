//! [`H1Target`]: the request path's HTTP/1.1 client for a plain-`http://` backend — a LIFO pool
//! of keep-alive connections, each a `TcpStream` and its read buffer, driven by the request's own
//! task: no connection task, no channel, no header map. The request head is prepared once per
//! backend, endpoint and streaming flag; a request is one `writev` of head and body; the answer's
//! head is parsed by `httparse` (hyper's own parser) and its body framed by `Content-Length`,
//! chunked transfer coding, or the end of the connection.
//!
//! Why not hyper's client: the proxy's CPU per request is what sets its requests/s on a shared
//! box, and hyper's pooled client (connection task, dispatch channel, header maps on both sides)
//! cost several µs of the ~10 µs a proxied request may cost to keep up with nginx (profiles in
//! `docs/benchmarks.md`). HTTPS backends still use hyper-util through rustls (`super`).
//!
//! Connection reuse: a connection goes back to the pool only when its answer was read to the end
//! with nothing left over and neither side asked to close. A pooled connection idle for more than
//! [`CHECK_IDLE_AFTER`] is checked for a close by the backend before use (one non-blocking read);
//! a request on a reused connection that fails before any byte of the answer is sent again once
//! on a new connection (the backend closed it between the check and the write). Dropping a body
//! before its end drops its connection, which closes it: the backend sees the client gone.
//! Connections idle for [`IDLE_TIMEOUT`] are closed by [`H1Target::reap`] (the probe calls it).

mod body;

#[cfg(test)]
use body::step_chunked;
pub(crate) use body::H1Body;
use body::Framing;
use bytes::{Buf, Bytes, BytesMut};
use gpufleet_runtime::coarse;
use hyper::http::{HeaderValue, StatusCode};
use parking_lot::Mutex;
use std::io;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long an idle connection is kept.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A pooled connection idle longer than this is checked before use.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);
/// The end of a head (built once: building a searcher costs more than a search).
static HEAD_END: LazyLock<memchr::memmem::Finder<'static>> = LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
/// Largest answer head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in an answer.
const MAX_HEADERS: usize = 64;
/// Read buffer growth step.
const READ_CHUNK: usize = 8 * 1024;
/// Bodies up to this size are copied after the head into one write.
const COPY_BODY_UP_TO: usize = 16 * 1024;

/// A failure of one request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    /// No connection could be made (refused, unreachable, timed out, name not resolved).
    #[error("connect: {0}")]
    Connect(io::Error),
    /// The connection failed while sending or reading.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The backend's answer is not valid HTTP/1.1.
    #[error("invalid answer: {0}")]
    Protocol(&'static str),
    /// The backend closed the connection before the answer was complete.
    #[error("connection closed before the answer was complete")]
    Closed,
}

/// One keep-alive connection and what was read from it past the last answer.
#[derive(Debug)]
struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// The request being written (kept: no allocation per request).
    wbuf: Vec<u8>,
    /// When it was last put back, on the coarse monotonic clock (ms).
    idle_since: u64,
}

/// A plain-HTTP backend: where to connect, the prepared request heads, the idle pool.
pub(crate) struct H1Target {
    connect_to: String,
    connect_timeout: Duration,
    /// Request heads up to the `Content-Length` value, per endpoint and streaming flag
    /// (`[endpoint][stream as usize]`).
    heads: [[Bytes; 2]; 3],
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

impl std::fmt::Debug for H1Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Target").field("idle", &self.idle.lock().len()).finish_non_exhaustive()
    }
}

/// An answer whose head was read.
#[derive(Debug)]
pub(crate) struct H1Response {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<HeaderValue>,
    pub(crate) body: H1Body,
}


impl H1Target {
    /// A target reached at `connect_to` (`host:port`), named `authority` in `Host`, with base
    /// path `base` (no trailing slash) and an optional `Authorization` value.
    pub(crate) fn new(
        connect_to: &str,
        authority: &str,
        base: &str,
        auth: Option<&HeaderValue>,
        connect_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        let head = |path: &str, stream: bool| {
            let mut h = Vec::with_capacity(160);
            h.extend_from_slice(b"POST ");
            h.extend_from_slice(base.as_bytes());
            h.extend_from_slice(path.as_bytes());
            h.extend_from_slice(b" HTTP/1.1\r\nhost: ");
            h.extend_from_slice(authority.as_bytes());
            h.extend_from_slice(b"\r\ncontent-type: application/json\r\n");
            if let Some(a) = auth {
                h.extend_from_slice(b"authorization: ");
                h.extend_from_slice(a.as_bytes());
                h.extend_from_slice(b"\r\n");
            }
            if stream {
                h.extend_from_slice(b"accept: text/event-stream\r\n");
            }
            h.extend_from_slice(b"content-length: ");
            Bytes::from(h)
        };
        let pair = |path: &str| [head(path, false), head(path, true)];
        Self {
            connect_to: connect_to.to_owned(),
            connect_timeout,
            heads: [
                pair("/v1/chat/completions"),
                pair("/v1/completions"),
                pair("/v1/embeddings"),
            ],
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// Sends `POST` of `body` to endpoint number `endpoint` (chat, completions, embeddings) and
    /// reads the answer's head.
    pub(crate) async fn post(
        self: &Arc<Self>,
        endpoint: usize,
        body: &Bytes,
        stream: bool,
    ) -> Result<H1Response, H1Error> {
        let head = &self.heads[endpoint][usize::from(stream)];
        if let Some(conn) = self.checkout() {
            match self.exchange(conn, head, body).await {
                Ok(r) => return Ok(r),
                // Closed by the backend while pooled: nothing of the answer came, send again.
                Err((H1Error::Closed | H1Error::Io(_), false)) => {}
                Err((e, _)) => return Err(e),
            }
        }
        let conn = self.connect().await?;
        self.exchange(conn, head, body).await.map_err(|(e, _)| e)
    }

    /// One request on `conn`; the error says whether any byte of the answer arrived.
    async fn exchange(
        self: &Arc<Self>,
        mut conn: Conn,
        head: &Bytes,
        body: &Bytes,
    ) -> Result<H1Response, (H1Error, bool)> {
        let req = &mut conn.wbuf;
        req.clear();
        req.extend_from_slice(head);
        req.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        req.extend_from_slice(b"\r\n\r\n");
        let written = if body.len() <= COPY_BODY_UP_TO {
            req.extend_from_slice(body);
            conn.io.write_all(req).await
        } else {
            conn.io.write_all_buf(&mut Buf::chain(&req[..], &body[..])).await
        };
        written.map_err(|e| (H1Error::Io(e), false))?;
        conn.buf.clear();
        read_head(conn, self.clone()).await
    }

    /// The most recently used idle connection still open, if any.
    fn checkout(&self) -> Option<Conn> {
        loop {
            let conn = self.idle.lock().pop()?;
            if idle_ms(&conn) < CHECK_IDLE_AFTER.as_millis() as u64 || still_open(&conn.io) {
                return Some(conn);
            }
        }
    }

    async fn connect(&self) -> Result<Conn, H1Error> {
        let io = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.connect_to))
            .await
            .map_err(|_| H1Error::Connect(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))?
            .map_err(H1Error::Connect)?;
        io.set_nodelay(true).map_err(H1Error::Connect)?;
        Ok(Conn { io, buf: BytesMut::with_capacity(READ_CHUNK), wbuf: Vec::new(), idle_since: coarse::mono_ms() })
    }

    fn checkin(&self, mut conn: Conn) {
        conn.idle_since = coarse::mono_ms();
        let mut idle = self.idle.lock();
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// Closes connections idle for longer than [`IDLE_TIMEOUT`]; returns how many are left.
    pub(crate) fn reap(&self) -> usize {
        let mut idle = self.idle.lock();
        idle.retain(|c| idle_ms(c) < IDLE_TIMEOUT.as_millis() as u64);
        idle.len()
    }
}

/// How long `conn` has been idle, ms, on the coarse clock (these limits are seconds; the
/// precise clock would cost two reads per request).
fn idle_ms(conn: &Conn) -> u64 {
    coarse::mono_ms().saturating_sub(conn.idle_since)
}

/// Whether an idle connection is still open: a read finds nothing to read (no end of stream, no
/// stray bytes).
fn still_open(io: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Reads and parses the answer's head (skipping `1xx` interim answers).
async fn read_head(mut conn: Conn, target: Arc<H1Target>) -> Result<H1Response, (H1Error, bool)> {
    let mut scanned: usize = 0;
    loop {
        if let Some(at) = HEAD_END.find(&conn.buf[scanned.saturating_sub(3)..]) {
            let end = scanned.saturating_sub(3) + at + 4;
            let head = parse_head(&conn.buf[..end]).map_err(|e| (e, true))?;
            conn.buf.advance(end);
            if head.status.is_informational() {
                scanned = 0;
                continue;
            }
            let framing = if head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED {
                Framing::Done
            } else if head.chunked {
                Framing::ChunkSize
            } else {
                head.length.map_or(Framing::Close, Framing::Length)
            };
            let mut body = H1Body { conn: Some(conn), framing, keep_alive: head.keep_alive && framing != Framing::Close, target };
            if framing == Framing::Done || framing == Framing::Length(0) {
                body.finish();
            }
            return Ok(H1Response { status: head.status, content_type: head.content_type, body });
        }
        if conn.buf.len() > MAX_HEAD {
            return Err((H1Error::Protocol("answer head too large"), true));
        }
        scanned = conn.buf.len();
        conn.buf.reserve(READ_CHUNK);
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) => return Err((H1Error::Closed, scanned > 0)),
            Ok(_) => {}
            Err(e) => return Err((H1Error::Io(e), scanned > 0)),
        }
    }
}

struct Head {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
}

fn parse_head(bytes: &[u8]) -> Result<Head, H1Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(H1Error::Protocol("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(H1Error::Protocol("too many headers")),
        Err(_) => return Err(H1Error::Protocol("malformed head")),
    }
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(H1Error::Protocol("bad status code"))?;
    let mut head = Head {
        status,
        content_type: None,
        length: None,
        chunked: false,
        // HTTP/1.1 keeps the connection unless told; HTTP/1.0 only when told.
        keep_alive: resp.version == Some(1),
    };
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        // By length first: most headers are compared with nothing.
        match name.len() {
            14 if is(b"content-length") => {
                let n = decimal(h.value).ok_or(H1Error::Protocol("bad content-length"))?;
                if head.length.is_some_and(|l| l != n) {
                    return Err(H1Error::Protocol("conflicting content-length"));
                }
                head.length = Some(n);
            }
            17 if is(b"transfer-encoding") => {
                // Chunked must be the last coding; anything else is delimited by the close.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                head.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
                if !head.chunked {
                    head.keep_alive = false;
                }
            }
            10 if is(b"connection") => {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        head.keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && resp.version == Some(0) {
                        head.keep_alive = true;
                    }
                }
            }
            12 if is(b"content-type") => {
                // The usual value without copying it.
                head.content_type = if h.value == b"application/json" {
                    Some(HeaderValue::from_static("application/json"))
                } else {
                    HeaderValue::from_bytes(h.value).ok()
                };
            }
            _ => {}
        }
    }
    if head.chunked && head.length.take().is_some() {
        // RFC 9112 6.3: the transfer coding wins, and the connection is not reused after it.
        head.keep_alive = false;
    }
    Ok(head)
}


/// A `Content-Length` value: ASCII digits only (no sign, no spaces inside), at most 19 of them.
pub(crate) fn decimal(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
}

#[cfg(test)]
mod tests;
