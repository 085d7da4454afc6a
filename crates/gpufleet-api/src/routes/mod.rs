//! The router: every route in one table ([`ROUTES`]) with the permission and rate-limit budget it
//! needs, and the layer stack, outer to inner.
//!
//! Modules add routes only through [`guarded`], which refuses (panics at start-up, caught by
//! every test) a route that has no entry in [`ROUTES`] — so no route can exist without declaring
//! who may call it.

use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::MethodRouter;
use axum::Router;
use gpufleet_auth::{LimitClass, Permission};
use std::time::Duration;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

mod audit;
mod broker;
mod export;
mod fleet;
mod insight;
mod gpus;
mod ingest;
mod keys;
mod system;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Anyone (liveness and readiness probes).
    Public,
    /// `/metrics`: public unless `metrics_public` is off, then `MetricsRead`.
    Metrics,
    /// A key whose role has the permission; requests count against the budget.
    Need(Permission, LimitClass),
}

/// One route of the API.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: &'static str,
    /// Path pattern as axum matches it.
    pub path: &'static str,
    /// Who may call it.
    pub guard: Guard,
}

const fn r(method: &'static str, path: &'static str, guard: Guard) -> RouteSpec {
    RouteSpec { method, path, guard }
}

use Guard::{Metrics, Need, Public};
use LimitClass::{Inference as I, Management as M, Telemetry as T};
use Permission::*;

/// Every route with its guard. The OpenAPI document must list each (a test checks).
pub const ROUTES: &[RouteSpec] = &[
    r("GET", "/health", Public),
    r("GET", "/ready", Public),
    r("GET", "/metrics", Metrics),
    r("GET", "/stats", Need(MetricsRead, T)),
    r("GET", "/api/v1/openapi.json", Need(TelemetryRead, T)),
    r("GET", "/api/v1/gpus", Need(TelemetryRead, T)),
    r("GET", "/api/v1/gpus/{uuid}/telemetry", Need(TelemetryRead, T)),
    r("GET", "/api/v1/hosts/{host}/gpus", Need(TelemetryRead, T)),
    r("GET", "/api/v1/telemetry/aggregate", Need(TelemetryRead, T)),
    r("POST", "/api/v1/telemetry", Need(TelemetryWrite, T)),
    r("GET", "/api/v1/telemetry/export", Need(TelemetryRead, T)),
    r("GET", "/api/v1/broker/topics", Need(BrokerRead, T)),
    r("GET", "/api/v1/broker/topics/{topic}/dead-letters", Need(BrokerRead, T)),
    r("POST", "/api/v1/keys", Need(KeysManage, M)),
    r("GET", "/api/v1/keys", Need(KeysManage, M)),
    r("DELETE", "/api/v1/keys/{prefix}", Need(KeysManage, M)),
    r("POST", "/api/v1/keys/{prefix}/rotate", Need(KeysManage, M)),
    r("GET", "/api/v1/audit", Need(AuditRead, M)),
    r("GET", "/api/v1/audit/verify", Need(AuditRead, M)),
    // The inference gateway (routes built by `gpufleet-gateway`, guarded here).
    r("POST", "/v1/chat/completions", Need(GatewayUse, I)),
    r("POST", "/v1/completions", Need(GatewayUse, I)),
    r("POST", "/v1/embeddings", Need(GatewayUse, I)),
    r("GET", "/v1/models", Need(GatewayUse, I)),
    r("POST", "/v1/jobs", Need(GatewayUse, I)),
    r("GET", "/v1/jobs/{id}", Need(GatewayUse, I)),
    r("GET", "/api/v1/gateway/backends", Need(FleetRead, T)),
    r("GET", "/api/v1/dlq", Need(BrokerRead, M)),
    r("GET", "/api/v1/dlq/{id}", Need(BrokerRead, M)),
    r("POST", "/api/v1/dlq/{id}/retry", Need(DlqManage, M)),
    r("DELETE", "/api/v1/dlq/{id}", Need(DlqManage, M)),
    // The fleet registry and health (`{id}`: a host id or name). Host writes count against the
    // telemetry budget, not the management one (30/min): `sim fleet --register` and provisioning
    // tools register hundreds of hosts at once.
    r("GET", "/api/v1/hosts", Need(FleetRead, T)),
    r("POST", "/api/v1/hosts", Need(FleetWrite, T)),
    r("GET", "/api/v1/hosts/{id}", Need(FleetRead, T)),
    r("PUT", "/api/v1/hosts/{id}", Need(FleetWrite, T)),
    r("DELETE", "/api/v1/hosts/{id}", Need(FleetWrite, T)),
    r("GET", "/api/v1/hosts/{id}/health", Need(FleetRead, T)),
    r("GET", "/api/v1/fleet/summary", Need(FleetRead, T)),
    r("GET", "/api/v1/fleet/workers/status", Need(FleetRead, T)),
    r("GET", "/api/v1/fleet/events", Need(FleetRead, T)),
    // Scores, trends, alerts and silences (`gpufleet-insight`).
    r("GET", "/api/v1/hosts/{id}/score", Need(FleetRead, T)),
    r("GET", "/api/v1/hosts/{id}/trends", Need(FleetRead, T)),
    r("GET", "/api/v1/fleet/score", Need(FleetRead, T)),
    r("GET", "/api/v1/alerts", Need(FleetRead, T)),
    r("GET", "/api/v1/silences", Need(FleetRead, T)),
    r("POST", "/api/v1/silences", Need(FleetWrite, T)),
    r("DELETE", "/api/v1/silences/{id}", Need(FleetWrite, T)),
];

/// Inference calls: POSTs that change nothing in gpufleet (the answer is the model's). They are
/// counted in the gateway's metrics, not written to the audit log, which would otherwise grow by
/// every completion. Job submission (`POST /v1/jobs`) creates state and is audited.
const NOT_AUDITED: &[(&str, &str)] = &[("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings")];

/// Whether a successful guard check must be followed by an audit record: every method that can
/// change state, except the inference calls.
pub fn audited(method: &str, path: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS") && !NOT_AUDITED.contains(&(method, path))
}

/// The guard of a matched route.
pub fn guard_of(method: &str, path: &str) -> Option<Guard> {
    ROUTES.iter().find(|r| r.method == method && r.path == path).map(|r| r.guard)
}

/// Adds a route that must be declared in [`ROUTES`] with this method.
pub(crate) fn guarded(router: Router<AppState>, method: &'static str, path: &'static str, handler: MethodRouter<AppState>) -> Router<AppState> {
    assert!(guard_of(method, path).is_some(), "route {method} {path} has no entry in ROUTES: declare who may call it");
    router.route(path, handler)
}

/// Builds the whole HTTP application.
pub fn app(state: AppState) -> Router {
    let limit = state.settings.body_limit_bytes;
    let api = Router::new()
        .merge(system::router())
        .merge(gpus::router())
        .merge(fleet::router())
        .merge(insight::router())
        .merge(ingest::router())
        .merge(export::router())
        .merge(broker::router())
        .merge(keys::router())
        .merge(audit::router())
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, Duration::from_secs(60)));
    // The gateway has its own body limits and timeouts (queue wait, first byte), and streams.
    let routes = match &state.gateway {
        Some(gw) => api.merge(gpufleet_gateway::router(gw.clone()).with_state(())),
        None => api,
    };
    // Outer to inner: trace, security headers + request id, then on matched routes one guard
    // (allowlist, rate limit, key, permission, audit of changes; it needs the matched route).
    routes
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::guard))
        .layer(axum::middleware::from_fn(crate::auth::headers))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[cfg(test)]
mod tests;
