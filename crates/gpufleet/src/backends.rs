//! Picks the concrete backends from [`Settings`]: the embedded broker/store/SQLite files under the
//! data directory (standalone), or Redis Streams and PostgreSQL (distributed). Everything past this
//! module sees only the traits (`Broker`, `MetricStore`, `MetaStore`, `JobStore`).
//!
//! PostgreSQL holds three schemas, `<prefix>_meta` (keys, audit, leases), `<prefix>_jobs`
//! (gateway job records) and `<prefix>_metrics` (month-partitioned telemetry); each keeps its own
//! migration table, so the three migrators never see each other's versions.

use crate::config::Settings;
use anyhow::{Context, Result};
use async_trait::async_trait;
use gpufleet_auth::{MetaStore, PostgresMetaStore, SqliteMetaStore};
use gpufleet_broker::{Broker, EmbeddedBroker, RedisBroker, RedisBrokerConfig};
use gpufleet_gateway::{JobStore, PostgresJobStore, SqliteJobStore};
use gpufleet_runtime::{Worker, WorkerContext, WorkerError};
use gpufleet_store::{EmbeddedStore, MetricStore, PgStoreConfig, PostgresStore};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// Whether anything of this process lives in the data directory (then it is locked).
pub fn uses_data_dir(s: &Settings) -> bool {
    s.redis.is_none() || s.postgres.is_none()
}

/// The broker: embedded log under `<data_dir>/broker`, or Redis Streams.
pub async fn open_broker(s: &Settings) -> Result<Arc<dyn Broker>> {
    match &s.redis {
        None => Ok(Arc::new(
            EmbeddedBroker::open(s.broker.clone()).with_context(|| format!("opening broker in {}", s.broker.data_dir.display()))?,
        )),
        Some(r) => {
            let mut cfg = RedisBrokerConfig::new(r.url.clone());
            cfg.key_prefix = r.key_prefix.clone();
            cfg.max_len = r.max_len;
            cfg.visibility_timeout = s.broker.visibility_timeout;
            cfg.max_attempts = s.broker.max_attempts;
            let b = RedisBroker::connect(cfg).await.context("opening the Redis broker (broker.backend)")?;
            info!(url = %crate::redact::redact(&r.url), prefix = %r.key_prefix, "broker: Redis Streams");
            Ok(Arc::new(b))
        }
    }
}

/// The telemetry store: embedded under `<data_dir>/store`, or PostgreSQL (also returned typed,
/// for partition maintenance).
pub async fn open_store(s: &Settings) -> Result<(Arc<dyn MetricStore>, Option<Arc<PostgresStore>>)> {
    match &s.postgres {
        None => Ok((
            Arc::new(EmbeddedStore::open(s.store.clone()).with_context(|| format!("opening store in {}", s.store.data_dir.display()))?),
            None,
        )),
        Some(p) => {
            let mut cfg = PgStoreConfig::new(p.url.clone());
            cfg.schema = format!("{}_metrics", p.schema_prefix);
            cfg.raw_retention = s.store.raw_retention;
            cfg.rollup_1m_retention = s.store.rollup_1m_retention;
            cfg.rollup_1h_retention = s.store.rollup_1h_retention;
            cfg.max_connections = p.max_connections;
            let store = Arc::new(PostgresStore::connect(cfg).await.context("opening the PostgreSQL telemetry store (database.url)")?);
            info!(url = %crate::redact::redact(&p.url), schema = %format!("{}_metrics", p.schema_prefix), "telemetry store: PostgreSQL");
            Ok((store.clone(), Some(store)))
        }
    }
}

/// Keys, audit and leases: `<data_dir>/meta.db`, or PostgreSQL schema `<prefix>_meta`.
pub async fn open_meta(s: &Settings) -> Result<Arc<dyn MetaStore>> {
    match &s.postgres {
        None => {
            let path = s.data_dir.join("meta.db");
            Ok(Arc::new(SqliteMetaStore::open(&path).await.with_context(|| format!("opening metadata store {}", path.display()))?))
        }
        Some(p) => {
            let schema = format!("{}_meta", p.schema_prefix);
            Ok(Arc::new(PostgresMetaStore::connect(&p.url, &schema).await.context("opening the PostgreSQL metadata store (database.url)")?))
        }
    }
}

/// Gateway job records: `<data_dir>/gateway.db`, or PostgreSQL schema `<prefix>_jobs`.
pub async fn open_jobs(s: &Settings) -> Result<Arc<dyn JobStore>> {
    match &s.postgres {
        None => {
            let path = s.data_dir.join("gateway.db");
            Ok(Arc::new(SqliteJobStore::open(&path).await.with_context(|| format!("opening gateway job store {}", path.display()))?))
        }
        Some(p) => {
            let schema = format!("{}_jobs", p.schema_prefix);
            Ok(Arc::new(PostgresJobStore::connect(&p.url, &schema).await.context("opening the PostgreSQL job store (database.url)")?))
        }
    }
}

/// Creates the current and next month's telemetry partitions every interval (idempotent, so
/// several processes may run it; `/ready` reports a missing current partition).
pub struct PartitionWorker {
    /// The PostgreSQL store.
    pub store: Arc<PostgresStore>,
    /// How often.
    pub interval: Duration,
}

#[async_trait]
impl Worker for PartitionWorker {
    fn name(&self) -> String {
        "partitions".into()
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = ctx.shutdown.wait() => return Ok(()),
                _ = tick.tick() => {}
            }
            let t = Instant::now();
            match self.store.maintain_partitions(gpufleet_core::time::now_ms()).await {
                Ok(r) => {
                    if !r.created.is_empty() {
                        info!(created = ?r.created, "telemetry partitions created ahead");
                    }
                    ctx.record(true, t.elapsed(), None);
                }
                Err(e) => ctx.record(false, t.elapsed(), Some(e.to_string())),
            }
        }
    }
}
