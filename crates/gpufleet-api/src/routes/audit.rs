//! The audit log: query (`since`, `actor`, `action`, paging with `before`) and chain verification.

use super::guarded;
use crate::error::ApiError;
use crate::params::Params;
use crate::state::{now_ms, AppState};
use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use gpufleet_auth::AuditFilter;
use gpufleet_core::time::format_rfc3339;
use serde_json::{json, Value};

pub(crate) fn router() -> Router<AppState> {
    let r = Router::new();
    let r = guarded(r, "GET", "/api/v1/audit", get(query));
    guarded(r, "GET", "/api/v1/audit/verify", get(verify))
}

async fn query(State(st): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(q.as_deref(), &["since", "actor", "action", "before", "limit"])?;
    let auth = st.auth.clone().ok_or_else(|| ApiError::BadRequest("authentication is disabled on this server; there is no audit log".into()))?;
    let before_id = p
        .str("before")
        .map(|s| s.parse::<i64>().map_err(|_| ApiError::BadRequest(format!("parameter 'before': {s:?} is not a record id"))))
        .transpose()?;
    let filter = AuditFilter {
        since_ms: p.time("since", now_ms())?,
        actor: p.str("actor").map(str::to_owned),
        action: p.str("action").map(str::to_owned),
        before_id,
        limit: p.usize("limit", AuditFilter::MAX_LIMIT)?.unwrap_or(AuditFilter::DEFAULT_LIMIT),
    };
    auth.audit_log().flush().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let records = auth.store().query_audit(&filter).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let list: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            v["time"] = Value::String(format_rfc3339(r.entry.time_ms));
            v
        })
        .collect();
    let next = records.last().map(|r| r.id);
    Ok(Json(json!({ "count": list.len(), "records": list, "next_before": next })))
}

async fn verify(State(st): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let auth = st.auth.clone().ok_or_else(|| ApiError::BadRequest("authentication is disabled on this server; there is no audit log".into()))?;
    auth.audit_log().flush().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let report = auth.store().audit_chain_verify().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(json!({ "intact": report.first_broken.is_none(), "report": report })))
}
