//! The security middleware: response security headers and request ids on every answer
//! ([`headers`]), and on every matched route ([`guard`]) the route's [`Guard`] from the one table:
//! allowlist, rate limits, API key, permission — then, for a request that can change state
//! ([`crate::routes::audited`]: every non-GET except inference calls), an audit record with its
//! outcome. Refusals are audited by the `AuthService` itself.

use crate::routes::{guard_of, Guard};
use crate::state::{now_ms, AppState};
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, State};
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gpufleet_auth::{Access, AccessRequest, AuthError, Outcome};
use serde_json::json;
use std::net::SocketAddr;

/// The request id of a request (taken from a well-formed `X-Request-Id`, else generated).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub(crate) fn request_id<B>(req: &Request<B>) -> String {
    IdBuf::of(req.headers().get("x-request-id").and_then(|v| v.to_str().ok())).as_str().to_owned()
}

/// A request id without allocating: the client's `X-Request-Id` when it is a sane one (1 to 64
/// of `[A-Za-z0-9_-]`), else 16 random hex digits.
pub(crate) struct IdBuf {
    buf: [u8; 64],
    len: usize,
}

impl IdBuf {
    pub(crate) fn of(given: Option<&str>) -> Self {
        let mut buf = [0u8; 64];
        match given {
            Some(id) if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {
                buf[..id.len()].copy_from_slice(id.as_bytes());
                Self { buf, len: id.len() }
            }
            _ => {
                let mut n = rand::random::<u64>();
                for b in buf[..16].iter_mut().rev() {
                    *b = b"0123456789abcdef"[(n & 15) as usize];
                    n >>= 4;
                }
                Self { buf, len: 16 }
            }
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII is ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// Adds the request id and security headers to every response (CORS is off: no CORS headers).
pub(crate) async fn headers(mut req: Request<Body>, next: Next) -> Response {
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    secure(&mut resp, &id);
    resp
}

/// The security headers of every answer (name, value), in one list: [`secure`] sets them on the
/// router's answers, the inference lane writes them as bytes (`lane::write`). A page may set its
/// own `content-security-policy`.
pub(crate) const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("cache-control", "no-store"),
];

/// Sets the request id and [`SECURITY_HEADERS`] on an answer (a page may set its own CSP).
pub(crate) fn secure(resp: &mut Response, id: &str) {
    // Names as constants: a `&str` name is parsed and validated on every insert.
    const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    const fn one(i: usize) -> (HeaderName, HeaderValue) {
        (HeaderName::from_static(SECURITY_HEADERS[i].0), HeaderValue::from_static(SECURITY_HEADERS[i].1))
    }
    const HEADERS: [(HeaderName, HeaderValue); 5] = [one(0), one(1), one(2), one(3), one(4)];
    let h = resp.headers_mut();
    h.reserve(6);
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert(REQUEST_ID, v);
    }
    for (name, value) in HEADERS {
        if name == header::CONTENT_SECURITY_POLICY {
            h.entry(name).or_insert(value);
        } else {
            h.insert(name, value);
        }
    }
}

/// Checks the matched route's guard; audits mutating requests once their outcome is known.
pub(crate) async fn guard(State(st): State<AppState>, mut req: Request<Body>, next: Next) -> Response {
    let Some(route) = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()) else {
        return next.run(req).await;
    };
    let method = req.method().clone();
    let (permission, class) = match guard_of(method.as_str(), &route) {
        Some(Guard::Public) => return next.run(req).await,
        Some(Guard::Metrics) if st.settings.metrics_public => return next.run(req).await,
        Some(Guard::Metrics) => (gpufleet_auth::Permission::MetricsRead, gpufleet_auth::LimitClass::Telemetry),
        Some(Guard::Need(p, c)) => (p, c),
        // A declared path with another method: no handler exists, the router answers 405.
        None if crate::routes::ROUTES.iter().any(|r| r.path == route) => return next.run(req).await,
        // `guarded` makes this unreachable; refuse rather than serve an undeclared route.
        None => return refuse(StatusCode::FORBIDDEN, "route has no declared permission", None),
    };
    let Some(auth) = st.auth.clone() else {
        return next.run(req).await; // authentication explicitly disabled (benchmarks)
    };
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0);
    let rid = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let xff = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let credential = req.headers().get(header::AUTHORIZATION).or_else(|| req.headers().get("x-api-key")).map(|v| v.as_bytes().to_vec());
    let target = req.uri().path().to_owned();
    let access_req = AccessRequest {
        peer,
        x_forwarded_for: xff.as_deref(),
        credential: credential.as_deref(),
        class,
        permission,
        method: method.as_str(),
        route: &route,
        request_id: rid.as_deref(),
    };
    let access: Access = match auth.check_access(&access_req, now_ms()).await {
        Ok(a) => a,
        Err(e) => return auth_error(&e),
    };
    let mutating = crate::routes::audited(method.as_str(), &route);
    // The gateway refuses models outside the key's allowed list.
    req.extensions_mut().insert(gpufleet_gateway::CallerModels(access.identity.allowed_models.as_ref().map(|m| m.to_vec())));
    req.extensions_mut().insert(access.clone());
    let resp = next.run(req).await;
    if mutating {
        let outcome = if resp.status().is_success() { Outcome::Success } else { Outcome::Failed };
        let entry = access.audit_entry(&access_req, "request", &target, outcome, now_ms());
        if let Err(e) = auth.audit(entry).await {
            tracing::error!(error = %e, "audit record could not be queued");
        }
    }
    resp
}

pub(crate) fn auth_error(e: &AuthError) -> Response {
    let status = StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::FORBIDDEN);
    let hint = match status {
        StatusCode::UNAUTHORIZED => " (send `Authorization: Bearer <key>`; `gpufleet keys create` makes keys)",
        _ => "",
    };
    refuse(status, &format!("{e}{hint}"), e.retry_after().map(|r| r.header_secs()))
}

fn refuse(status: StatusCode, message: &str, retry_after: Option<u64>) -> Response {
    let code = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "refused",
    };
    let mut resp = (status, Json(json!({ "error": { "message": message, "code": code } }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(secs) = retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}
