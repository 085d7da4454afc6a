//! One upstream HTTP/1 connection driven by the request that holds it, and the idle pool of
//! one backend.
//!
//! hyper's client connection is a future that must be polled for its socket to be read and
//! written. hyper-util's pooled client spawns it as a task of its own and talks to it through
//! channels, so every request crosses tasks twice (request in, response out), often threads.
//! Here the request's own task polls it ([`Conn::drive`]) beside the response and body futures:
//! one task, no hand-offs, the socket's readiness wakes the task that waits for it.
//!
//! A connection goes back to its [`IdlePool`] only when its response body was read to the end
//! (then hyper keeps it alive); a request that stops early (client gone, error, timeout) drops
//! it, which closes the socket and so cancels the work upstream. An idle connection is polled by
//! nobody: one the backend closed meanwhile is noticed when it is taken ([`Conn::ready`] reads
//! the end of stream) and dropped.

use axum::http::{Request, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The socket under a connection: TCP, or TLS over TCP.
pub(crate) type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// One HTTP/1 connection to a backend.
pub(crate) struct Conn {
    send: SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended (closed by either side, or broken).
    conn: Option<Connection<Io, Full<Bytes>>>,
    /// When it was last put back idle.
    idle_since: Instant,
    /// Served a request before (a failure to send on it may be a stale keep-alive).
    pub(crate) reused: bool,
}

impl Conn {
    pub(crate) fn new(send: SendRequest<Full<Bytes>>, conn: Connection<Io, Full<Bytes>>) -> Self {
        Self {
            send,
            conn: Some(conn),
            idle_since: Instant::now(),
            reused: false,
        }
    }

    /// Lets hyper read and write the socket; false once the connection has ended.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        match Pin::new(conn).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(_) => {
                self.conn = None;
                false
            }
        }
    }

    /// Waits until the connection can take a request; an error when it has ended.
    pub(crate) async fn ready(&mut self) -> Result<(), hyper::Error> {
        poll_fn(|cx| {
            self.drive(cx);
            self.send.poll_ready(cx)
        })
        .await
    }

    /// Sends `req` and waits for the response head, driving the connection meanwhile. On an
    /// error the request comes back when it was never written (safe to send elsewhere).
    pub(crate) async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, (hyper::Error, Option<Request<Full<Bytes>>>)> {
        let mut fut = std::pin::pin!(self.send.try_send_request(req));
        let conn = &mut self.conn;
        poll_fn(|cx| {
            if let Some(c) = conn.as_mut() {
                if Pin::new(c).poll(cx).is_ready() {
                    *conn = None;
                }
            }
            fut.as_mut().poll(cx)
        })
        .await
        .map_err(|mut e| {
            let req = e.take_message();
            (e.into_error(), req)
        })
    }
}

/// The idle connections of one backend, most recently used on top.
pub(crate) struct IdlePool {
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl IdlePool {
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently used idle connection, if one is younger than the idle timeout (older
    /// ones lie below it and are all dropped).
    pub(crate) fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.lock();
        let conn = idle.pop()?;
        if conn.idle_since.elapsed() >= self.idle_timeout {
            let stale = std::mem::take(&mut *idle);
            drop(idle);
            drop(stale);
            return None;
        }
        Some(conn)
    }

    /// Keeps a connection whose last response was read to the end.
    fn put(&self, mut conn: Conn) {
        if conn.conn.is_none() {
            return;
        }
        conn.idle_since = Instant::now();
        conn.reused = true;
        let mut idle = self.idle.lock();
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// Connections idle now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().len()
    }
}

/// A response being read: its body, and the connection (which must be driven for the body to
/// arrive) with the pool it returns to at the end.
pub(crate) struct BodyReader {
    body: Incoming,
    conn: Option<Conn>,
    pool: Arc<IdlePool>,
}

impl BodyReader {
    pub(crate) fn new(body: Incoming, conn: Conn, pool: Arc<IdlePool>) -> Self {
        Self {
            body,
            conn: Some(conn),
            pool,
        }
    }

    /// The next non-empty data frame (trailers are skipped); at the end the connection goes
    /// back to the pool.
    pub(crate) fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, hyper::Error>>> {
        loop {
            if let Some(c) = self.conn.as_mut() {
                c.drive(cx);
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    if let Some(c) = self.conn.take() {
                        self.pool.put(c);
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                    _ => continue,
                },
            }
        }
    }

    /// The whole body.
    pub(crate) async fn collect(mut self) -> Result<Bytes, hyper::Error> {
        let mut first: Option<Bytes> = None;
        let mut rest: Vec<u8> = Vec::new();
        while let Some(chunk) = poll_fn(|cx| self.poll_data(cx)).await {
            let chunk = chunk?;
            match &first {
                None => first = Some(chunk),
                Some(f) => {
                    if rest.is_empty() {
                        rest.extend_from_slice(f);
                    }
                    rest.extend_from_slice(&chunk);
                }
            }
        }
        Ok(if rest.is_empty() {
            first.unwrap_or_default()
        } else {
            Bytes::from(rest)
        })
    }
}
