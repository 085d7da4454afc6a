//! The agent's HTTP API, shared by the real agent ([`crate::AgentState`]) and every simulated host
//! (through [`AgentBackend`]):
//!
//! | route | auth | answer |
//! |---|---|---|
//! | `GET /health` | none | [`HealthReport`] (always 200; the status is in the body) |
//! | `GET /metrics/host` | agent token when one is configured | [`HostMetrics`] |
//! | `POST /containers/{id}/restart` | agent token, always | 200 `{"restarted": id}`; 404 unknown; 409 stopped on purpose; 503 no container runtime |
//!
//! Why `/health` is open: it is what the server's health worker polls thousands of times a second
//! and what a load balancer or a person with `curl` checks; it carries statuses and names, no
//! secret and no control. `/metrics/host` carries process names and mount points, so it follows
//! the token when one is set. A restart changes the host: without a configured token it is refused
//! (403), never open. Tokens are compared in constant time (SHA-256 of both, then `subtle`).
//! Errors are JSON `{"error": "..."}`.

use crate::wire::{HealthReport, HostMetrics};
use async_trait::async_trait;
use bytes::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Why a restart was not done.
#[derive(Debug, Error)]
pub enum RestartError {
    /// No container has that id or name.
    #[error("no such container: {0}")]
    NotFound(String),
    /// It was stopped on purpose; restarting it would undo someone's decision.
    #[error("container {0} was stopped on purpose; start it by hand if that is wanted")]
    StoppedOnPurpose(String),
    /// The id cannot be a container id.
    #[error("{0}")]
    InvalidId(String),
    /// No container runtime socket on this host.
    #[error("no container runtime on this host")]
    NoRuntime,
    /// The runtime failed.
    #[error("container runtime: {0}")]
    Runtime(String),
}

impl RestartError {
    fn status(&self) -> StatusCode {
        match self {
            RestartError::NotFound(_) => StatusCode::NOT_FOUND,
            RestartError::StoppedOnPurpose(_) => StatusCode::CONFLICT,
            RestartError::InvalidId(_) => StatusCode::BAD_REQUEST,
            RestartError::NoRuntime => StatusCode::SERVICE_UNAVAILABLE,
            RestartError::Runtime(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// What answers the agent routes: the real agent or a simulated host.
#[async_trait]
pub trait AgentBackend: Send + Sync + 'static {
    /// `GET /health`.
    async fn health(&self) -> HealthReport;
    /// `GET /health` as JSON bytes. The default serialises [`AgentBackend::health`]; a backend
    /// answering many requests (the simulated fleet) may cache the bytes.
    async fn health_json(&self) -> Bytes {
        serde_json::to_vec(&self.health().await).map(Bytes::from).unwrap_or_default()
    }
    /// `GET /metrics/host`.
    async fn host_metrics(&self) -> HostMetrics;
    /// `POST /containers/{id}/restart` after the token was checked.
    async fn restart_container(&self, id: &str) -> Result<(), RestartError>;
    /// The agent token, if one is configured.
    fn token(&self) -> Option<&TokenDigest>;
}

/// A token kept as its SHA-256, compared in constant time.
#[derive(Clone)]
pub struct TokenDigest([u8; 32]);

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(…)")
    }
}

impl TokenDigest {
    /// The digest of `token`.
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `candidate` is the token (constant time in the candidate's content).
    pub fn matches(&self, candidate: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        bool::from(self.0.ct_eq(&d))
    }
}

/// The routes over the real agent's state.
pub fn router(state: crate::AgentState) -> Router {
    router_for(Arc::new(state))
}

/// The routes over any backend.
pub fn router_for(backend: Arc<dyn AgentBackend>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics/host", get(host_metrics))
        .route("/containers/{id}/restart", post(restart))
        .with_state(backend)
}

type Backend = State<Arc<dyn AgentBackend>>;

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut r = (status, Json(json!({ "error": msg.into() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// `None` when authorised, else the refusal.
fn check_token(backend: &dyn AgentBackend, headers: &HeaderMap, required: bool) -> Option<Response> {
    let Some(digest) = backend.token() else {
        return required.then(|| error(StatusCode::FORBIDDEN, "no agent token is configured on this host, so this action is disabled"));
    };
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Some(error(StatusCode::UNAUTHORIZED, "send the agent token as `Authorization: Bearer <token>`")),
        Some(t) if digest.matches(t.trim()) => None,
        Some(_) => Some(error(StatusCode::UNAUTHORIZED, "wrong agent token")),
    }
}

async fn health(State(b): Backend) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], b.health_json().await).into_response()
}

async fn host_metrics(State(b): Backend, headers: HeaderMap) -> Response {
    if let Some(refused) = check_token(b.as_ref(), &headers, false) {
        return refused;
    }
    Json(b.host_metrics().await).into_response()
}

async fn restart(State(b): Backend, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = check_token(b.as_ref(), &headers, true) {
        return refused;
    }
    match b.restart_container(&id).await {
        Ok(()) => Json(json!({ "restarted": id })).into_response(),
        Err(e) => error(e.status(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_digest_matches_only_the_token() {
        let d = TokenDigest::new("0123456789abcdef");
        assert!(d.matches("0123456789abcdef"));
        assert!(!d.matches("0123456789abcdeF"));
        assert!(!d.matches(""));
        assert_eq!(format!("{d:?}"), "TokenDigest(…)");
    }
}
