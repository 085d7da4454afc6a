//! GPU inventory, a host's GPUs, and telemetry queries (the host list is in `fleet.rs`).

use crate::error::ApiError;
use crate::params::Params;
use super::guarded;
use crate::state::{now_ms, AppState};
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gpufleet_core::time::format_rfc3339;
use gpufleet_core::{GpuUuid, HostName, MetricName};
use gpufleet_store::{Agg, AggregateQuery, Cursor, GpuInfo, RangeQuery};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

pub(crate) fn router() -> Router<AppState> {
    let r = Router::new();
    let r = guarded(r, "GET", "/api/v1/gpus", get(list_gpus));
    let r = guarded(r, "GET", "/api/v1/gpus/{uuid}/telemetry", get(telemetry));
    let r = guarded(r, "GET", "/api/v1/hosts/{host}/gpus", get(host_gpus));
    
    guarded(r, "GET", "/api/v1/telemetry/aggregate", get(aggregate))
}

#[derive(Serialize)]
struct Latest {
    ts: String,
    value: f64,
}

#[derive(Serialize)]
struct GpuView {
    uuid: String,
    host: String,
    index: Option<u32>,
    device: String,
    model: String,
    labels: BTreeMap<String, String>,
    first_seen: String,
    last_seen: String,
    last_ingest: String,
    stale: bool,
    latest: BTreeMap<String, Latest>,
}

fn view(g: &GpuInfo, stale_after_ms: i64, now: i64) -> GpuView {
    GpuView {
        uuid: g.desc.uuid.to_string(),
        host: g.desc.host.to_string(),
        index: g.desc.index,
        device: g.desc.device.clone(),
        model: g.desc.model.clone(),
        labels: g.desc.labels.iter().cloned().collect(),
        first_seen: format_rfc3339(g.first_seen_ms),
        last_seen: format_rfc3339(g.last_seen_ms),
        last_ingest: format_rfc3339(g.last_ingest_ms),
        stale: now - g.last_ingest_ms > stale_after_ms,
        latest: g.latest.iter().map(|(m, (ts, v))| (m.to_string(), Latest { ts: format_rfc3339(*ts), value: *v })).collect(),
    }
}

async fn list_gpus(State(st): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<serde_json::Value>, ApiError> {
    let p = Params::parse(q.as_deref(), &["host", "stale"])?;
    let stale = p.one_of("stale", &["true", "false"])?.map(|s| s == "true");
    let now = now_ms();
    let gpus: Vec<GpuView> = st
        .store
        .gpus()
        .await?
        .iter()
        .filter(|g| p.str("host").is_none_or(|h| g.desc.host.as_str() == h))
        .map(|g| view(g, st.settings.stale_after_ms, now))
        .filter(|v| stale.is_none_or(|s| v.stale == s))
        .collect();
    Ok(Json(json!({ "count": gpus.len(), "gpus": gpus })))
}

async fn host_gpus(State(st): State<AppState>, Path(host): Path<String>, RawQuery(q): RawQuery) -> Result<Json<serde_json::Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let now = now_ms();
    let gpus: Vec<GpuView> =
        st.store.gpus().await?.iter().filter(|g| g.desc.host.as_str() == host).map(|g| view(g, st.settings.stale_after_ms, now)).collect();
    if gpus.is_empty() {
        return Err(ApiError::NotFound(format!("no host named {host:?} has reported telemetry; GET /api/v1/hosts lists known hosts")));
    }
    Ok(Json(json!({ "host": host, "count": gpus.len(), "gpus": gpus })))
}

const AGGS: &[&str] = &["avg", "min", "max", "last", "sum", "count"];

fn agg_of(s: Option<&str>) -> Agg {
    match s {
        Some("min") => Agg::Min,
        Some("max") => Agg::Max,
        Some("last") => Agg::Last,
        Some("sum") => Agg::Sum,
        Some("count") => Agg::Count,
        _ => Agg::Avg,
    }
}

fn parse_cursor(s: &str) -> Result<Cursor, ApiError> {
    let bad = || ApiError::BadRequest(format!("parameter 'cursor': {s:?} is not a cursor from a previous answer's next_cursor"));
    let (metric, ts) = s.rsplit_once('@').ok_or_else(bad)?;
    Ok(Cursor { metric: MetricName::new(metric), ts_ms: ts.parse().map_err(|_| bad())? })
}

async fn telemetry(State(st): State<AppState>, Path(uuid): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["metric", "start", "end", "step", "agg", "limit", "cursor", "format"])?;
    let now = now_ms();
    let gpu = st
        .store
        .gpu(&GpuUuid::new(&uuid))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("unknown GPU {uuid:?}; GET /api/v1/gpus lists known GPUs")))?;
    // Without start/end the whole known range of this GPU is used.
    let start = p.time("start", now)?.unwrap_or(gpu.first_seen_ms);
    let end = p.time("end", now)?.unwrap_or(gpu.last_seen_ms + 1);
    if end <= start {
        return Err(ApiError::BadRequest(format!("parameter 'end' ({}) must be after 'start' ({})", format_rfc3339(end), format_rfc3339(start))));
    }
    let metrics: Vec<MetricName> = p.list("metric").iter().map(MetricName::new).collect();
    if let Some(unknown) = metrics.iter().find(|m| !gpu.latest.contains_key(*m)) {
        let known: Vec<_> = gpu.latest.keys().map(|m| m.as_str()).collect();
        return Err(ApiError::BadRequest(format!("parameter 'metric': GPU {uuid} has no metric {unknown}; it has {}", known.join(", "))));
    }
    let step_ms = p.duration_ms("step")?;
    let agg_name = p.one_of("agg", AGGS)?;
    if agg_name.is_some() && step_ms.is_none() {
        return Err(ApiError::BadRequest("parameter 'agg' needs 'step' (the bucket width, e.g. step=1m)".into()));
    }
    let limit = p.usize("limit", st.settings.max_query_points)?.unwrap_or(10_000.min(st.settings.max_query_points));
    let format = p.one_of("format", &["json", "csv"])?.unwrap_or("json");
    let cursor = p.str("cursor").map(parse_cursor).transpose()?;
    let query = RangeQuery {
        uuid: GpuUuid::new(&uuid),
        host: Some(HostName::new(gpu.desc.host.as_str())),
        metrics,
        start_ms: start,
        end_ms: end,
        step_ms,
        agg: agg_of(agg_name),
        limit,
        cursor,
    };
    let result = st.store.query_range(&query).await?;
    let next_cursor = result.next_cursor.as_ref().map(|c| format!("{}@{}", c.metric, c.ts_ms));
    if format == "csv" {
        let mut body = String::from("timestamp,host,gpu_uuid,metric,value\n");
        for s in &result.series {
            for (ts, v) in &s.points {
                body.push_str(&format!("{},{},{},{},{}\n", format_rfc3339(*ts), s.key.host, s.key.uuid, s.key.metric, v));
            }
        }
        let mut resp = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
        if let Some(c) = next_cursor.and_then(|c| c.parse().ok()) {
            resp.headers_mut().insert("x-next-cursor", c);
        }
        return Ok(resp);
    }
    let series: Vec<_> = result.series.iter().map(|s| json!({ "metric": s.key.metric, "points": s.points })).collect();
    Ok(Json(json!({
        "gpu": uuid,
        "host": gpu.desc.host,
        "start": format_rfc3339(start),
        "end": format_rfc3339(end),
        "step_ms": step_ms,
        "agg": step_ms.map(|_| agg_name.unwrap_or("avg")),
        "series": series,
        "next_cursor": next_cursor,
    }))
    .into_response())
}

async fn aggregate(State(st): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<serde_json::Value>, ApiError> {
    let p = Params::parse(q.as_deref(), &["metric", "agg", "start", "end", "host"])?;
    let now = now_ms();
    let metric = p.str("metric").ok_or_else(|| ApiError::BadRequest("parameter 'metric' is required (e.g. DCGM_FI_DEV_GPU_UTIL)".into()))?;
    let start = p.time("start", now)?.unwrap_or(0);
    let end = p.time("end", now)?.unwrap_or(i64::MAX);
    if end <= start {
        return Err(ApiError::BadRequest("parameter 'end' must be after 'start'".into()));
    }
    let agg_name = p.one_of("agg", AGGS)?.unwrap_or("avg");
    let rows = st
        .store
        .aggregate(&AggregateQuery {
            metric: MetricName::new(metric),
            host: p.str("host").map(HostName::new),
            start_ms: start,
            end_ms: end,
            agg: agg_of(Some(agg_name)),
        })
        .await?;
    let out: Vec<_> = rows.iter().map(|r| json!({ "host": r.key.host, "gpu_uuid": r.key.uuid, "value": r.value, "count": r.count })).collect();
    Ok(Json(json!({ "metric": metric, "agg": agg_name, "count": out.len(), "series": out })))
}
