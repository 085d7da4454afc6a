//! [`ApiError`]: every failure a handler can return, mapped to an HTTP status in one `match`.
//! 4xx carry a message that says what to fix; 5xx are generic to the client and logged in full.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gpufleet_broker::BrokerError;
use gpufleet_fleet::FleetError;
use gpufleet_store::StoreError;
use gpufleet_telemetry::ingest::IngestError;
use serde_json::json;
use thiserror::Error;

/// A handler failure.
#[derive(Debug, Error)]
pub enum ApiError {
    /// A parameter or body the client must fix.
    #[error("{0}")]
    BadRequest(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what exists (a duplicate name).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The content type is not one we accept.
    #[error("{0}")]
    UnsupportedMedia(String),
    /// A backend is down; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else; logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidQuery(m) => ApiError::BadRequest(m),
            e if e.is_retryable() => ApiError::Unavailable(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::InvalidName(_) => ApiError::BadRequest(e.to_string()),
            e if e.is_retryable() => ApiError::Unavailable(e.to_string()),
            BrokerError::Closed => ApiError::Unavailable(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::BadBody(m) => ApiError::BadRequest(m),
            IngestError::Broker(b) => b.into(),
        }
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::Invalid { .. } => ApiError::BadRequest(e.to_string()),
            FleetError::DuplicateName(_) => ApiError::Conflict(e.to_string()),
            FleetError::NotFound(_) => ApiError::NotFound(e.to_string()),
            e if e.is_retryable() => ApiError::Unavailable(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::UnsupportedMedia(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                "internal error; see the server log".to_owned()
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "backend unavailable");
                format!("temporarily unavailable, retry later: {detail}")
            }
            other => other.to_string(),
        };
        let mut resp = (status, Json(json!({ "error": { "message": message, "code": code } }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        resp
    }
}
