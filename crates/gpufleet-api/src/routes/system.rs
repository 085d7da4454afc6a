//! Liveness, readiness, stats, Prometheus metrics and the OpenAPI document.

use crate::error::ApiError;
use crate::prom;
use super::guarded;
use crate::state::{now_ms, AppState};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub(crate) fn router() -> Router<AppState> {
    let r = Router::new();
    let r = guarded(r, "GET", "/health", get(health));
    let r = guarded(r, "GET", "/ready", get(ready));
    let r = guarded(r, "GET", "/stats", get(stats));
    let r = guarded(r, "GET", "/metrics", get(metrics));
    
    guarded(r, "GET", "/api/v1/openapi.json", get(openapi))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the broker answers, the store's own check passes (PostgreSQL: reachable and the
/// current month's telemetry partition exists), no worker is stopped, and (with a fleet) the
/// current month's host metrics partition exists.
async fn ready(State(st): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = st.broker.stats().await {
        problems.push(format!("broker: {e}"));
    }
    match st.store.health(now_ms()).await {
        Ok(h) => problems.extend(h.problems.into_iter().map(|p| format!("store: {p}"))),
        Err(e) => problems.push(format!("store: {e}")),
    }
    if let Some(w) = &st.workers {
        for s in w.snapshot().iter().filter(|s| !s.running) {
            problems.push(format!("worker {} is not running", s.name));
        }
    }
    if let Some(fleet) = &st.fleet {
        problems.extend(fleet.partition_problem(now_ms()).await.map(|p| format!("fleet: {p}")));
    }
    if problems.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not ready", "problems": problems }))).into_response()
    }
}

async fn stats(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let store = st.store.stats().await?;
    let store_health = st.store.health(now_ms()).await?;
    let broker = st.broker.stats().await?;
    let m = &st.metrics;
    let workers = st.workers.as_ref().map(|w| w.snapshot()).unwrap_or_default();
    Ok(Json(json!({
        "ingest": {
            "rows_accepted": m.rows_accepted.get(),
            "rows_rejected": m.rows_rejected.get(),
            "samples_published": m.samples_published.get(),
        },
        "collectors": {
            "samples_stored": m.samples_stored.get(),
            "samples_duplicate": m.samples_duplicate.get(),
            "messages_undecodable": m.messages_undecodable.get(),
            "store_write_failures": m.store_write_failures.get(),
        },
        "store": store,
        "store_problems": store_health.problems,
        "broker": broker,
        "workers": workers,
    })))
}

async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let body = prom::render(&st).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(crate) const OPENAPI: &str = include_str!("../openapi.json");
