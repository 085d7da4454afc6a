//! [`Reply`]: the gateway's answer to one request, before any HTTP server writes it — status,
//! content type, the `Retry-After` and `Location` hints, and a body that is either whole or a
//! [`ReplyStream`] relayed chunk by chunk. The axum router renders it with
//! [`Reply::into_response`]; the API's inference lane writes it to the socket itself.

use crate::error::GatewayError;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

pub use crate::proxy::ReplyStream;

/// `application/json`.
pub const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// An answer of the gateway.
#[derive(Debug)]
pub struct Reply {
    /// Status to send.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: HeaderValue,
    /// `Retry-After` seconds: the request queued behind a deep queue, or was refused by it.
    pub retry_after: Option<u64>,
    /// `Location` (an accepted job's status URL).
    pub location: Option<HeaderValue>,
    /// The body.
    pub body: ReplyBody,
}

/// A reply's body.
// Both variants are common (see `proxy::Answer`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ReplyBody {
    /// Whole.
    Full(Bytes),
    /// Relayed from a backend as it arrives (`Cache-Control: no-cache`, no proxy buffering).
    Stream(ReplyStream),
}

impl Reply {
    /// A whole JSON body.
    pub fn json(status: StatusCode, body: Bytes) -> Self {
        Self { status, content_type: JSON, retry_after: None, location: None, body: ReplyBody::Full(body) }
    }

    /// The reply as an axum response.
    pub fn into_response(self) -> Response {
        let streaming = matches!(self.body, ReplyBody::Stream(_));
        let mut resp = Response::new(match self.body {
            ReplyBody::Full(b) => Body::from(b),
            ReplyBody::Stream(s) => Body::from_stream(s),
        });
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        // Room for the API layer's security headers without regrowing the map.
        h.reserve(10);
        h.insert(header::CONTENT_TYPE, self.content_type);
        if streaming {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(loc) = self.location {
            h.insert(header::LOCATION, loc);
        }
        resp
    }
}

impl From<GatewayError> for Reply {
    fn from(e: GatewayError) -> Self {
        let (status, _, _) = e.kind.status();
        let retry_after = e.retry_after_s;
        Self { retry_after, ..Self::json(status, Bytes::from(e.body_json())) }
    }
}
