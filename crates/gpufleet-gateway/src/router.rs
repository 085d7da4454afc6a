//! [`router`]: the gateway's HTTP routes, listed in [`GATEWAY_ROUTES`] so the integrator can
//! declare who may call each. Handlers only extract and delegate to [`Gateway`]. Authentication is
//! the API layer's job; it may insert a [`CallerModels`] extension to restrict models.

use crate::error::{ErrorKind, GatewayError};
use crate::proxy::Endpoint;
use crate::request::CallerModels;
use crate::Gateway;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Every route of [`router`] as (method, path pattern).
pub const GATEWAY_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/{id}"),
    ("GET", "/api/v1/gateway/backends"),
    ("GET", "/api/v1/dlq"),
    ("GET", "/api/v1/dlq/{id}"),
    ("POST", "/api/v1/dlq/{id}/retry"),
    ("DELETE", "/api/v1/dlq/{id}"),
];

type Gw = State<Arc<Gateway>>;
type Caller = Option<Extension<CallerModels>>;

fn caller(c: Caller) -> CallerModels {
    c.map(|Extension(c)| c).unwrap_or_default()
}

/// The gateway's routes (see [`GATEWAY_ROUTES`]).
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/jobs", post(submit_job))
        .route("/v1/jobs/{id}", get(job))
        .route("/api/v1/gateway/backends", get(backends))
        .route("/api/v1/dlq", get(dlq_list))
        .route("/api/v1/dlq/{id}", get(dlq_get).delete(dlq_discard))
        .route("/api/v1/dlq/{id}/retry", post(dlq_retry))
        .with_state(gw)
}

async fn chat(State(gw): Gw, c: Caller, headers: HeaderMap, body: Body) -> Response {
    gw.serve(Endpoint::Chat, &headers, body, &caller(c)).await
}

async fn completions(State(gw): Gw, c: Caller, headers: HeaderMap, body: Body) -> Response {
    gw.serve(Endpoint::Completions, &headers, body, &caller(c))
        .await
}

async fn embeddings(State(gw): Gw, c: Caller, headers: HeaderMap, body: Body) -> Response {
    gw.serve(Endpoint::Embeddings, &headers, body, &caller(c))
        .await
}

async fn submit_job(State(gw): Gw, c: Caller, headers: HeaderMap, body: Body) -> Response {
    gw.serve_job(&headers, body, &caller(c)).await
}

async fn models(State(gw): Gw, c: Caller) -> Response {
    let c = caller(c);
    let data: Vec<_> = gw
        .models()
        .into_iter()
        .filter(|m| c.allows(&m.id, m.alias_of.as_deref().unwrap_or(&m.id)))
        .map(|m| json!({ "id": m.id, "object": "model", "created": 0, "owned_by": "gpufleet", "alias_of": m.alias_of, "backends": m.backends }))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

async fn job(State(gw): Gw, Path(id): Path<String>) -> Result<Response, GatewayError> {
    match gw.job(&id).await? {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(GatewayError::downstream(
            ErrorKind::NotFound,
            format!("no job {id:?} (unknown or expired)"),
        )),
    }
}

async fn backends(State(gw): Gw) -> Response {
    Json(json!({ "backends": gw.backends(), "queue_depth": gw.queue_depth() })).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn dlq_list(State(gw): Gw, Query(q): Query<ListQuery>) -> Result<Response, GatewayError> {
    let items = gw.dlq_list(q.limit.unwrap_or(100).min(1000)).await?;
    Ok(Json(json!({ "dead_letters": items })).into_response())
}

async fn dlq_get(State(gw): Gw, Path(id): Path<String>) -> Result<Response, GatewayError> {
    Ok(Json(gw.dlq_get(&id).await?).into_response())
}

async fn dlq_retry(State(gw): Gw, Path(id): Path<String>) -> Result<Response, GatewayError> {
    let job_id = gw.dlq_retry(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job_id, "status": "queued" })),
    )
        .into_response())
}

async fn dlq_discard(State(gw): Gw, Path(id): Path<String>) -> Result<Response, GatewayError> {
    gw.dlq_discard(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
