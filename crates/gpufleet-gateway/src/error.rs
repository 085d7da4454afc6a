//! [`GatewayError`]: every failure the gateway itself produces, with *where* it came from
//! ([`ErrorSource`]) and *whether it may be retried* as data (pingora style), so retry, breaker
//! and DLQ decisions read fields, never strings. The one `match` mapping kinds to HTTP statuses
//! and OpenAI error JSON (`{"error":{"message","type","code"}}`) is [`ErrorKind::status`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use thiserror::Error;

/// Where an error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client's request (bad body, unknown model, refused by policy).
    Downstream,
    /// A backend (connect, timeout, bad status, broken body).
    Upstream,
    /// The gateway itself (queue, job store, broker).
    Internal,
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body or a header is not acceptable.
    BadRequest,
    /// The request headers exceed the configured size.
    HeadersTooLarge,
    /// The body exceeds the configured size.
    PayloadTooLarge,
    /// No backend serves the model.
    ModelNotFound,
    /// The caller's key may not use the model.
    ModelNotAllowed,
    /// No such job or dead letter.
    NotFound,
    /// Backpressure: the queue is too deep for this priority.
    QueueFull,
    /// No capacity came back within the maximum queue wait.
    QueueTimeout,
    /// The backend could not be reached (the request was not sent).
    Connect,
    /// No first byte within the first-byte timeout.
    Timeout,
    /// The backend answered with this 5xx status.
    UpstreamStatus(u16),
    /// The backend is busy or loading its model (503); not a failure of the backend.
    UpstreamBusy,
    /// The backend's answer broke off.
    UpstreamBody,
    /// A dependency of the gateway (broker, job store) failed.
    Unavailable,
    /// A bug or an invariant that did not hold.
    Internal,
}

impl ErrorKind {
    /// HTTP status, OpenAI `type` and `code` of this kind: the one place they are decided.
    pub fn status(self) -> (StatusCode, &'static str, &'static str) {
        use ErrorKind::*;
        match self {
            BadRequest => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request_error",
                "headers_too_large",
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "payload_too_large",
            ),
            ModelNotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            ModelNotAllowed => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "model_not_allowed",
            ),
            NotFound => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found"),
            QueueFull => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "queue_full",
            ),
            QueueTimeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "queue_timeout",
            ),
            Connect => (
                StatusCode::BAD_GATEWAY,
                "server_error",
                "upstream_unreachable",
            ),
            Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "upstream_timeout",
            ),
            UpstreamStatus(_) => (StatusCode::BAD_GATEWAY, "server_error", "upstream_error"),
            UpstreamBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "upstream_busy",
            ),
            UpstreamBody => (StatusCode::BAD_GATEWAY, "server_error", "upstream_broken"),
            Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "unavailable",
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
        }
    }

    /// Short label for metrics (`errors_total{kind}`).
    pub fn label(self) -> &'static str {
        self.status().2
    }
}

/// A failure produced by the gateway.
#[derive(Clone, Debug, Error)]
#[error("{message}")]
pub struct GatewayError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Where it came from.
    pub origin: ErrorSource,
    /// Whether the same request may succeed on another backend or later.
    pub retryable: bool,
    /// Human-readable, without secrets (no URLs with credentials, no keys).
    pub message: String,
    /// Seconds the client should wait before retrying (`Retry-After`).
    pub retry_after_s: Option<u64>,
}

impl GatewayError {
    /// An error of the client's request (never retryable).
    pub fn downstream(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            origin: ErrorSource::Downstream,
            retryable: false,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// A backend failure; retryable unless it is a client-side refusal.
    pub fn upstream(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            origin: ErrorSource::Upstream,
            retryable: true,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// A failure inside the gateway.
    pub fn internal(kind: ErrorKind, message: impl Into<String>) -> Self {
        let retryable = matches!(
            kind,
            ErrorKind::Unavailable | ErrorKind::QueueTimeout | ErrorKind::QueueFull
        );
        Self {
            kind,
            origin: ErrorSource::Internal,
            retryable,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// Adds a `Retry-After` hint.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_s = Some(secs.max(1));
        self
    }

    /// Whether this outcome counts against the backend's circuit breaker. A busy or loading
    /// backend is not failing, and nothing the client did is the backend's fault.
    pub fn is_backend_failure(&self) -> bool {
        self.origin == ErrorSource::Upstream
            && matches!(
                self.kind,
                ErrorKind::Connect
                    | ErrorKind::Timeout
                    | ErrorKind::UpstreamStatus(_)
                    | ErrorKind::UpstreamBody
            )
    }

    /// Whether the backend may have worked on the request (counts as a spent attempt). A request
    /// that could not be connected, or was refused as busy, was not processed.
    pub fn spent_attempt(&self) -> bool {
        !matches!(self.kind, ErrorKind::Connect | ErrorKind::UpstreamBusy)
    }
}

impl GatewayError {
    /// The OpenAI-shaped error body: `{"error":{"message","type","code"}}`.
    pub fn body_json(&self) -> Vec<u8> {
        let (_, kind, code) = self.kind.status();
        json!({ "error": { "message": self.message, "type": kind, "code": code } }).to_string().into_bytes()
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        crate::reply::Reply::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_not_a_backend_failure_but_timeouts_are() {
        assert!(!GatewayError::upstream(ErrorKind::UpstreamBusy, "busy").is_backend_failure());
        assert!(GatewayError::upstream(ErrorKind::Timeout, "slow").is_backend_failure());
        assert!(!GatewayError::downstream(ErrorKind::BadRequest, "x").is_backend_failure());
        assert!(!GatewayError::upstream(ErrorKind::Connect, "refused").spent_attempt());
    }

    #[test]
    fn response_is_openai_shaped_with_retry_after() {
        use axum::http::header;
        let resp = GatewayError::internal(ErrorKind::QueueFull, "queue full")
            .with_retry_after(3)
            .into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
    }
}
