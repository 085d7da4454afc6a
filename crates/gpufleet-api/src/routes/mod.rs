//! The router: every route in one table ([`ROUTES`]) and the layer stack, outer to inner.

use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use std::time::Duration;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

mod broker;
mod export;
mod gpus;
mod ingest;
mod system;

/// Every route as `(method, path)`. The OpenAPI document must list each (a test checks).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/stats"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/gpus"),
    ("GET", "/api/v1/gpus/{uuid}/telemetry"),
    ("GET", "/api/v1/hosts"),
    ("GET", "/api/v1/hosts/{host}/gpus"),
    ("GET", "/api/v1/telemetry/aggregate"),
    ("POST", "/api/v1/telemetry"),
    ("GET", "/api/v1/telemetry/export"),
    ("GET", "/api/v1/broker/topics"),
    ("GET", "/api/v1/broker/topics/{topic}/dead-letters"),
];

/// Builds the whole HTTP application.
pub fn app(state: AppState) -> Router {
    let limit = state.settings.body_limit_bytes;
    Router::new()
        .merge(system::router())
        .merge(gpus::router())
        .merge(ingest::router())
        .merge(export::router())
        .merge(broker::router())
        .with_state(state)
        // Outer to inner: trace every request, bound its time, bound its body.
        .layer(TraceLayer::new_for_http())
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, Duration::from_secs(60)))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limit))
}

#[cfg(test)]
mod tests;
