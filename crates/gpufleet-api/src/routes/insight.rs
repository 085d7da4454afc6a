//! What the fleet's numbers mean: a host's score card and the fleet score, trends with a
//! projection, alerts, and silences. Thin handlers over [`gpufleet_insight::Insight`].

use super::guarded;
use crate::error::ApiError;
use crate::params::Params;
use crate::state::{now_ms, AppState};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use gpufleet_auth::Access;
use gpufleet_insight::alert::{AlertError, AlertQuery, NewSilence};
use gpufleet_insight::{Insight, InsightError, TrendQuery};
use serde_json::Value;
use std::sync::Arc;

pub(crate) fn router() -> Router<AppState> {
    let r = Router::new();
    let r = guarded(r, "GET", "/api/v1/hosts/{id}/score", get(host_score));
    let r = guarded(r, "GET", "/api/v1/hosts/{id}/trends", get(trends));
    let r = guarded(r, "GET", "/api/v1/fleet/score", get(fleet_score));
    let r = guarded(r, "GET", "/api/v1/alerts", get(alerts));
    let r = guarded(r, "GET", "/api/v1/silences", get(silences).post(create_silence));
    guarded(r, "DELETE", "/api/v1/silences/{id}", delete(delete_silence))
}

fn insight(st: &AppState) -> Result<Arc<Insight>, ApiError> {
    st.insight.clone().ok_or_else(|| ApiError::NotFound("fleet health is not running on this server (the fleet role is off)".into()))
}

fn insight_error(e: InsightError) -> ApiError {
    match e {
        InsightError::HostNotFound(id) => ApiError::NotFound(format!("no host {id:?}: use a registered host id or name (GET /api/v1/hosts)")),
        InsightError::Invalid { field, reason } => ApiError::BadRequest(format!("{field}: {reason}")),
        other => ApiError::Internal(other.to_string()),
    }
}

fn alert_error(e: AlertError) -> ApiError {
    match e {
        AlertError::InvalidSilence { .. } => ApiError::BadRequest(e.to_string()),
        AlertError::SilenceNotFound(_) => ApiError::NotFound(e.to_string()),
        other => ApiError::Internal(other.to_string()),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<Json<Value>, ApiError> {
    serde_json::to_value(v).map(Json).map_err(|e| ApiError::Internal(e.to_string()))
}

/// A query string deserialised strictly (unknown parameters are named in the error).
fn query<T: serde::de::DeserializeOwned>(raw: Option<String>) -> Result<T, ApiError> {
    let raw = raw.unwrap_or_default();
    serde_urlencoded::from_str(&raw).map_err(|e| ApiError::BadRequest(format!("query: {e}")))
}

async fn host_score(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    json(&insight(&st)?.host_score(&id, now_ms()).await.map_err(insight_error)?)
}

async fn fleet_score(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    json(&insight(&st)?.fleet_score(now_ms()).await.map_err(insight_error)?)
}

async fn trends(State(st): State<AppState>, Path(id): Path<String>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let q: TrendQuery = query(raw)?;
    json(&insight(&st)?.trends(&id, &q, now_ms()).await.map_err(insight_error)?)
}

async fn alerts(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let q: AlertQuery = query(raw)?;
    json(&insight(&st)?.alerts().alerts(&q).await.map_err(alert_error)?)
}

async fn silences(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(raw.as_deref(), &["expired"])?;
    let expired = match p.str("expired") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("expired: {other:?} must be true or false"))),
    };
    json(&insight(&st)?.alerts().silences(now_ms(), expired))
}

async fn create_silence(State(st): State<AppState>, access: Option<Extension<Access>>, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut req: NewSilence = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("silence body: {e} (send {{\"matchers\":[{{\"label\":\"host\",\"value\":\"gpu-01\"}}],\"duration\":\"2h\",\"comment\":\"…\"}})")))?;
    req.created_by = access.map_or_else(|| "anonymous".to_owned(), |Extension(a)| a.identity.owner.to_string());
    let s = insight(&st)?.alerts().create_silence(req, now_ms()).await.map_err(alert_error)?;
    Ok((StatusCode::CREATED, json(&s)?))
}

async fn delete_silence(State(st): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    insight(&st)?.alerts().delete_silence(&id).await.map_err(alert_error)?;
    Ok(StatusCode::NO_CONTENT)
}
