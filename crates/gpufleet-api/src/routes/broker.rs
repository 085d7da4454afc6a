//! Broker introspection: per-topic depth, in-flight, lag, redeliveries and dead letters.

use crate::error::ApiError;
use crate::params::Params;
use super::guarded;
use crate::state::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use gpufleet_core::TopicName;
use serde_json::json;

pub(crate) fn router() -> Router<AppState> {
    let r = Router::new();
    let r = guarded(r, "GET", "/api/v1/broker/topics", get(topics));
    
    guarded(r, "GET", "/api/v1/broker/topics/{topic}/dead-letters", get(dead_letters))
}

async fn topics(State(st): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<serde_json::Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let topics = st.broker.stats().await?;
    Ok(Json(json!({ "topics": topics })))
}

async fn dead_letters(State(st): State<AppState>, Path(topic): Path<String>, RawQuery(q): RawQuery) -> Result<Json<serde_json::Value>, ApiError> {
    let p = Params::parse(q.as_deref(), &["limit"])?;
    let limit = p.usize("limit", 1000)?.unwrap_or(100);
    let topic = TopicName::new(&topic);
    if !st.broker.stats().await?.iter().any(|t| t.topic == topic) {
        return Err(ApiError::NotFound(format!("unknown topic {topic}; GET /api/v1/broker/topics lists topics")));
    }
    let letters = st.broker.dead_letters(&topic, limit).await?;
    Ok(Json(json!({ "topic": topic, "count": letters.len(), "dead_letters": letters })))
}
