//! The embedded backend: a standalone, crash-safe, compressed time-series store in one directory.
//!
//! # How a sample travels
//! 1. `write` resolves ids in the catalog, drops duplicates and appends the rest to the
//!    in-memory head (`state`), queues one WAL record for the batch (`wal`) and returns once
//!    the log thread has written (and, with `fsync`, synced) it — group commit across writers.
//! 2. When the head passes `head_max_samples` or `head_max_age`, or on `flush()`/`close()`, the
//!    maintenance thread (`flush`) freezes it, rotates the WAL, writes one raw partition file
//!    per UTC day touched (`partition`) plus 1-minute and 1-hour rollup files (`rollup`),
//!    publishes them and deletes the old WAL segments; then merges small files of a day
//!    (`compact`).
//! 3. Queries (`query`) combine partition files (whole-chunk statistics where a chunk lies
//!    inside the range, rollups for minute/hour steps), the frozen head and the head.
//! 4. `retention` deletes whole day directories past their retention.
//!
//! Recovery (`recovery`): load the catalog and every file index, finish or undo an
//! interrupted compaction, rebuild missing rollups, then replay the WAL (cutting a torn tail)
//! through the same dedup as writes.
//!
//! Layout on disk: see `layout`. Sums are exact for decimal values: see `agg`.
//! The directory must be used by one process at a time (nothing enforces it yet).

mod agg;
mod bin;
mod catalog;
mod compact;
mod flush;
mod head;
mod layout;
mod partition;
mod pcol;
mod query;
mod recovery;
mod retention;
mod rollup;
mod state;
mod wal;

use crate::{
    AggregateQuery, AggregateRow, GpuInfo, MetricStore, RangeQuery, RangeResult, RetentionReport,
    SeriesFilter, StoreConfig, StoreError, StoreStats, WriteReport,
};
use async_trait::async_trait;
use catalog::CatalogFile;
use gpufleet_core::{GpuDesc, SampleBatch, SeriesKey};
use parking_lot::{Mutex, RwLock};
use state::State;
use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};
use wal::Wal;

/// Shared by the store handle, the maintenance thread and queries.
pub(crate) struct Inner {
    /// Settings.
    pub(crate) cfg: StoreConfig,
    /// In-memory state.
    pub(crate) state: RwLock<State>,
    /// The write-ahead log.
    pub(crate) wal: Wal,
    /// Directory of WAL segments.
    pub(crate) wal_dir: PathBuf,
    /// The catalog file (written only by the maintenance thread).
    pub(crate) catalog_file: Mutex<CatalogFile>,
    /// Next partition file seq.
    pub(crate) next_seq: AtomicU64,
    /// A size-triggered flush was requested and not yet started.
    pub(crate) flush_requested: AtomicBool,
}

/// The embedded [`MetricStore`]. Cheap to share behind an `Arc`.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    maint: flush::Maintenance,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("data_dir", &self.inner.cfg.data_dir)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) a store in `config.data_dir`, recovering from a crash by replaying
    /// the write-ahead log. Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(config: StoreConfig) -> Result<EmbeddedStore, StoreError> {
        let (inner, pending_flush) = recovery::open(config)?;
        let inner = Arc::new(inner);
        let maint = flush::Maintenance::start(inner.clone())?;
        if pending_flush {
            maint.kick();
        }
        Ok(EmbeddedStore { inner, maint })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.cfg.data_dir
    }

    fn stop_threads(&self) {
        self.maint.stop();
        self.inner.wal.stop();
    }
}

impl Drop for EmbeddedStore {
    /// Stops the background threads without flushing: what was written stays in the WAL and
    /// is replayed on the next open, exactly as after a crash.
    fn drop(&mut self) {
        self.stop_threads();
    }
}

#[async_trait]
impl MetricStore for EmbeddedStore {
    async fn write(&self, batch: &SampleBatch, ingest_ms: i64) -> Result<WriteReport, StoreError> {
        let (report, reply, full) = {
            let mut st = self.inner.state.write();
            if st.closed {
                return Err(StoreError::Unavailable("store is closed".into()));
            }
            let (report, record) = st.ingest(batch, ingest_ms)?;
            let reply = record.map(|r| self.inner.wal.append(r));
            (
                report,
                reply,
                st.head.samples() >= self.inner.cfg.head_max_samples,
            )
        };
        if full && !self.inner.flush_requested.swap(true, Ordering::AcqRel) {
            self.maint.kick();
        }
        if let Some(reply) = reply {
            match reply.await {
                Ok(Ok(())) => {}
                Ok(Err(failure)) => return Err(failure.into()),
                Err(_) => return Err(StoreError::Unavailable("write-ahead log stopped".into())),
            }
        }
        Ok(report)
    }

    async fn query_range(&self, q: &RangeQuery) -> Result<RangeResult, StoreError> {
        query::range(&self.inner, q)
    }

    async fn aggregate(&self, q: &AggregateQuery) -> Result<Vec<AggregateRow>, StoreError> {
        query::aggregate(&self.inner, q)
    }

    async fn series(&self, filter: &SeriesFilter) -> Result<Vec<(SeriesKey, GpuDesc)>, StoreError> {
        Ok(query::series(&self.inner, filter))
    }

    async fn gpus(&self) -> Result<Vec<GpuInfo>, StoreError> {
        Ok(query::gpus(&self.inner))
    }

    async fn gpu(&self, uuid: &gpufleet_core::GpuUuid) -> Result<Option<GpuInfo>, StoreError> {
        Ok(query::gpu(&self.inner, uuid.as_str()))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        query::stats(&self.inner)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.maint.flush().await
    }

    async fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport, StoreError> {
        self.maint.retention(now_ms).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        let was_closed = std::mem::replace(&mut self.inner.state.write().closed, true);
        if was_closed {
            return Ok(());
        }
        let res = self.maint.flush().await;
        self.stop_threads();
        res
    }
}
