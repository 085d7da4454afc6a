//! Forwarding one request to a backend: choose (or wait for) a lease, send with connect and
//! first-byte timeouts, classify the outcome, and retry on another backend while nothing has been
//! sent to the client.
//!
//! - Not streaming: the answer is read whole (bounded by the first-byte timeout), so any failure
//!   before it is complete can still be retried; `usage.completion_tokens` is found with a byte
//!   search, not by parsing the body.
//! - Streaming: the first chunk is awaited before the response starts (a backend that dies before
//!   its first byte is retried); after that chunks are passed on as they arrive ([`Relay`]), never
//!   buffered. Dropping the response (client gone) drops the upstream request, which closes its
//!   connection, and the backend stops generating.
//!
//! Retries: a failed backend is excluded for the next try; when every backend of the pool was
//! tried the exclusions are cleared and the request waits for capacity again (a breaker that
//! opened keeps it away). At most `max_attempts` tries that reached a backend; tries that could
//! not connect or were refused as busy do not count. The request's queue deadline bounds it all.

use crate::balance::{Lease, Pool};
use crate::error::{ErrorKind, GatewayError};
use crate::queue::{Priority, WaitSpec};
use crate::upstream::{UpFailure, UpstreamBody};
use crate::Gateway;
use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use futures::stream::Stream;
use serde::{Deserialize, Serialize};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{timeout_at, Instant};

/// The OpenAI route a request is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    #[default]
    Chat,
    /// `/v1/completions`.
    Completions,
    /// `/v1/embeddings`.
    Embeddings,
}

impl Endpoint {
    /// Path appended to the backend's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
        }
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
        }
    }
}

/// One request ready to forward.
pub(crate) struct Outgoing {
    pub(crate) endpoint: Endpoint,
    pub(crate) body: Bytes,
    pub(crate) stream: bool,
    pub(crate) priority: Priority,
    /// The longest it may wait in the queue, in all, from its first wait.
    pub(crate) max_wait: Duration,
    /// Apply backpressure on its first wait.
    pub(crate) admit: bool,
}

/// A backend's answer.
// Both variants are common; the bigger one is moved a few times per request, cheaper than an
// allocation per streamed request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Answer {
    /// Read whole.
    Full {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    /// Being streamed.
    Stream {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        relay: ReplyStream,
    },
}

/// Forwards with retries; `Ok` carries a `Retry-After` hint when the request queued behind a deep
/// queue.
pub(crate) async fn forward(
    gw: &Gateway,
    pool: &Arc<Pool>,
    out: Outgoing,
) -> Result<(Answer, Option<u64>), GatewayError> {
    let mut excluded: Vec<usize> = Vec::new();
    let mut spent = 0u32;
    let mut admit = out.admit;
    let mut hint = None;
    let mut last: Option<GatewayError> = None;
    // Set at the first wait (the clock is not read for requests that never wait).
    let mut deadline: Option<Instant> = None;
    loop {
        // Capacity at hand needs no future; the queue's wait is boxed (see `attempt`).
        let acquired = match pool.try_acquire(&gw.bal, &excluded) {
            Some(lease) => Ok((lease, None)),
            None => {
                let spec = WaitSpec {
                    priority: out.priority,
                    excluded: &excluded,
                    deadline: *deadline.get_or_insert_with(|| Instant::now() + out.max_wait),
                    admit,
                };
                Box::pin(pool.acquire(&gw.bal, spec)).await
            }
        };
        let (lease, h) = match acquired {
            Ok(x) => x,
            Err(e) => {
                gw.bal.metrics.error(None, &pool.model, e.kind.label());
                return Err(match last {
                    Some(l) if e.kind == ErrorKind::QueueTimeout => GatewayError {
                        message: format!("{}; last failure: {}", e.message, l.message),
                        ..e
                    },
                    _ => e,
                });
            }
        };
        admit = false;
        hint = hint.or(h);
        let idx = lease.backend.idx;
        match attempt(gw, lease, &out).await {
            Ok(answer) => return Ok((answer, hint)),
            Err(e) if !e.retryable => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, backend = gw.bal.backends[idx].name(), "attempt failed; retrying");
                if e.spent_attempt() {
                    spent += 1;
                    if spent >= gw.settings.max_attempts {
                        return Err(e);
                    }
                }
                excluded.push(idx);
                if pool.backends.iter().all(|b| excluded.contains(&b.idx)) {
                    excluded.clear();
                }
                last = Some(e);
            }
        }
    }
}

/// A failure of the upstream client (its messages hold no URL: it may carry credentials).
fn request_error(e: &UpFailure, backend: &str) -> GatewayError {
    if e.is_connect() {
        GatewayError::upstream(ErrorKind::Connect, format!("backend {backend} unreachable: {e}"))
    } else {
        GatewayError::upstream(ErrorKind::UpstreamBody, format!("backend {backend} failed: {e}"))
    }
}

fn timed_out(backend: &str) -> GatewayError {
    GatewayError::upstream(
        ErrorKind::Timeout,
        format!("backend {backend} sent no answer within the first-byte timeout"),
    )
}

/// One try on one backend; records the outcome on the lease and in metrics.
async fn attempt(gw: &Gateway, lease: Lease, out: &Outgoing) -> Result<Answer, GatewayError> {
    let backend = lease.backend.clone();
    let name = backend.name();
    let Some(req) = gw
        .upstream
        .post(backend.idx, out.endpoint, out.body.clone(), out.stream)
    else {
        lease.neutral();
        return Err(GatewayError::internal(
            ErrorKind::Internal,
            format!("backend {name} has no upstream target"),
        ));
    };
    // The lease was taken just now: its time is the request's start (one clock read fewer).
    let started = lease.at;
    let deadline = started + gw.settings.first_byte_timeout;
    let fail = |lease: Lease, e: GatewayError| {
        gw.bal
            .metrics
            .error(Some(lease.metrics()), lease.model(), e.kind.label());
        if e.is_backend_failure() {
            lease.fail();
        } else {
            lease.neutral();
        }
        Err(e)
    };
    let resp = match timeout_at(deadline, req).await {
        Err(_) => return fail(lease, timed_out(name)),
        Ok(Err(e)) => return fail(lease, request_error(&e, name)),
        Ok(Ok(r)) => r,
    };
    let status = resp.status;
    let content_type = resp.content_type;
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let body = Box::pin(timeout_at(deadline, resp.body.collect()))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        if memchr::memmem::find(&body, b"Loading model").is_some() {
            backend.mark_loading();
        } else {
            backend.mark_full();
        }
        return fail(
            lease,
            GatewayError::upstream(
                ErrorKind::UpstreamBusy,
                format!("backend {name} is busy or loading"),
            ),
        );
    }
    if status.is_server_error() {
        return fail(
            lease,
            GatewayError::upstream(
                ErrorKind::UpstreamStatus(status.as_u16()),
                format!("backend {name} answered {status}"),
            ),
        );
    }
    if !out.stream || !status.is_success() {
        let mut body = resp.body;
        // Usually the whole answer came with its head: no future for it. Otherwise the read is
        // boxed, so its state does not grow every request's future (moved at each level).
        let body = match body.try_whole() {
            Some(b) => b,
            None => match Box::pin(timeout_at(deadline, body.collect())).await {
                Err(_) => return fail(lease, timed_out(name)),
                Ok(Err(e)) => return fail(lease, request_error(&e, name)),
                Ok(Ok(b)) => b,
            },
        };
        if status.is_success() {
            let end = Instant::now();
            lease.metrics().finished(end.saturating_duration_since(started), completion_tokens(&body));
            lease.succeed(end);
        } else {
            // The client's request was refused (4xx): pass it on; says nothing about the backend.
            gw.bal.metrics.error(
                Some(lease.metrics()),
                lease.model(),
                "upstream_client_error",
            );
            lease.neutral();
        }
        return Ok(Answer::Full {
            status,
            content_type,
            body,
        });
    }
    let mut inner = resp.body;
    let first = match timeout_at(deadline, poll_fn(|cx| inner.poll_data(cx))).await {
        Err(_) => return fail(lease, timed_out(name)),
        Ok(Some(Ok(chunk))) => chunk,
        Ok(Some(Err(e))) => return fail(lease, request_error(&e, name)),
        Ok(None) => {
            return fail(
                lease,
                GatewayError::upstream(
                    ErrorKind::UpstreamBody,
                    format!("backend {name} ended the stream before any data"),
                ),
            )
        }
    };
    lease
        .metrics()
        .ttft
        .observe(started.elapsed().as_secs_f64());
    let tokens = completion_tokens(&first);
    let relay = ReplyStream {
        first: Some(first),
        inner,
        lease: Some(lease),
        started,
        tokens,
    };
    Ok(Answer::Stream {
        status,
        content_type,
        relay,
    })
}

/// `usage.completion_tokens` if the bytes hold it (the last one wins).
pub(crate) fn completion_tokens(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"completion_tokens\"";
    static FORWARD: LazyLock<memchr::memmem::Finder<'static>> = LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    static BACKWARD: LazyLock<memchr::memmem::FinderRev<'static>> = LazyLock::new(|| memchr::memmem::FinderRev::new(KEY));
    // `usage` ends an answer (llama.cpp adds `timings` after it): the last KiB first, with the
    // vectorised forward search (the backward one is not), its last match (a chunk can carry
    // several SSE events, each with its usage), then the whole body backwards. A quote inside a
    // JSON string is escaped, so the needle matches keys only.
    let tail = body.len().saturating_sub(1024);
    let at = match FORWARD.find_iter(&body[tail..]).last() {
        Some(i) => tail + i,
        None => BACKWARD.rfind(body)?,
    } + KEY.len();
    let rest = &body[at..];
    let rest = &rest[rest
        .iter()
        .position(|b| !matches!(b, b' ' | b':' | b'\t'))?..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Passes a backend's stream on chunk by chunk, holding the lease until it ends. Dropped early
/// (client gone): the lease is released without a verdict and the upstream request is dropped.
pub struct ReplyStream {
    first: Option<Bytes>,
    inner: UpstreamBody,
    lease: Option<Lease>,
    started: Instant,
    tokens: Option<u64>,
}

impl std::fmt::Debug for ReplyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyStream").finish_non_exhaustive()
    }
}

impl Stream for ReplyStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        match this.inner.poll_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(n) = completion_tokens(&chunk) {
                    this.tokens = Some(n);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(lease) = this.lease.take() {
                    lease.metrics().failed.inc();
                    lease.fail();
                }
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => {
                if let Some(lease) = this.lease.take() {
                    let end = Instant::now();
                    lease.metrics().finished(end.saturating_duration_since(this.started), this.tokens);
                    lease.succeed(end);
                }
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::completion_tokens;

    #[test]
    fn usage_is_found_without_parsing() {
        let body = br#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens": 25,"total_tokens":37}}"#;
        assert_eq!(completion_tokens(body), Some(25));
        assert_eq!(completion_tokens(b"data: {\"choices\":[]}\n\n"), None);
        // Usage far from the end (a long `timings` object after it), and within the last KiB.
        let far = format!(r#"{{"usage":{{"completion_tokens":7}},"timings":{{"pad":"{}"}}}}"#, "x".repeat(3000));
        assert_eq!(completion_tokens(far.as_bytes()), Some(7));
        let near = format!(r#"{{"content":"{}","usage":{{"completion_tokens":9}}}}"#, "y".repeat(3000));
        assert_eq!(completion_tokens(near.as_bytes()), Some(9));
        // Several events in one chunk, each with its usage: the last one counts.
        let events = b"data: {\"usage\":{\"completion_tokens\":3}}\n\ndata: {\"usage\":{\"completion_tokens\":4}}\n\n";
        assert_eq!(completion_tokens(events), Some(4));
    }
}
