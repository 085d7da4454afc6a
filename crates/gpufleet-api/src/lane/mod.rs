//! The inference lane: plain-TCP connections are first served here, without hyper. A request
//! the lane serves (`head`: a well-formed HTTP/1.1 `POST` of `/v1/chat/completions`,
//! `/v1/completions` or `/v1/embeddings` with a `Content-Length` body within the gateway's limits)
//! runs the same guard as the fast path of [`crate::ApiService`] (request id, route guard from the
//! one table, rate limits, API key, permission, refusals audited, the caller's allowed models),
//! then [`Gateway::serve_reply`], and its [`Reply`] is written straight to the socket (`write`).
//! At the first request it does not serve, the connection and the bytes read from it go to hyper
//! ([`Handoff`]), which serves the connection from then on through the router, as before.
//!
//! Why: on a proxied completion hyper's server (connection task, header map, body channel,
//! response encoding) cost more CPU than everything the gateway decides; nginx's requests/s on
//! a shared 2-core box leave ~10 µs per request for the whole proxy (`docs/benchmarks.md`).
//!
//! Behaviour kept from hyper's server: keep-alive and pipelining, `Connection: close`, a 64 KiB
//! head limit (larger heads go to hyper, which answers 431), [`HEAD_TIMEOUT`] for a started head,
//! EOF from the client while its request runs drops the request (and so the upstream request;
//! hyper's default without half-close). Added: idle keep-alive connections close after
//! [`IDLE_TIMEOUT`] (nginx's `keepalive_timeout` default) and at shutdown.

mod head;
mod rewind;
mod threads;
mod write;

pub use rewind::Rewind;
pub use threads::{default_threads, LaneThreads, OnHandoff};

use crate::auth::{auth_error, secure};
use crate::fast::{Caller, Fast, FastGuard, FAST_ROUTES};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use gpufleet_auth::ProvenKey;
use gpufleet_gateway::{Reply, ReplyBody, RouteHints};
use gpufleet_runtime::Shutdown;
use head::{LaneHead, Parsed, Span};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The end of a head (built once: building a searcher costs more than a search).
static HEAD_END: LazyLock<memchr::memmem::Finder<'static>> = LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
/// Largest head the lane reads (as the listener's hyper limit).
pub const MAX_HEAD: usize = 64 * 1024;
/// How long a started head may take to arrive (all of it), and the longest pause inside a body.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a keep-alive connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// The lane's two timeouts (tests shorten them).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// [`HEAD_TIMEOUT`].
    pub(crate) head: Duration,
    /// [`IDLE_TIMEOUT`].
    pub(crate) idle: Duration,
}

/// The timeouts the server runs with.
pub(crate) const TIMEOUTS: Timeouts = Timeouts { head: HEAD_TIMEOUT, idle: IDLE_TIMEOUT };

/// A connection the lane gives to hyper, with the bytes it read and did not serve.
#[derive(Debug)]
pub struct Handoff {
    io: TcpStream,
    read: Bytes,
}

impl Handoff {
    /// A connection nothing was read from.
    pub(crate) fn new(io: TcpStream) -> Self {
        Self { io, read: Bytes::new() }
    }

    /// The connection, replaying what was read first.
    pub fn into_io(self) -> Rewind<TcpStream> {
        Rewind::new(self.read, self.io)
    }

    /// The connection taken off this runtime (non-blocking, for `TcpStream::from_std` on
    /// another), and the bytes read from it.
    pub fn into_std(self) -> std::io::Result<(std::net::TcpStream, Bytes)> {
        Ok((self.io.into_std()?, self.read))
    }
}

/// Why reading stopped.
enum Stop {
    /// Closed, timed out, shut down or broken: drop the connection.
    Close,
    /// Not the lane's request: give the connection to hyper.
    Handoff,
}

/// One connection on the lane.
struct Lane<'a> {
    fast: &'a Fast,
    io: TcpStream,
    peer: SocketAddr,
    /// Bytes read and not yet served.
    buf: BytesMut,
    /// The answer being written.
    out: Vec<u8>,
    /// The credential this connection proved last (its next requests skip the key's hash).
    proven: ProvenKey,
    /// Closes the connection when it idles for [`IDLE_TIMEOUT`].
    idle: Pin<Box<tokio::time::Sleep>>,
    /// When the connection came, on tokio's clock and on the coarse clock: now is the first
    /// plus how far the coarse clock moved (for the idle timer, read once per request).
    born: (tokio::time::Instant, u64),
    timeouts: Timeouts,
}

/// Serves `io` on the lane until it closes (`None`) or sends a request the lane leaves to hyper.
pub(crate) async fn serve(fast: &Fast, io: TcpStream, peer: SocketAddr, shutdown: &Shutdown, timeouts: Timeouts) -> Option<Handoff> {
    let mut stop = pin!(shutdown.wait());
    let mut lane = Lane { fast, io, peer, buf: BytesMut::with_capacity(8 * 1024), out: Vec::with_capacity(2 * 1024), proven: ProvenKey::default(), idle: Box::pin(tokio::time::sleep(timeouts.idle)), born: (tokio::time::Instant::now(), gpufleet_runtime::coarse::mono_ms()), timeouts };
    loop {
        match lane.next(stop.as_mut(), shutdown).await {
            Ok(true) => {}
            Ok(false) | Err(Stop::Close) => return None,
            Err(Stop::Handoff) => {
                fast.lane_handoffs.fetch_add(1, Ordering::Relaxed);
                return Some(Handoff { io: lane.io, read: lane.buf.freeze() });
            }
        }
    }
}

impl Lane<'_> {
    /// Now, to within a scheduler tick, without reading the precise clock.
    fn now(&self) -> tokio::time::Instant {
        self.born.0 + Duration::from_millis(gpufleet_runtime::coarse::mono_ms().saturating_sub(self.born.1))
    }

    /// Serves the next request; `Ok(false)`: the connection ends after it.
    async fn next<F: Future<Output = ()>>(&mut self, stop: Pin<&mut F>, shutdown: &Shutdown) -> Result<bool, Stop> {
        let head_len = self.read_head(stop).await?;
        let h = match head::parse(&self.buf, head_len, &FAST_ROUTES.map(|(p, _)| p)) {
            Parsed::Lane(h) => h,
            Parsed::Other => return Err(Stop::Handoff),
        };
        let settings = self.fast.gateway.settings();
        if matches!(self.fast.guards[h.route], FastGuard::Router)
            || h.content_length > settings.max_body_bytes
            || h.header_bytes > settings.max_header_bytes
        {
            return Err(Stop::Handoff); // hyper and the router answer it (413, 431, …)
        }
        let total = head_len + h.content_length;
        while self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            self.read_some(self.timeouts.head).await?;
        }
        let req = self.buf.split_to(total).freeze();
        self.fast.lane_served.fetch_add(1, Ordering::Relaxed);
        let keep = self.serve(&h, &req).await?;
        Ok(keep && !h.close && !shutdown.is_triggered())
    }

    /// Reads until `buf` starts with a complete head; returns its length.
    async fn read_head<F: Future<Output = ()>>(&mut self, mut stop: Pin<&mut F>) -> Result<usize, Stop> {
        let mut scanned: usize = 0;
        // The whole head must arrive within HEAD_TIMEOUT of its first byte (as hyper's
        // `header_read_timeout`), however slowly it trickles in.
        let head = self.timeouts.head;
        let mut head_deadline = (!self.buf.is_empty()).then(|| tokio::time::Instant::now() + head);
        loop {
            let from = scanned.saturating_sub(3);
            if let Some(at) = HEAD_END.find(&self.buf[from..]) {
                return Ok(from + at + 4);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Stop::Handoff);
            }
            scanned = self.buf.len();
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(8 * 1024);
            }
            if self.buf.is_empty() {
                // Idle between requests. One timer per connection, moved on only when it is
                // behind by more than 1/64 of the timeout, at most 1 s (a timer made and dropped
                // per request cost more than the check), so an idle connection closes between
                // 74 and 75 s after its last request (the coarse clock adds a tick at most).
                let want = self.now() + self.timeouts.idle;
                let slack = (self.timeouts.idle / 64).min(Duration::from_secs(1));
                if self.idle.deadline() + slack < want {
                    self.idle.as_mut().reset(want);
                }
                tokio::select! {
                    biased;
                    r = self.io.read_buf(&mut self.buf) => match r {
                        Ok(n) if n > 0 => {}
                        _ => return Err(Stop::Close),
                    },
                    () = self.idle.as_mut() => return Err(Stop::Close),
                    () = stop.as_mut() => return Err(Stop::Close),
                }
            } else {
                let deadline = *head_deadline.get_or_insert_with(|| tokio::time::Instant::now() + head);
                match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return Err(Stop::Close),
                }
            }
        }
    }

    /// One read into `buf` within `limit`; end of stream, error or timeout close.
    async fn read_some(&mut self, limit: Duration) -> Result<(), Stop> {
        match tokio::time::timeout(limit, self.io.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) if n > 0 => Ok(()),
            _ => Err(Stop::Close),
        }
    }

    /// Guard, gateway, answer. `Ok(false)`: close after it.
    async fn serve(&mut self, h: &LaneHead, req: &Bytes) -> Result<bool, Stop> {
        let (path, endpoint) = FAST_ROUTES[h.route];
        let text = |s: Option<Span>| s.and_then(|s| std::str::from_utf8(&req[s.start..s.end]).ok());
        let id = crate::auth::IdBuf::of(text(h.x_request_id));
        let id = id.as_str();
        let started = tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
        let who = Caller {
            peer: self.peer,
            x_forwarded_for: text(h.x_forwarded_for),
            credential: h.authorization.or(h.x_api_key).map(|s| &req[s.start..s.end]),
            request_id: id,
        };
        let caller = match self.fast.guard(h.route, who, Some(&mut self.proven)).await {
            Ok(c) => c,
            Err(e) => return self.write_response(auth_error(&e), id, h.close).await,
        };
        let hints = RouteHints { x_model: text(h.x_model), x_priority: text(h.x_priority) };
        let body = req.slice(h.head_len..);
        let gateway = self.fast.gateway.clone();
        // Boxed: the connection's futures would otherwise hold this large one by value and copy
        // it each time one of them is made (perf: the copies cost more than the allocation).
        let reply = Box::pin(gateway.serve_reply(endpoint, hints, body, &caller, false));
        let Some(reply) = self.watch_client(reply).await else {
            tracing::debug!(path, request_id = %id, "client closed the connection; request dropped");
            return Err(Stop::Close);
        };
        tracing::debug!(method = "POST", path, status = reply.status.as_u16(), latency_us = started.map_or(0, |s| s.elapsed().as_micros() as u64), request_id = %id, "inference call");
        self.write_reply(reply, id, h.close).await
    }

    /// Awaits `work` while watching the client: `None` when it closed its end (or the
    /// connection broke) first. Bytes it sends meanwhile (a pipelined request) are kept.
    async fn watch_client<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        let mut work = pin!(work);
        loop {
            let room = self.buf.len() < MAX_HEAD;
            if room && self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(8 * 1024);
            }
            tokio::select! {
                biased;
                out = &mut work => return Some(out),
                r = self.io.read_buf(&mut self.buf), if room => match r {
                    Ok(n) if n > 0 => {}
                    _ => return None,
                },
            }
        }
    }

    async fn write_reply(&mut self, reply: Reply, id: &str, close: bool) -> Result<bool, Stop> {
        self.out.clear();
        match &reply.body {
            ReplyBody::Full(body) if body.len() <= 64 * 1024 => {
                write::full(&mut self.out, &reply, body, id, close);
                self.send().await?;
            }
            ReplyBody::Full(body) => {
                write::head(&mut self.out, &reply, Some(body.len()), id, close);
                self.send().await?;
                self.io.write_all(body).await.map_err(|_| Stop::Close)?;
            }
            ReplyBody::Stream(_) => {
                write::head(&mut self.out, &reply, None, id, close);
                self.send().await?;
                let ReplyBody::Stream(stream) = reply.body else { unreachable!() };
                self.relay(stream).await?;
            }
        }
        Ok(true)
    }

    /// Relays a streamed body chunk by chunk; the client closing drops the stream (and with it
    /// the upstream request).
    async fn relay(&mut self, stream: gpufleet_gateway::ReplyStream) -> Result<(), Stop> {
        use futures::StreamExt;
        let mut stream = pin!(stream);
        loop {
            let next = stream.next();
            match self.watch_client(next).await {
                None => return Err(Stop::Close),
                Some(None) => break,
                Some(Some(Ok(data))) if data.is_empty() => {}
                Some(Some(Ok(data))) => {
                    self.out.clear();
                    write::chunk(&mut self.out, &data);
                    self.send().await?;
                }
                // The backend broke off mid-stream: end the connection without the last chunk,
                // so the client sees the answer is incomplete.
                Some(Some(Err(_))) => return Err(Stop::Close),
            }
        }
        self.io.write_all(write::LAST_CHUNK).await.map_err(|_| Stop::Close)
    }

    /// Writes an answer of the router's kind (a refusal) with the security headers.
    async fn write_response(&mut self, mut resp: Response, id: &str, close: bool) -> Result<bool, Stop> {
        secure(&mut resp, id);
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, 1024 * 1024).await.unwrap_or_default();
        self.out.clear();
        write::status_line(&mut self.out, parts.status);
        for (name, value) in &parts.headers {
            if name == "x-request-id" || write::is_security_header(name.as_str()) {
                continue; // written by `tail`
            }
            self.out.extend_from_slice(name.as_str().as_bytes());
            self.out.extend_from_slice(b": ");
            self.out.extend_from_slice(value.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b"content-length: ");
        self.out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        self.out.extend_from_slice(b"\r\n");
        write::tail(&mut self.out, id, close);
        self.out.extend_from_slice(&body);
        self.send().await?;
        Ok(true)
    }

    async fn send(&mut self) -> Result<(), Stop> {
        self.io.write_all(&self.out).await.map_err(|_| Stop::Close)
    }
}
