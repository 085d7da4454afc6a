//! The store's in-memory state behind one lock, and the write path that mutates it.
//!
//! [`State`] holds the catalog, the head, the head being flushed (`frozen`, still queried and
//! deduplicated against), and an immutable snapshot of the partition files ([`Partitions`],
//! replaced wholesale on flush, compaction and retention so queries can read files without
//! holding the lock).
//!
//! Dedup ([`State::ingest`]): a point newer than its series' newest stored timestamp is new —
//! one comparison and an append. An older point is checked against the head, the frozen head
//! and the flushed files of its day; a file's chunk is decoded only when the timestamp falls
//! inside that file's range for the series.

use super::catalog::{Catalog, Def};
use super::head::Head;
use super::layout::{day_of, MAX_TS, MIN_TS};
use super::partition::RawFile;
use super::rollup::RollupFile;
use super::wal::RecordBuilder;
use crate::{StoreError, WriteReport};
use gpufleet_core::SampleBatch;
use std::{collections::BTreeMap, sync::Arc};

/// The files of one UTC day.
#[derive(Clone, Default)]
pub(crate) struct Day {
    /// Raw files, ascending seq.
    pub(crate) raw: Vec<Arc<RawFile>>,
    /// 1-minute rollup files.
    pub(crate) r1m: Vec<Arc<RollupFile>>,
    /// 1-hour rollup files.
    pub(crate) r1h: Vec<Arc<RollupFile>>,
}

impl Day {
    /// True when the day holds no file.
    pub(crate) fn is_empty(&self) -> bool {
        self.raw.is_empty() && self.r1m.is_empty() && self.r1h.is_empty()
    }
}

/// All partition files by day.
#[derive(Clone, Default)]
pub(crate) struct Partitions {
    /// Days (days since the epoch) to files.
    pub(crate) days: BTreeMap<i64, Day>,
}

impl Partitions {
    /// Raw files whose day overlaps `[start, end)`.
    pub(crate) fn raw_in(&self, start: i64, end: i64) -> impl Iterator<Item = &Arc<RawFile>> {
        let (a, b) = (day_of(start), day_of(end.saturating_sub(1)));
        self.days
            .range(a..=b.max(a))
            .flat_map(|(_, d)| d.raw.iter())
    }
}

/// Everything behind the store lock.
#[derive(Default)]
pub(crate) struct State {
    /// Series and GPU dictionary.
    pub(crate) catalog: Catalog,
    /// Unflushed samples.
    pub(crate) head: Head,
    /// Samples being written to partition files.
    pub(crate) frozen: Option<Arc<Head>>,
    /// Partition files.
    pub(crate) parts: Arc<Partitions>,
    /// Duplicates dropped since start.
    pub(crate) duplicates: u64,
    /// Set by `close`; writes are then refused.
    pub(crate) closed: bool,
}

impl State {
    /// Whether `(series, ts)` is already stored somewhere other than the live head.
    fn stored_outside_head(&self, series: u32, ts: i64) -> Result<bool, StoreError> {
        if self
            .frozen
            .as_ref()
            .and_then(|f| f.get(series))
            .is_some_and(|s| s.contains(ts))
        {
            return Ok(true);
        }
        let Some(day) = self.parts.days.get(&day_of(ts)) else {
            return Ok(false);
        };
        for f in &day.raw {
            let Some(e) = f.entry(series) else { continue };
            if ts < e.min_ts || ts > e.max_ts() {
                continue;
            }
            if f.read_ts(e)?.binary_search(&ts).is_ok() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores one point unless present; true when stored. Used by WAL replay.
    pub(crate) fn insert_point(
        &mut self,
        series: u32,
        ts: i64,
        v: f64,
    ) -> Result<bool, StoreError> {
        let entry = self
            .catalog
            .series
            .get(series as usize)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown series id {series}")))?;
        if ts > entry.newest_ts {
            self.head.push(series, ts, v);
        } else if self.stored_outside_head(series, ts)? || !self.head.insert(series, ts, v) {
            return Ok(false);
        }
        self.catalog.series[series as usize].saw(ts, v);
        Ok(true)
    }

    /// The write path: resolves ids, drops duplicates, inserts into the head and returns the
    /// WAL record of what was stored. Checks that can fail run before anything is inserted.
    pub(crate) fn ingest(
        &mut self,
        batch: &SampleBatch,
        ingest_ms: i64,
    ) -> Result<(WriteReport, Option<Vec<u8>>), StoreError> {
        batch
            .validate()
            .map_err(|e| StoreError::InvalidQuery(format!("invalid batch: {e}")))?;
        if let Some(p) = batch
            .points
            .iter()
            .find(|p| p.ts_ms < MIN_TS || p.ts_ms >= MAX_TS)
        {
            return Err(StoreError::InvalidQuery(format!(
                "invalid batch: timestamp {} ms is outside years 0000-9999",
                p.ts_ms
            )));
        }
        let mut defs: Vec<Def> = Vec::new();
        let gpu_ids: Vec<u32> = batch
            .gpus
            .iter()
            .map(|g| self.catalog.resolve_gpu(g, &mut defs))
            .collect();
        let metric_ids: Vec<u32> = batch
            .metrics
            .iter()
            .map(|m| self.catalog.resolve_metric(m, &mut defs))
            .collect();
        let n_metrics = batch.metrics.len();
        let mut table = vec![u32::MAX; batch.gpus.len() * n_metrics];
        // Pass 1: series ids, and the read-only (fallible) dedup checks for older points.
        let mut sids = Vec::with_capacity(batch.points.len());
        let mut seen_outside = Vec::new();
        for (i, p) in batch.points.iter().enumerate() {
            let slot = p.gpu as usize * n_metrics + p.metric as usize;
            let mut s = table[slot];
            if s == u32::MAX {
                s = self.catalog.resolve_series(
                    gpu_ids[p.gpu as usize],
                    metric_ids[p.metric as usize],
                    &mut defs,
                );
                table[slot] = s;
            }
            sids.push(s);
            if p.ts_ms <= self.catalog.series[s as usize].newest_ts
                && self.stored_outside_head(s, p.ts_ms)?
            {
                seen_outside.push(i);
            }
        }
        // Pass 2: insert.
        let mut rec = RecordBuilder::new(ingest_ms, &defs, batch.points.len());
        let mut report = WriteReport::default();
        let mut touched = vec![false; batch.gpus.len()];
        let mut outside = seen_outside.iter().peekable();
        for (i, (p, &s)) in batch.points.iter().zip(&sids).enumerate() {
            let entry = &mut self.catalog.series[s as usize];
            let stored = if p.ts_ms > entry.newest_ts {
                self.head.push(s, p.ts_ms, p.value);
                true
            } else if outside.peek() == Some(&&i) {
                outside.next();
                false
            } else {
                self.head.insert(s, p.ts_ms, p.value)
            };
            if !stored {
                report.duplicates += 1;
                continue;
            }
            entry.saw(p.ts_ms, p.value);
            rec.push(s, p.ts_ms, p.value);
            touched[p.gpu as usize] = true;
            report.inserted += 1;
        }
        for (bg, t) in touched.iter().enumerate() {
            if *t {
                let g = &mut self.catalog.gpus[gpu_ids[bg] as usize];
                g.last_ingest_ms = g.last_ingest_ms.max(ingest_ms);
            }
        }
        self.duplicates += report.duplicates;
        Ok((report, rec.finish()))
    }
}
