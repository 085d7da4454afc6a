//! The telemetry store: durable, compressed, time-partitioned samples with an in-memory recent
//! window, retention, 1-minute and 1-hour rollups, and export.
//!
//! Depends only on `gpufleet-core`; callers pass a [`StoreConfig`].
//!
//! # Layout
//! - [`MetricStore`] (this file): the trait every backend implements, and its query types.
//! - `embedded`: the standalone backend (see its module doc for the on-disk format).
//! - [`postgres`]: the PostgreSQL backend (monthly partitioned tables, COPY ingest, rollups kept
//!   in the write transaction; see its module doc for the schema).
//! - [`export`]: CSV and Parquet export over any [`MetricStore`].
//! - [`testsuite`]: the conformance suite every backend passes (`store_test_suite!`).
//!
//! # Semantics every backend keeps
//! - `write` returns only when the samples are durable; a later crash loses none of them.
//! - Writes are idempotent on `(host, gpu uuid, metric, timestamp)`: a sample written again (same
//!   key and timestamp) is counted as a duplicate and never stored or returned twice. The first
//!   value written wins.
//! - Queries see every sample whose `write` has returned.

use async_trait::async_trait;
use gpufleet_core::{GpuDesc, GpuUuid, HostName, MetricName, SampleBatch, SeriesKey};
use serde::Serialize;
use std::{collections::BTreeMap, path::PathBuf, time::Duration};
use thiserror::Error;

pub mod embedded;
pub mod export;
pub mod postgres;
pub mod testsuite;

pub use embedded::EmbeddedStore;
pub use postgres::{PgStoreConfig, PostgresStore};

/// Outcome of a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriteReport {
    /// Samples newly stored.
    pub inserted: u64,
    /// Samples dropped because the same key and timestamp was already stored.
    pub duplicates: u64,
}

/// How points inside a step bucket (or the whole range) are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Agg {
    /// Mean.
    #[default]
    Avg,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Latest value in the bucket.
    Last,
    /// Sum.
    Sum,
    /// Number of samples.
    Count,
}

/// A range query over one GPU's series.
#[derive(Clone, Debug)]
pub struct RangeQuery {
    /// The GPU.
    pub uuid: GpuUuid,
    /// Only this host (None: any host; a UUID is normally on one host).
    pub host: Option<HostName>,
    /// Only these metrics (empty: all metrics of the GPU).
    pub metrics: Vec<MetricName>,
    /// Inclusive start, epoch ms.
    pub start_ms: i64,
    /// Exclusive end, epoch ms.
    pub end_ms: i64,
    /// Bucket width; `None` returns raw points. Buckets start at multiples of the step.
    pub step_ms: Option<i64>,
    /// Combination inside a bucket (ignored for raw points).
    pub agg: Agg,
    /// Most points returned over all series (at least 1; `next_cursor` is set when more remain).
    pub limit: usize,
    /// Resume after this position (the `next_cursor` of a previous page).
    pub cursor: Option<Cursor>,
}

/// Where a paged query resumes: after `ts_ms` of `metric`. Series come in metric-name order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Cursor {
    /// Metric the previous page ended in.
    pub metric: MetricName,
    /// Last timestamp (or bucket start) returned for it.
    pub ts_ms: i64,
}

/// Points of one series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesPoints {
    /// Series.
    pub key: SeriesKey,
    /// `(epoch ms, value)` sorted by time; with a step, `ts` is the bucket start.
    pub points: Vec<(i64, f64)>,
}

/// Result of a [`RangeQuery`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RangeResult {
    /// Series in metric-name order.
    pub series: Vec<SeriesPoints>,
    /// Set when `limit` cut the answer short.
    pub next_cursor: Option<Cursor>,
}

/// One value per series of a metric across the fleet (e.g. per-GPU average utilisation).
#[derive(Clone, Debug)]
pub struct AggregateQuery {
    /// Metric.
    pub metric: MetricName,
    /// Only this host (None: all).
    pub host: Option<HostName>,
    /// Inclusive start, epoch ms.
    pub start_ms: i64,
    /// Exclusive end, epoch ms.
    pub end_ms: i64,
    /// Combination.
    pub agg: Agg,
}

/// One row of an [`AggregateQuery`] answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AggregateRow {
    /// Series.
    pub key: SeriesKey,
    /// Aggregated value.
    pub value: f64,
    /// Samples that went into it.
    pub count: u64,
}

/// Which series to list or export.
#[derive(Clone, Debug, Default)]
pub struct SeriesFilter {
    /// Only this host.
    pub host: Option<HostName>,
    /// Only this GPU.
    pub uuid: Option<GpuUuid>,
    /// Only this metric.
    pub metric: Option<MetricName>,
}

/// A GPU (or host-level pseudo GPU with empty uuid) as the store knows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuInfo {
    /// Latest description seen.
    pub desc: GpuDesc,
    /// Oldest sample timestamp (epoch ms).
    pub first_seen_ms: i64,
    /// Newest sample timestamp (epoch ms).
    pub last_seen_ms: i64,
    /// Wall-clock time the newest sample arrived (epoch ms); drives staleness.
    pub last_ingest_ms: i64,
    /// Latest `(timestamp, value)` per metric.
    pub latest: BTreeMap<MetricName, (i64, f64)>,
}

/// Store counters for `/stats` and `/metrics`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct StoreStats {
    /// Distinct series.
    pub series: u64,
    /// Distinct GPUs.
    pub gpus: u64,
    /// Samples stored (after dedup).
    pub samples: u64,
    /// Samples dropped as duplicates since start.
    pub duplicates: u64,
    /// Samples in the in-memory window not yet in compressed partitions.
    pub head_samples: u64,
    /// Bytes of all files under the data directory.
    pub bytes_on_disk: u64,
    /// Time partitions on disk.
    pub partitions: u64,
    /// Oldest and newest sample timestamps.
    pub oldest_ms: Option<i64>,
    /// Newest sample timestamp.
    pub newest_ms: Option<i64>,
}

/// What a retention pass removed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RetentionReport {
    /// Raw partitions dropped.
    pub raw_partitions_dropped: u64,
    /// Rollup partitions dropped.
    pub rollup_partitions_dropped: u64,
}

/// What a backend's readiness check found (empty `problems`: healthy).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StoreHealth {
    /// One sentence per problem, saying what to do about it.
    pub problems: Vec<String>,
}

impl StoreHealth {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Settings of a store backend.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Keep raw samples this long (None: forever).
    pub raw_retention: Option<Duration>,
    /// Keep 1-minute rollups this long (None: forever).
    pub rollup_1m_retention: Option<Duration>,
    /// Keep 1-hour rollups this long (None: forever).
    pub rollup_1h_retention: Option<Duration>,
    /// Flush the in-memory window to a compressed partition file when it holds this many samples.
    pub head_max_samples: usize,
    /// … or when its oldest unflushed sample arrived this long ago.
    pub head_max_age: Duration,
    /// fsync the write-ahead log on every write (true) or leave it to the OS (false, benchmarks only).
    pub fsync: bool,
}

impl StoreConfig {
    /// Defaults: raw 30 d, 1-minute rollups 90 d, 1-hour rollups 2 y, head 4M samples / 10 min, fsync on.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            raw_retention: Some(Duration::from_secs(30 * 86_400)),
            rollup_1m_retention: Some(Duration::from_secs(90 * 86_400)),
            rollup_1h_retention: Some(Duration::from_secs(730 * 86_400)),
            head_max_samples: 4_000_000,
            head_max_age: Duration::from_secs(600),
            fsync: true,
        }
    }
}

/// Store failures.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("store i/o error on {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// On-disk data that cannot be read back.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// A query that cannot be answered as asked (the message says what to change).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// Encoding or export failed.
    #[error("export failed: {0}")]
    Export(String),
    /// The backend server (PostgreSQL) failed; retrying may help.
    #[error("store backend unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether the same call may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Io { .. })
    }
}

/// A telemetry store backend.
#[async_trait]
pub trait MetricStore: Send + Sync + 'static {
    /// Stores a batch durably and idempotently. `ingest_ms` is the wall-clock arrival time.
    async fn write(&self, batch: &SampleBatch, ingest_ms: i64) -> Result<WriteReport, StoreError>;

    /// Points of one GPU's series, raw or bucketed.
    async fn query_range(&self, q: &RangeQuery) -> Result<RangeResult, StoreError>;

    /// One aggregated value per series of a metric.
    async fn aggregate(&self, q: &AggregateQuery) -> Result<Vec<AggregateRow>, StoreError>;

    /// Series matching a filter, with the GPU description, sorted by key.
    async fn series(&self, filter: &SeriesFilter) -> Result<Vec<(SeriesKey, GpuDesc)>, StoreError>;

    /// Every GPU with first/last seen and latest values.
    async fn gpus(&self) -> Result<Vec<GpuInfo>, StoreError>;

    /// One GPU by uuid (a backend should answer without building the whole inventory).
    async fn gpu(&self, uuid: &GpuUuid) -> Result<Option<GpuInfo>, StoreError> {
        Ok(self.gpus().await?.into_iter().find(|g| &g.desc.uuid == uuid))
    }

    /// Counters.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Moves the in-memory window into compressed partitions now.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Drops data older than the configured retention, relative to `now_ms`.
    async fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport, StoreError>;

    /// Flushes and releases files; called on graceful shutdown.
    async fn close(&self) -> Result<(), StoreError>;

    /// A cheap readiness check (the API's `/ready` calls it): problems that need an operator,
    /// relative to the wall clock `now_ms`. `Err` when the backend cannot be reached at all.
    /// The default (backends with nothing to check) is healthy.
    async fn health(&self, now_ms: i64) -> Result<StoreHealth, StoreError> {
        let _ = now_ms;
        Ok(StoreHealth::default())
    }
}
