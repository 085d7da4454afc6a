//! The body of an answer from a plain-HTTP backend ([`H1Body`]): framing by length, chunked
//! transfer coding (extensions and trailers skipped) or the end of the connection, read as it
//! arrives; a body read to its end gives its connection back to the pool.

use super::{Conn, H1Error, H1Target, MAX_HEAD, READ_CHUNK};
use bytes::{Buf, Bytes, BytesMut};
use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// How the rest of an answer's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked: at a chunk-size line.
    ChunkSize,
    /// Chunked: this many bytes of the current chunk are left.
    ChunkData(u64),
    /// Chunked: the CRLF after a chunk's data.
    ChunkEnd,
    /// Chunked: trailer lines after the last chunk.
    Trailers,
    /// Until the backend closes the connection.
    Close,
    /// Read to the end.
    Done,
}

/// The body of an answer, read as it arrives. Dropped before its end, it closes the connection.
#[derive(Debug)]
pub(crate) struct H1Body {
    pub(super) conn: Option<Conn>,
    pub(super) framing: Framing,
    /// The connection may be pooled once the body is read.
    pub(super) keep_alive: bool,
    pub(super) target: Arc<H1Target>,
}

impl H1Body {
    /// Whether the whole body has been read.
    pub(crate) fn is_end(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The next piece of the body (never empty); `None` at its end.
    pub(crate) fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, H1Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.framing {
                Framing::Done => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) | Framing::ChunkData(left) => {
                    if conn.buf.is_empty() {
                        match ready!(fill(conn, cx)) {
                            Ok(0) => return Poll::Ready(Some(Err(self.fail(H1Error::Closed)))),
                            Ok(_) => {}
                            Err(e) => return Poll::Ready(Some(Err(self.fail(e.into())))),
                        }
                    }
                    let take = conn.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let data = conn.buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.framing = match self.framing {
                        Framing::Length(_) if left == 0 => Framing::Done,
                        Framing::Length(_) => Framing::Length(left),
                        _ if left == 0 => Framing::ChunkEnd,
                        _ => Framing::ChunkData(left),
                    };
                    if self.framing == Framing::Done {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Framing::Close => {
                    if conn.buf.is_empty() {
                        match ready!(fill(conn, cx)) {
                            Ok(0) => {
                                self.framing = Framing::Done;
                                self.conn = None;
                                return Poll::Ready(None);
                            }
                            Ok(_) => {}
                            Err(e) => return Poll::Ready(Some(Err(self.fail(e.into())))),
                        }
                    }
                    return Poll::Ready(Some(Ok(conn.buf.split().freeze())));
                }
                Framing::ChunkSize | Framing::ChunkEnd | Framing::Trailers => {
                    match step_chunked(&mut conn.buf, self.framing) {
                        Ok(Some(next)) => {
                            self.framing = next;
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => return Poll::Ready(Some(Err(self.fail(e)))),
                    }
                    if conn.buf.len() > MAX_HEAD {
                        return Poll::Ready(Some(Err(self.fail(H1Error::Protocol("chunk framing line too long")))));
                    }
                    match ready!(fill(conn, cx)) {
                        Ok(0) => return Poll::Ready(Some(Err(self.fail(H1Error::Closed)))),
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(self.fail(e.into())))),
                    }
                }
            }
        }
    }

    /// The whole body if it is already buffered (or empty), without waiting.
    pub(crate) fn try_whole(&mut self) -> Option<Bytes> {
        match self.framing {
            Framing::Done => Some(Bytes::new()),
            Framing::Length(left) => {
                let conn = self.conn.as_mut()?;
                let left = usize::try_from(left).ok().filter(|&n| n <= conn.buf.len())?;
                let body = conn.buf.split_to(left).freeze();
                self.finish();
                Some(body)
            }
            _ => None,
        }
    }

    /// The next piece of the body; `None` at its end.
    pub(crate) async fn data(&mut self) -> Option<Result<Bytes, H1Error>> {
        poll_fn(|cx| self.poll_data(cx)).await
    }

    /// The whole body (at most `limit` bytes). A body already in the read buffer is returned
    /// without a copy.
    pub(crate) async fn collect(mut self, limit: usize) -> Result<Bytes, H1Error> {
        let first = match self.data().await {
            None => return Ok(Bytes::new()),
            Some(r) => r?,
        };
        if self.is_end() {
            return Ok(first);
        }
        let mut all = BytesMut::from(&first[..]);
        while let Some(piece) = self.data().await {
            all.extend_from_slice(&piece?);
            if all.len() > limit {
                return Err(H1Error::Protocol("answer larger than the gateway accepts"));
            }
        }
        Ok(all.freeze())
    }

    /// The body is read: pool the connection when it can serve another request.
    pub(super) fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.target.checkin(conn);
            }
        }
    }

    fn fail(&mut self, e: H1Error) -> H1Error {
        self.conn = None;
        self.framing = Framing::Done;
        e
    }
}

/// Advances the chunked framing over what is buffered: `Ok(Some(next))` when a framing line was
/// consumed, `Ok(None)` when more bytes are needed.
pub(super) fn step_chunked(buf: &mut BytesMut, at: Framing) -> Result<Option<Framing>, H1Error> {
    match at {
        Framing::ChunkSize => match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((used, 0))) => {
                buf.advance(used);
                Ok(Some(Framing::Trailers))
            }
            Ok(httparse::Status::Complete((used, size))) => {
                buf.advance(used);
                Ok(Some(Framing::ChunkData(size)))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(_) => Err(H1Error::Protocol("bad chunk size")),
        },
        Framing::ChunkEnd => {
            if buf.len() < 2 {
                return Ok(None);
            }
            if &buf[..2] != b"\r\n" {
                return Err(H1Error::Protocol("chunk not followed by CRLF"));
            }
            buf.advance(2);
            Ok(Some(Framing::ChunkSize))
        }
        Framing::Trailers => {
            // Trailer lines (ignored) until an empty line.
            let Some(lf) = memchr::memchr(b'\n', buf) else {
                return Ok(None);
            };
            if lf == 0 || buf[lf - 1] != b'\r' {
                return Err(H1Error::Protocol("trailer line not ended by CRLF"));
            }
            buf.advance(lf + 1);
            Ok(Some(if lf == 1 { Framing::Done } else { Framing::Trailers }))
        }
        _ => Ok(Some(at)),
    }
}

/// Reads what the socket has into the connection's buffer.
fn fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    conn.buf.reserve(READ_CHUNK);
    loop {
        ready!(conn.io.poll_read_ready(cx))?;
        match conn.io.try_read_buf(&mut conn.buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}
