//! The PostgreSQL backend: telemetry in monthly partitioned tables of one schema, written with
//! `COPY` and kept idempotent by the primary key, with 1-minute and 1-hour rollups maintained in
//! the write transaction. Several processes (collectors, the API) may share one schema.
//!
//! # Schema (`migrations/postgres/`, applied by sqlx's migrator in the configured schema)
//! - Dictionary: `gpus` (host, uuid, description), `metrics`, `series` (gpu × metric → `int4`).
//! - `samples (series_id int4, ts int8, value float8)`, primary key `(series_id, ts)`,
//!   partitioned by month of `ts` (`samples_YYYY_MM`).
//! - `rollup_1m` / `rollup_1h`: per series and bucket count, exact `numeric` sum, min, max and the
//!   last value with its timestamp; partitioned by month of the bucket like `samples`.
//! - `series_months`: per series and month the sample count, first/last timestamp, last value and
//!   last ingest time. It answers `gpus()`, `series()` and `stats()` without reading samples,
//!   and retention deletes a month's rows with its partition, so counts stay exact.
//!
//! # How a write travels (`write`)
//! 1. `dict` turns the batch's GPUs, metrics and series into ids (cached per store; unknown ones
//!    are upserted outside the data transaction, a changed GPU description is stored then; with
//!    several processes, "latest description" is the latest one a process saw change).
//! 2. `partition` makes sure every month the batch touches has its three partitions. A sample
//!    for a month without a partition is never lost: the partition is created on demand (under a
//!    transaction-scoped advisory lock, `CREATE TABLE IF NOT EXISTS`), also when an insert finds
//!    one dropped behind the cache's back (the write is then run again). A batch spanning more
//!    than 48 months is refused whole ([`StoreError::InvalidQuery`]).
//! 3. One transaction: binary `COPY` into a per-connection temporary staging table, then one
//!    statement `INSERT … SELECT … ORDER BY … RETURNING` whose returned rows (only the new ones)
//!    feed the rollup and `series_months` upserts; `write` returns after `COMMIT`. Samples newer
//!    than their series' newest stored one skip the existence probe (plain insert); should a
//!    concurrent writer have stored one meanwhile, the unique violation sends the batch through
//!    `ON CONFLICT DO NOTHING` instead. Rows are inserted in key order, so concurrent writers
//!    lock in the same order; a deadlock or serialization failure is retried.
//!
//! Queries (`query`) follow the embedded store's semantics exactly (the conformance suite is
//! the judge); retention (`partition`) detaches and drops whole months.
//! Every PostgreSQL failure maps to [`StoreError::Unavailable`] (retryable); messages never
//! carry the password of the URL.

mod conn;
mod dict;
mod partition;
mod query;
mod write;

use crate::{
    AggregateQuery, AggregateRow, GpuInfo, MetricStore, RangeQuery, RangeResult, RetentionReport,
    SeriesFilter, StoreError, StoreHealth, StoreStats, WriteReport,
};
use async_trait::async_trait;
use gpufleet_core::{GpuDesc, GpuUuid, SampleBatch, SeriesKey};
use parking_lot::Mutex;
use sqlx::PgPool;
use std::{
    collections::HashSet,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

pub use partition::PartitionReport;

/// Settings of the PostgreSQL backend.
#[derive(Clone)]
pub struct PgStoreConfig {
    /// Server URL, `postgres://user[:password]@host:port/database`.
    pub url: String,
    /// Schema holding every table and the migration table; created when missing. Lowercase
    /// ASCII letters, digits and `_`, starting with a letter or `_`, at most 63 bytes.
    pub schema: String,
    /// Keep raw samples this long (None: forever); whole months are dropped.
    pub raw_retention: Option<Duration>,
    /// Keep 1-minute rollups this long (None: forever).
    pub rollup_1m_retention: Option<Duration>,
    /// Keep 1-hour rollups this long (None: forever).
    pub rollup_1h_retention: Option<Duration>,
    /// Most connections in the pool.
    pub max_connections: u32,
    /// Months of partitions created ahead of the current one by `connect` and
    /// [`PostgresStore::maintain_partitions`].
    pub months_ahead: u32,
}

impl PgStoreConfig {
    /// Defaults: schema `gpufleet_metrics`, raw 30 d, 1-minute rollups 90 d, 1-hour rollups 2 y,
    /// 8 connections, 1 month of partitions ahead.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "gpufleet_metrics".into(),
            raw_retention: Some(Duration::from_secs(30 * 86_400)),
            rollup_1m_retention: Some(Duration::from_secs(90 * 86_400)),
            rollup_1h_retention: Some(Duration::from_secs(730 * 86_400)),
            max_connections: 8,
            months_ahead: 1,
        }
    }
}

impl std::fmt::Debug for PgStoreConfig {
    /// Shows the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStoreConfig")
            .field("url", &conn::redact(&self.url))
            .field("schema", &self.schema)
            .field("raw_retention", &self.raw_retention)
            .field("rollup_1m_retention", &self.rollup_1m_retention)
            .field("rollup_1h_retention", &self.rollup_1h_retention)
            .field("max_connections", &self.max_connections)
            .field("months_ahead", &self.months_ahead)
            .finish()
    }
}

/// The PostgreSQL [`MetricStore`]. Cheap to share behind an `Arc`; several stores (processes)
/// may use one schema at once.
pub struct PostgresStore {
    pool: PgPool,
    cfg: PgStoreConfig,
    /// Id cache of the dictionary tables.
    dict: Mutex<dict::Dict>,
    /// Months known to have all three partitions.
    months: Mutex<HashSet<i32>>,
    /// Duplicates dropped by this handle since it connected.
    duplicates: AtomicU64,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &conn::redact(&self.cfg.url))
            .field("schema", &self.cfg.schema)
            .finish_non_exhaustive()
    }
}

/// Statement timeout of the readiness check.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

impl PostgresStore {
    /// Connects, creates the schema when missing, applies the migrations (serialised across
    /// processes by sqlx's advisory lock) and creates the partitions of the current month and
    /// `months_ahead` more.
    pub async fn connect(cfg: PgStoreConfig) -> Result<Self, StoreError> {
        let pool = conn::open(&cfg).await?;
        let store = PostgresStore {
            pool,
            cfg,
            dict: Mutex::new(dict::Dict::default()),
            months: Mutex::new(HashSet::new()),
            duplicates: AtomicU64::new(0),
        };
        store
            .maintain_partitions(gpufleet_core::time::now_ms())
            .await?;
        Ok(store)
    }

    /// Creates the partitions of the month of `now_ms` and `months_ahead` more (idempotent,
    /// safe to run from several processes at once) and says which were created.
    pub async fn maintain_partitions(&self, now_ms: i64) -> Result<PartitionReport, StoreError> {
        let first = partition::month_of(now_ms);
        let ahead = i32::try_from(self.cfg.months_ahead).unwrap_or(i32::MAX);
        let last = first.saturating_add(ahead).min(partition::LAST_MONTH);
        let months: Vec<i32> = (first..=last).collect();
        let report = partition::ensure(&self.pool, &self.cfg.schema, &months).await?;
        self.months.lock().extend(months);
        Ok(report)
    }

    /// Drops the schema with everything in it (tests and benchmarks clean up with this).
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        let sql = format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            conn::ident(&self.cfg.schema)
        );
        sqlx::query(&sql)
            .execute(&self.pool)
            .await
            .map_err(conn::db_err)?;
        self.months.lock().clear();
        *self.dict.lock() = dict::Dict::default();
        Ok(())
    }

    /// The schema this store lives in.
    pub fn schema(&self) -> &str {
        &self.cfg.schema
    }
}

#[async_trait]
impl MetricStore for PostgresStore {
    async fn write(&self, batch: &SampleBatch, ingest_ms: i64) -> Result<WriteReport, StoreError> {
        let report = write::write(self, batch, ingest_ms).await?;
        self.duplicates
            .fetch_add(report.duplicates, Ordering::Relaxed);
        Ok(report)
    }

    async fn query_range(&self, q: &RangeQuery) -> Result<RangeResult, StoreError> {
        query::range(&self.pool, q).await
    }

    async fn aggregate(&self, q: &AggregateQuery) -> Result<Vec<AggregateRow>, StoreError> {
        query::aggregate(&self.pool, &self.cfg.schema, q).await
    }

    async fn series(&self, filter: &SeriesFilter) -> Result<Vec<(SeriesKey, GpuDesc)>, StoreError> {
        query::series(&self.pool, filter).await
    }

    async fn gpus(&self) -> Result<Vec<GpuInfo>, StoreError> {
        query::gpus(&self.pool, None).await
    }

    async fn gpu(&self, uuid: &GpuUuid) -> Result<Option<GpuInfo>, StoreError> {
        Ok(query::gpus(&self.pool, Some(uuid))
            .await?
            .into_iter()
            .min_by(|a, b| a.desc.host.cmp(&b.desc.host)))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = query::stats(&self.pool, &self.cfg.schema).await?;
        s.duplicates = self.duplicates.load(Ordering::Relaxed);
        Ok(s)
    }

    /// Nothing to do: `write` returns after COMMIT.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport, StoreError> {
        let report = partition::retention(&self.pool, &self.cfg, now_ms).await?;
        // Dropped months must be created again if late samples arrive for them.
        self.months.lock().clear();
        Ok(report)
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.pool.close().await;
        Ok(())
    }

    /// One round trip: the server answers and the raw partition of `now_ms`'s month exists.
    async fn health(&self, now_ms: i64) -> Result<StoreHealth, StoreError> {
        let check = partition::health(&self.pool, &self.cfg.schema, now_ms);
        match tokio::time::timeout(HEALTH_TIMEOUT, check).await {
            Ok(res) => res,
            Err(_) => Err(StoreError::Unavailable(format!(
                "postgres at {} did not answer the health check within {} s",
                conn::redact(&self.cfg.url),
                HEALTH_TIMEOUT.as_secs()
            ))),
        }
    }
}
