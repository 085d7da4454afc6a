//! `POST /api/v1/telemetry`: CSV (with header) or JSON lines in, one durable broker message out.
//!
//! Headers: `Content-Type: text/csv` or `application/x-ndjson`; optional `X-Gpufleet-First-Line`
//! (physical line number of the body's first data row in the original file, so reported errors
//! point into the file; default 2 for CSV, 1 for JSON lines) and `X-Gpufleet-Host` (host for wide
//! CSV rows that carry none) and `X-Gpufleet-Time-Offset-Ms` (added to every timestamp; looped
//! replays). The answer lists rejected rows with line and reason; the good rows
//! are durable when it arrives.

use crate::error::ApiError;
use super::guarded;
use crate::state::{now_ms, AppState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use gpufleet_telemetry::ingest::{self, IngestReport};
use gpufleet_telemetry::source::DecodeOptions;

pub(crate) fn router() -> Router<AppState> {
    let r = Router::new();
    
    guarded(r, "POST", "/api/v1/telemetry", post(ingest_telemetry))
}

async fn ingest_telemetry(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<(StatusCode, Json<IngestReport>), ApiError> {
    let ctype = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let first_line = match headers.get("x-gpufleet-first-line") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::BadRequest("header X-Gpufleet-First-Line must be a line number >= 1".into()))?,
        ),
    };
    let default_host = headers
        .get("x-gpufleet-host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| st.settings.default_host.clone());
    let offset_ms = match headers.get("x-gpufleet-time-offset-ms") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| ApiError::BadRequest("header X-Gpufleet-Time-Offset-Ms must be an integer number of milliseconds".into()))?,
    };
    let now = now_ms();
    let (mut batch, rows, errors) = if ctype.starts_with("text/csv") {
        ingest::decode_csv(&body, first_line.unwrap_or(2), DecodeOptions { default_host, ingest_ms: now })?
    } else if ctype.starts_with("application/x-ndjson") || ctype.starts_with("application/jsonl") || ctype.starts_with("application/json") {
        ingest::decode_jsonl(&body, first_line.unwrap_or(1), now)
    } else {
        return Err(ApiError::UnsupportedMedia(format!(
            "Content-Type {ctype:?} is not accepted; send text/csv (header line first) or application/x-ndjson (one sample object per line)"
        )));
    };
    ingest::shift(&mut batch, offset_ms);
    let report = ingest::publish(st.broker.as_ref(), &st.settings.topic, batch, rows, errors, &st.metrics).await?;
    let status = if report.rows > 0 && report.rejected == report.rows { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    Ok((status, Json(report)))
}
