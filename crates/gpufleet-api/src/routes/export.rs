//! `GET /api/v1/telemetry/export`: a time range as CSV or Parquet.
//!
//! The file is built in memory before it is sent; keep ranges to what fits (about 40 bytes per
//! sample for CSV, far less for Parquet).

use crate::error::ApiError;
use crate::params::Params;
use super::guarded;
use crate::state::{now_ms, AppState};
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use gpufleet_core::{GpuUuid, HostName, MetricName};
use gpufleet_store::{export, SeriesFilter};

pub(crate) fn router() -> Router<AppState> {
    let r = Router::new();
    
    guarded(r, "GET", "/api/v1/telemetry/export", get(export_range))
}

async fn export_range(State(st): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["format", "start", "end", "host", "gpu", "metric"])?;
    let now = now_ms();
    let start = p.time("start", now)?.unwrap_or(0);
    let end = p.time("end", now)?.unwrap_or(i64::MAX);
    if end <= start {
        return Err(ApiError::BadRequest("parameter 'end' must be after 'start'".into()));
    }
    let format = p.one_of("format", &["csv", "parquet"])?.unwrap_or("csv");
    let filter = SeriesFilter { host: p.str("host").map(HostName::new), uuid: p.str("gpu").map(GpuUuid::new), metric: p.str("metric").map(MetricName::new) };
    let mut buf = Vec::new();
    let (ctype, ext) = if format == "parquet" {
        export::export_parquet(st.store.as_ref(), &filter, start, end, &mut buf).await?;
        ("application/vnd.apache.parquet", "parquet")
    } else {
        export::export_csv(st.store.as_ref(), &filter, start, end, &mut buf).await?;
        ("text/csv; charset=utf-8", "csv")
    };
    let disposition = format!("attachment; filename=\"telemetry.{ext}\"");
    Ok(([(header::CONTENT_TYPE, ctype.to_owned()), (header::CONTENT_DISPOSITION, disposition)], buf).into_response())
}
