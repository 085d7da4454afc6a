//! [`AgentHttp`]: the HTTP/1.1 client the workers use for `http://` agents — keep-alive with at
//! most one idle connection per agent, an idle connection that is only its socket, and no
//! background tasks.
//!
//! Why not the general-purpose client: a 10,000-host cycle is 10,000 small GETs to 10,000
//! different agents. `reqwest` spends much of a check in layers this needs none of (URL parsing
//! and redirects per request, a header map per request, a pool keyed by scheme and authority, a
//! spawned task per connection), and its pooled connections keep ~21 KB of buffers each (over
//! 200 MB for 10,000 agents). Here a request runs on a `hyper` HTTP/1 connection whose driver is
//! polled only while the request runs (`select!` beside it; reads capped at [`READ_BUF`] bytes).
//! Once the answer is read in full, the connection is taken apart (`into_parts`) and only the
//! socket is kept idle; the next request to that agent builds a new HTTP/1 state on it (no
//! network round trip: an HTTP/1 handshake is local). So an idle connection is its socket and a
//! map entry, not hyper's 8 KB write buffer, read buffer and state: ~3 KB of server RSS per idle
//! connection measured with 10,000 agents, against ~15 KB before; and nothing runs for it. A socket with bytes
//! left over after the answer is not kept. A connection the agent closed while idle fails on
//! its next use, and the request is sent again once on a new connection (GET is idempotent).
//! Idle connections older than the idle timeout are dropped when met and by
//! [`AgentHttp::evict_idle`]. `https://` agents go through
//! `reqwest` (see [`crate::check`]).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, CONNECTION, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Bytes read from a socket at once (also the largest response head).
pub const READ_BUF: usize = 4096;

const AGENT: &str = concat!("gpufleet-fleet/", env!("CARGO_PKG_VERSION"));

type Driver = Pin<Box<http1::Connection<TokioIo<TcpStream>, Empty<Bytes>>>>;

/// A connection while a request runs on it.
struct Conn {
    sender: http1::SendRequest<Empty<Bytes>>,
    driver: Driver,
}

/// A kept-alive connection between requests: the socket alone.
struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// Where an `http://` agent is: `host:port` and the path before `/health`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    authority: String,
    prefix: String,
}

impl Target {
    /// The target of an `http://` agent URL; `None` for anything else (https, unparsable).
    pub fn parse(agent_url: &str) -> Option<Target> {
        let uri: hyper::Uri = agent_url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let auth = uri.authority()?;
        let authority = match auth.port_u16() {
            Some(_) => auth.as_str().to_owned(),
            None => format!("{}:80", auth.as_str()),
        };
        Some(Target { authority, prefix: uri.path().trim_end_matches('/').to_owned() })
    }
}

/// Why a request got no answer, or a broken one.
#[derive(Debug)]
pub enum HttpError {
    /// Connect, send or receive failed, or the timeout passed.
    NoAnswer(String),
    /// The answer could not be read (too large, malformed).
    BadAnswer(String),
}

/// The client; see the module docs.
pub struct AgentHttp {
    idle: Mutex<HashMap<String, Idle>>,
    idle_timeout: Duration,
    max_idle: usize,
}

impl std::fmt::Debug for AgentHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHttp").field("idle", &self.idle.lock().len()).field("max_idle", &self.max_idle).finish()
    }
}

impl AgentHttp {
    /// A client keeping at most `max_idle` idle connections, each for at most `idle_timeout`.
    pub fn new(idle_timeout: Duration, max_idle: usize) -> Self {
        Self { idle: Mutex::new(HashMap::new()), idle_timeout, max_idle }
    }

    /// Idle connections held now.
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().len()
    }

    /// Drops idle connections older than the idle timeout.
    pub fn evict_idle(&self) {
        let timeout = self.idle_timeout;
        self.idle.lock().retain(|_, c| c.since.elapsed() < timeout);
    }

    /// `GET {prefix}{path}` on the agent within `timeout`; the status and a body of at most
    /// `max_body` bytes.
    pub async fn get(&self, target: &Target, path: &str, token: Option<&str>, timeout: Duration, max_body: usize) -> Result<(StatusCode, Bytes), HttpError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let within = |what: &str| HttpError::NoAnswer(format!("no answer within {timeout:?} ({what})"));
        let request = || build(target, path, token);
        let reused = self.idle.lock().remove(&target.authority).filter(|c| c.since.elapsed() < self.idle_timeout);
        if let Some(idle) = reused {
            let req = request()?;
            let attempt = async {
                let conn = handshake(idle.stream).await?;
                self.exchange(target, conn, req, max_body).await
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(answer)) => return Ok(answer),
                // The agent closed the idle connection (or it broke): one more time, on a new one.
                Ok(Err(HttpError::NoAnswer(_))) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(within("request")),
            }
        }
        let conn = tokio::time::timeout_at(deadline, connect(&target.authority)).await.map_err(|_| within("connect"))??;
        tokio::time::timeout_at(deadline, self.exchange(target, conn, request()?, max_body)).await.map_err(|_| within("request"))?
    }

    async fn exchange(&self, target: &Target, conn: Conn, req: Request<Empty<Bytes>>, max_body: usize) -> Result<(StatusCode, Bytes), HttpError> {
        let Conn { mut sender, mut driver, .. } = conn;
        let work = async {
            sender.ready().await.map_err(|e| HttpError::NoAnswer(format!("connection lost: {e}")))?;
            let resp = sender.send_request(req).await.map_err(|e| HttpError::NoAnswer(format!("request failed: {e}")))?;
            let status = resp.status();
            let close = resp.headers().get(CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let body = Limited::new(resp.into_body(), max_body).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    HttpError::BadAnswer(format!("agent answer larger than {max_body} bytes"))
                } else {
                    HttpError::NoAnswer(format!("answer cut off: {e}"))
                }
            })?;
            Ok::<_, HttpError>((status, body.to_bytes(), close))
        };
        let (outcome, driver) = {
            tokio::pin!(work);
            let first = tokio::select! {
                r = &mut work => Some(r),
                _ = &mut driver => None,
            };
            match first {
                Some(r) => (r, Some(driver)),
                // The connection ended. Dropping its driver fails a request still queued on it
                // (the agent closed an idle connection); what was read before the end still
                // reaches the request (an agent may answer and close).
                None => {
                    drop(driver);
                    ((&mut work).await, None)
                }
            }
        };
        let (status, body, close) = outcome?;
        if let Some(driver) = driver.filter(|_| !close && !sender.is_closed()) {
            drop(sender);
            // Keep the socket only: hyper's buffers and state are built again on the next use.
            let parts = Pin::into_inner(driver).into_parts();
            let mut idle = self.idle.lock();
            if parts.read_buf.is_empty() && idle.len() < self.max_idle {
                idle.insert(target.authority.clone(), Idle { stream: parts.io.into_inner(), since: Instant::now() });
            }
        }
        Ok((status, body))
    }
}

fn build(target: &Target, path: &str, token: Option<&str>) -> Result<Request<Empty<Bytes>>, HttpError> {
    let mut req = Request::get(format!("{}{path}", target.prefix)).header(HOST, &target.authority).header(USER_AGENT, AGENT);
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    req.body(Empty::new()).map_err(|e| HttpError::BadAnswer(format!("cannot build the request: {e}")))
}

async fn connect(authority: &str) -> Result<Conn, HttpError> {
    let stream = TcpStream::connect(authority).await.map_err(|e| HttpError::NoAnswer(format!("cannot connect: {e}")))?;
    // Small requests and answers: send at once.
    let _ = stream.set_nodelay(true);
    handshake(stream).await
}

/// An HTTP/1 connection on `stream` (new or kept idle); local, nothing is sent.
async fn handshake(stream: TcpStream) -> Result<Conn, HttpError> {
    let (sender, driver) = http1::Builder::new()
        .read_buf_exact_size(Some(READ_BUF))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError::NoAnswer(format!("cannot connect: {e}")))?;
    Ok(Conn { sender, driver: Box::pin(driver) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_of_agent_urls() {
        let t = Target::parse("http://10.0.0.5:9100").unwrap();
        assert_eq!((t.authority.as_str(), t.prefix.as_str()), ("10.0.0.5:9100", ""));
        let t = Target::parse("http://agent.example/base/").unwrap();
        assert_eq!((t.authority.as_str(), t.prefix.as_str()), ("agent.example:80", "/base"));
        let t = Target::parse("http://[::1]:9100/h/3").unwrap();
        assert_eq!((t.authority.as_str(), t.prefix.as_str()), ("[::1]:9100", "/h/3"));
        assert_eq!(Target::parse("https://a:1"), None);
        assert_eq!(Target::parse("not a url"), None);
    }
}
