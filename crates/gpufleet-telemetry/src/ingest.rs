//! Ingest: turns a request body (CSV with header, or JSON lines) into one broker message.
//!
//! Malformed rows are counted and reported with their line number; the good rows are published.
//! The call returns once the broker has made the message durable, so a client that got the report
//! may advance past those rows.

use crate::metrics::PipelineMetrics;
use crate::source::{CsvDecoder, DecodeOptions, RowError, RowErrors};
use bytes::Bytes;
use gpufleet_broker::{Broker, BrokerError};
use gpufleet_core::{codec, BatchBuilder, GpuDesc, MetricName, TopicName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// What an ingest call did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IngestReport {
    /// Records seen (good + bad).
    pub rows: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Samples published.
    pub samples: u64,
    /// The first rejected rows with line number and reason.
    pub errors: Vec<RowError>,
    /// Oldest sample timestamp published (epoch ms).
    pub min_ts_ms: Option<i64>,
    /// Newest sample timestamp published (epoch ms).
    pub max_ts_ms: Option<i64>,
}

/// Why nothing could be ingested.
#[derive(Debug, Error)]
pub enum IngestError {
    /// The body is unusable as a whole (bad header, not UTF-8, …); the message says what to fix.
    #[error("{0}")]
    BadBody(String),
    /// The broker did not take the message.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// One JSON-lines sample.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSample {
    timestamp: Option<serde_json::Value>,
    host: String,
    #[serde(default)]
    gpu_uuid: String,
    gpu_index: Option<u32>,
    #[serde(default)]
    device: String,
    #[serde(default)]
    model: String,
    metric: String,
    value: f64,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Parses a CSV body (header line first) whose header is physical line `first_line - 1`.
pub fn decode_csv(body: &[u8], first_line: u64, opts: DecodeOptions) -> Result<(gpufleet_core::SampleBatch, u64, RowErrors), IngestError> {
    let split = memchr::memchr(b'\n', body).map_or(body.len(), |i| i + 1);
    let (header, rest) = body.split_at(split);
    if header.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::BadBody("empty body: send a CSV header line followed by rows, or JSON lines".into()));
    }
    let mut decoder = CsvDecoder::from_header(header, opts).map_err(|e| IngestError::BadBody(e.to_string()))?;
    let mut builder = BatchBuilder::new();
    let mut errors = RowErrors::default();
    let rows = decoder.decode(rest, first_line, &mut builder, &mut errors);
    Ok((builder.finish(), rows, errors))
}

/// Parses JSON lines, one sample object per line (`timestamp` optional: RFC 3339 string or epoch number).
pub fn decode_jsonl(body: &[u8], first_line: u64, ingest_ms: i64) -> (gpufleet_core::SampleBatch, u64, RowErrors) {
    let mut builder = BatchBuilder::new();
    let mut errors = RowErrors::default();
    let mut rows = 0;
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line_no = first_line + i as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        rows += 1;
        let s: JsonSample = match serde_json::from_slice(line) {
            Ok(s) => s,
            Err(e) => {
                errors.push(RowError { line: line_no, reason: format!("invalid JSON sample: {e}") });
                continue;
            }
        };
        let ts = match &s.timestamp {
            None | Some(serde_json::Value::Null) => Ok(ingest_ms),
            Some(serde_json::Value::String(t)) => gpufleet_core::time::parse_timestamp(t.as_bytes()).map_err(|e| e.to_string()),
            Some(serde_json::Value::Number(n)) => n
                .as_f64()
                .map(|v| if v > 1e11 { v as i64 } else { (v * 1000.0) as i64 })
                .ok_or_else(|| "timestamp number out of range".to_owned()),
            Some(other) => Err(format!("timestamp must be an RFC 3339 string or epoch number, got {other}")),
        };
        let ts = match ts {
            Ok(t) => t,
            Err(reason) => {
                errors.push(RowError { line: line_no, reason });
                continue;
            }
        };
        if s.host.is_empty() || s.metric.is_empty() || !s.value.is_finite() {
            errors.push(RowError { line: line_no, reason: "host and metric must be non-empty and value finite".into() });
            continue;
        }
        let g = builder.gpu(&GpuDesc {
            host: s.host.as_str().into(),
            uuid: s.gpu_uuid.as_str().into(),
            index: s.gpu_index,
            device: s.device,
            model: s.model,
            labels: s.labels.into_iter().collect(),
        });
        let m = builder.metric(&MetricName::new(&s.metric));
        builder.push(g, m, ts, s.value);
    }
    (builder.finish(), rows, errors)
}

/// Publishes a decoded batch as one message and builds the report.
pub async fn publish(
    broker: &dyn Broker,
    topic: &TopicName,
    batch: gpufleet_core::SampleBatch,
    rows: u64,
    errors: RowErrors,
    metrics: &PipelineMetrics,
) -> Result<IngestReport, IngestError> {
    let samples = batch.len() as u64;
    let min_ts_ms = batch.points.iter().map(|p| p.ts_ms).min();
    let max_ts_ms = batch.points.iter().map(|p| p.ts_ms).max();
    if samples > 0 {
        broker.publish(topic, &[Bytes::from(codec::encode(&batch))]).await?;
    }
    metrics.rows_accepted.inc_by(rows - errors.count);
    metrics.rows_rejected.inc_by(errors.count);
    metrics.samples_published.inc_by(samples);
    Ok(IngestReport { rows, rejected: errors.count, samples, errors: errors.first, min_ts_ms, max_ts_ms })
}

/// Moves every sample of a batch forward by `offset_ms` (replays that continue a series).
pub fn shift(batch: &mut gpufleet_core::SampleBatch, offset_ms: i64) {
    for p in &mut batch.points {
        p.ts_ms = p.ts_ms.saturating_add(offset_ms);
    }
}
