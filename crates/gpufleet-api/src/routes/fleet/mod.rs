//! The host registry and fleet health: hosts CRUD (`{id}` is a host id or name), a host's health
//! history, the fleet summary, the fleet workers' status and state-change events. Thin handlers
//! over [`gpufleet_fleet::Fleet`].
//!
//! `GET /api/v1/hosts` lists the registered hosts merged with the hosts that reported GPU
//! telemetry: a registered host carries its GPU counts when it reported any; a host known only
//! from telemetry is listed with `"registered": false` (left out when a registry filter is given).

use super::guarded;
use crate::error::ApiError;
use crate::params::Params;
use crate::state::{now_ms, AppState};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use gpufleet_core::time::format_rfc3339;
use gpufleet_fleet::{CheckResult, EventQuery, Fleet, HistoryQuery, Host, HostFilter, HostInput, HostPatch, HostState, HostStatus, StateChange};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most history rows or events one request returns.
const MAX_LIMIT: usize = 10_000;

pub(crate) fn router() -> Router<AppState> {
    let r = Router::new();
    let r = guarded(r, "GET", "/api/v1/hosts", get(list_hosts));
    let r = guarded(r, "POST", "/api/v1/hosts", post(create_host));
    let r = guarded(r, "GET", "/api/v1/hosts/{id}", get(get_host));
    let r = guarded(r, "PUT", "/api/v1/hosts/{id}", axum::routing::put(update_host));
    let r = guarded(r, "DELETE", "/api/v1/hosts/{id}", axum::routing::delete(delete_host));
    let r = guarded(r, "GET", "/api/v1/hosts/{id}/health", get(host_health));
    let r = guarded(r, "GET", "/api/v1/fleet/summary", get(summary));
    let r = guarded(r, "GET", "/api/v1/fleet/workers/status", get(workers_status));
    guarded(r, "GET", "/api/v1/fleet/events", get(events))
}

fn fleet(st: &AppState) -> Result<Arc<Fleet>, ApiError> {
    st.fleet.clone().ok_or_else(|| ApiError::NotFound("the fleet registry is not enabled on this server ([fleet] in the config)".into()))
}

fn time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |t| Value::String(format_rfc3339(t)))
}

pub(crate) fn host_json(h: &Host) -> Value {
    json!({
        "id": h.id,
        "name": h.name,
        "host": h.name,
        "registered": true,
        "address": h.address,
        "agent_url": h.agent_url,
        "groups": h.groups,
        "tags": h.tags,
        "status": h.status,
        "maintenance": h.status == HostStatus::Maintenance,
        "watchdog": h.watchdog,
        "state": h.state,
        "last_seen": time(h.last_seen_ms),
        "last_check": time(h.last_check_ms),
        "consecutive_failures": h.consecutive_failures,
        "created_at": format_rfc3339(h.created_ms),
        "updated_at": format_rfc3339(h.updated_ms),
    })
}

fn check_json(c: &CheckResult) -> Value {
    json!({
        "at": format_rfc3339(c.at_ms),
        "state": c.state,
        "latency_ms": c.latency_ms,
        "error": c.error,
        "consecutive_failures": c.consecutive_failures,
        "components": c.components,
    })
}

fn event_json(e: &StateChange) -> Value {
    json!({ "id": e.id, "host_id": e.host_id, "host": e.host, "at": format_rfc3339(e.at_ms), "from": e.from, "to": e.to, "reason": e.reason })
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

/// GPU counts per host from telemetry: `(gpus, stale gpus, last sample)`.
async fn telemetry_hosts(st: &AppState) -> Result<BTreeMap<String, (usize, usize, i64)>, ApiError> {
    let now = now_ms();
    let mut hosts: BTreeMap<String, (usize, usize, i64)> = BTreeMap::new();
    for g in st.store.gpus().await? {
        let e = hosts.entry(g.desc.host.to_string()).or_default();
        e.0 += 1;
        e.1 += usize::from(now - g.last_ingest_ms > st.settings.stale_after_ms);
        e.2 = e.2.max(g.last_seen_ms);
    }
    Ok(hosts)
}

async fn list_hosts(State(st): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(q.as_deref(), &["group", "status", "state"])?;
    let status = p.str("status").map(|s| s.parse::<HostStatus>().map_err(|e| ApiError::BadRequest(format!("parameter 'status': {e}")))).transpose()?;
    let state = p.str("state").map(|s| s.parse::<HostState>().map_err(|e| ApiError::BadRequest(format!("parameter 'state': {e}")))).transpose()?;
    let filtered = status.is_some() || state.is_some() || p.str("group").is_some();
    let mut telemetry = telemetry_hosts(&st).await?;
    let mut list = Vec::new();
    if let Some(fleet) = &st.fleet {
        let filter = HostFilter { group: p.str("group").map(str::to_owned), status, states: state.map(|s| vec![s]), ..Default::default() };
        for h in fleet.hosts(&filter).await? {
            let mut v = host_json(&h);
            let (gpus, stale, last) = telemetry.remove(&h.name).unwrap_or_default();
            v["gpus"] = json!(gpus);
            v["stale_gpus"] = json!(stale);
            v["last_telemetry"] = time((gpus > 0).then_some(last));
            list.push(v);
        }
    }
    if !filtered {
        for (host, (gpus, stale, last)) in telemetry {
            list.push(json!({
                "name": host, "host": host, "registered": false,
                "gpus": gpus, "stale_gpus": stale, "last_seen": format_rfc3339(last), "last_telemetry": format_rfc3339(last),
            }));
        }
    }
    Ok(Json(json!({ "count": list.len(), "hosts": list })))
}

async fn create_host(State(st): State<AppState>, bytes: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input: HostInput = body(&bytes)?;
    let host = fleet(&st)?.register(&input).await?;
    Ok((StatusCode::CREATED, Json(host_json(&host))))
}

async fn get_host(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let fleet = fleet(&st)?;
    let host = fleet.resolve(&id).await?;
    let mut v = host_json(&host);
    let last = fleet.store().health_history(host.id, &HistoryQuery { since_ms: None, limit: 1 }).await?;
    v["last_check_result"] = last.first().map_or(Value::Null, check_json);
    Ok(Json(v))
}

async fn update_host(State(st): State<AppState>, Path(id): Path<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let patch: HostPatch = body(&bytes)?;
    if patch.is_empty() {
        return Err(ApiError::BadRequest("body: give at least one field to change (name, address, agent_url, groups, tags, maintenance, status, watchdog)".into()));
    }
    Ok(Json(host_json(&fleet(&st)?.update(&id, &patch).await?)))
}

async fn delete_host(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let host = fleet(&st)?.remove(&id).await?;
    Ok(Json(json!({ "deleted": host_json(&host) })))
}

async fn host_health(State(st): State<AppState>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(q.as_deref(), &["limit", "since"])?;
    let query = HistoryQuery { since_ms: p.time("since", now_ms())?, limit: p.usize("limit", MAX_LIMIT)?.unwrap_or(100) };
    let (host, checks) = fleet(&st)?.history(&id, &query).await?;
    let checks: Vec<Value> = checks.iter().map(check_json).collect();
    Ok(Json(json!({ "host": host_json(&host), "count": checks.len(), "checks": checks })))
}

async fn summary(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let fleet = fleet(&st)?;
    let mut v = serde_json::to_value(fleet.summary().await?).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["partition_problem"] = json!(fleet.partition_problem(now_ms()).await);
    Ok(Json(v))
}

async fn workers_status(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let workers: Vec<Value> = fleet(&st)?
        .workers_status()
        .into_iter()
        .map(|w| {
            let last_run = time(w.last_run_ms);
            let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
            v["last_run"] = last_run;
            v
        })
        .collect();
    Ok(Json(json!({ "workers": workers })))
}

async fn events(State(st): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(q.as_deref(), &["host", "since", "limit"])?;
    let fleet = fleet(&st)?;
    // An id is taken as is (events outlive deleted hosts); a name must be registered.
    let host_id = match p.str("host") {
        Some(h) => match h.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => Some(fleet.resolve(h).await?.id),
        },
        None => None,
    };
    let query = EventQuery { host_id, since_ms: p.time("since", now_ms())?, limit: p.usize("limit", MAX_LIMIT)?.unwrap_or(100) };
    let events: Vec<Value> = fleet.events(&query).await?.iter().map(event_json).collect();
    Ok(Json(json!({ "count": events.len(), "events": events })))
}

#[cfg(test)]
mod tests;
