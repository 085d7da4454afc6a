//! Publish → queryable latency at a fixed offered rate. The pipeline is the server's: an
//! [`EmbeddedBroker`] and an [`EmbeddedStore`] with default durability, and [`Collector`] workers
//! under a [`Supervisor`], wired as `server.rs` wires them, except that the store is wrapped in
//! [`RecordingStore`], which notes when each write returned. A publisher sends one encoded batch of
//! [`BATCH_SAMPLES`] samples every [`TICK`] (open loop: each publish runs in its own task, so a slow
//! fsync does not lower the offered rate). Every batch carries its own timestamp, so the recording
//! store can tell which batches a write contained.

use gpufleet_core::time::now_ms;
use crate::config::Settings;
use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use bytes::Bytes;
use gpufleet_broker::{Broker, BrokerConfig, EmbeddedBroker};
use gpufleet_core::{codec, BatchBuilder, GpuDesc, GroupName, MetricName, SampleBatch, SeriesKey, TopicName};
use gpufleet_runtime::{Shutdown, Supervisor};
use gpufleet_store::{
    AggregateQuery, AggregateRow, EmbeddedStore, GpuInfo, MetricStore, RangeQuery, RangeResult, RetentionReport, SeriesFilter, StoreConfig, StoreError,
    StoreStats, WriteReport,
};
use gpufleet_telemetry::synth::{GPUS_PER_HOST, HOSTS, METRICS};
use gpufleet_telemetry::{Collector, CollectorConfig, PipelineMetrics};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Samples per published batch.
pub(super) const BATCH_SAMPLES: usize = 500;
/// One batch is published every tick: 500 samples / 10 ms = 50,000 samples/s.
pub(super) const TICK: Duration = Duration::from_millis(10);
/// After the last publish, every batch must be stored within this long.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// A [`MetricStore`] that passes every call through and, after each successful write, records
/// `(timestamp, when the write returned)` for every distinct timestamp in the batch.
pub(super) struct RecordingStore {
    inner: Arc<dyn MetricStore>,
    written: Mutex<Vec<(i64, Instant)>>,
}

impl RecordingStore {
    pub(super) fn new(inner: Arc<dyn MetricStore>) -> RecordingStore {
        RecordingStore { inner, written: Mutex::new(Vec::new()) }
    }

    /// Everything recorded so far.
    pub(super) fn written(&self) -> Vec<(i64, Instant)> {
        self.written.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl MetricStore for RecordingStore {
    async fn write(&self, batch: &SampleBatch, ingest_ms: i64) -> Result<WriteReport, StoreError> {
        let report = self.inner.write(batch, ingest_ms).await?;
        let now = Instant::now();
        let mut ts: Vec<i64> = batch.points.iter().map(|p| p.ts_ms).collect();
        ts.sort_unstable();
        ts.dedup();
        self.written.lock().unwrap_or_else(|e| e.into_inner()).extend(ts.into_iter().map(|t| (t, now)));
        Ok(report)
    }
    async fn query_range(&self, q: &RangeQuery) -> Result<RangeResult, StoreError> {
        self.inner.query_range(q).await
    }
    async fn aggregate(&self, q: &AggregateQuery) -> Result<Vec<AggregateRow>, StoreError> {
        self.inner.aggregate(q).await
    }
    async fn series(&self, filter: &SeriesFilter) -> Result<Vec<(SeriesKey, GpuDesc)>, StoreError> {
        self.inner.series(filter).await
    }
    async fn gpus(&self) -> Result<Vec<GpuInfo>, StoreError> {
        self.inner.gpus().await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats().await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
    async fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport, StoreError> {
        self.inner.apply_retention(now_ms).await
    }
    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}

/// Latency figures over all batches, in ms.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Latency {
    pub(super) batches: u64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) max_ms: f64,
}

/// The value at quantile `q` (nearest rank) of sorted values; 0 when empty.
pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Per batch: store-write return minus publish return, clamped at 0 (the write may return before
/// the publisher got to note its own publish). Fails when a batch was never stored.
pub(super) fn latencies(published: &[Option<Instant>], written: &[(i64, Instant)], base_ts: i64) -> Result<Vec<f64>> {
    let mut first_write: HashMap<i64, Instant> = HashMap::with_capacity(written.len());
    for &(ts, at) in written {
        first_write.entry(ts).and_modify(|w| *w = (*w).min(at)).or_insert(at);
    }
    let mut out = Vec::with_capacity(published.len());
    for (i, p) in published.iter().enumerate() {
        let Some(pub_at) = p else { bail!("batch {i} was never published") };
        let Some(w) = first_write.get(&(base_ts + i as i64)) else { bail!("batch {i} was never stored") };
        out.push(w.saturating_duration_since(*pub_at).as_secs_f64() * 1e3);
    }
    Ok(out)
}

/// The fleet's 6144 series as GPU descriptions and metric names.
struct Fleet {
    gpus: Vec<GpuDesc>,
    metrics: Vec<MetricName>,
}

impl Fleet {
    fn new() -> Fleet {
        let mut gpus = Vec::with_capacity(HOSTS * GPUS_PER_HOST);
        for h in 0..HOSTS {
            for g in 0..GPUS_PER_HOST {
                gpus.push(GpuDesc {
                    host: format!("gpu-node-{h:03}").into(),
                    uuid: format!("GPU-latency-{h:03}-{g}").into(),
                    index: Some(g as u32),
                    device: format!("nvidia{g}"),
                    model: "NVIDIA H100 80GB HBM3".into(),
                    labels: Vec::new(),
                });
            }
        }
        Fleet { gpus, metrics: METRICS.iter().map(MetricName::new).collect() }
    }

    /// Batch `i`: the next [`BATCH_SAMPLES`] series in round-robin order, all at timestamp `ts`.
    fn batch(&self, i: usize, ts: i64) -> Bytes {
        let series = self.gpus.len() * self.metrics.len();
        let mut b = BatchBuilder::new();
        for k in 0..BATCH_SAMPLES {
            let s = (i * BATCH_SAMPLES + k) % series;
            let g = b.gpu(&self.gpus[s / self.metrics.len()]);
            let m = b.metric(&self.metrics[s % self.metrics.len()]);
            b.push(g, m, ts, (s % 100) as f64);
        }
        Bytes::from(codec::encode(&b.finish()))
    }
}

/// Runs the pipeline in `dir` for `seconds` of offered load and returns the latency figures.
pub(super) async fn run(dir: &Path, settings: &Settings, seconds: u64) -> Result<Latency> {
    let broker = Arc::new(EmbeddedBroker::open(BrokerConfig::new(dir.join("broker"))).context("opening the latency broker")?);
    let store: Arc<dyn MetricStore> = Arc::new(EmbeddedStore::open(StoreConfig::new(dir.join("store"))).context("opening the latency store")?);
    let recorder = Arc::new(RecordingStore::new(store));
    let topic = TopicName::new(&settings.topic);
    let group = GroupName::new("collectors");
    broker.create_group(&topic, &group).await?;
    let shutdown = Shutdown::new();
    let mut supervisor = Supervisor::new(shutdown.child());
    let cfg = CollectorConfig { topic: topic.clone(), group, fetch_max: settings.fetch_max, fetch_wait: Duration::from_millis(200) };
    let metrics = PipelineMetrics::default();
    for i in 0..settings.collectors {
        supervisor.spawn(Collector::new(format!("c{i}"), broker.clone(), recorder.clone(), cfg.clone(), metrics.clone()));
    }

    let base_ts = now_ms();
    let published = publish_at_fixed_rate(&broker, &topic, base_ts, seconds).await;
    let drained = match &published {
        Ok(p) => wait_stored(&recorder, base_ts, p.len()).await,
        Err(_) => Ok(()),
    };
    supervisor.shutdown(Duration::from_secs(10)).await;
    broker.close().await.context("closing the latency broker")?;
    recorder.close().await.context("closing the latency store")?;
    let published = published?;
    drained?;
    let mut ms = latencies(&published, &recorder.written(), base_ts)?;
    ms.sort_by(f64::total_cmp);
    Ok(Latency { batches: ms.len() as u64, p50_ms: percentile(&ms, 0.50), p99_ms: percentile(&ms, 0.99), max_ms: ms.last().copied().unwrap_or(0.0) })
}

/// Publishes `seconds / TICK` batches, one per tick, each in its own task; returns when every
/// publish has returned, with the instant each one did.
async fn publish_at_fixed_rate(broker: &Arc<EmbeddedBroker>, topic: &TopicName, base_ts: i64, seconds: u64) -> Result<Vec<Option<Instant>>> {
    let n = (Duration::from_secs(seconds).as_millis() / TICK.as_millis()) as usize;
    let fleet = Fleet::new();
    let mut published: Vec<Option<Instant>> = vec![None; n];
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut record = |done: Result<(usize, Result<Instant, gpufleet_broker::BrokerError>), tokio::task::JoinError>| -> Result<()> {
        let (i, r) = done.context("publish task")?;
        published[i] = Some(r.with_context(|| format!("publishing latency batch {i}"))?);
        Ok(())
    };
    for i in 0..n {
        tick.tick().await;
        let payload = fleet.batch(i, base_ts + i as i64);
        let (broker, topic) = (broker.clone(), topic.clone());
        tasks.spawn(async move {
            let r = broker.publish(&topic, &[payload]).await.map(|_| Instant::now());
            (i, r)
        });
        while let Some(done) = tasks.try_join_next() {
            record(done)?;
        }
    }
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    while let Some(done) = tokio::time::timeout_at(deadline, tasks.join_next()).await.context("publishes did not return within 60 s")? {
        record(done)?;
    }
    Ok(published)
}

/// Waits until every batch's timestamp has been written, at most [`DRAIN_LIMIT`].
async fn wait_stored(recorder: &RecordingStore, base_ts: i64, n: usize) -> Result<()> {
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let written = recorder.written();
        let mut seen: Vec<i64> = written.iter().map(|(t, _)| t - base_ts).filter(|d| (0..n as i64).contains(d)).collect();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} latency batches were stored within {DRAIN_LIMIT:?} of the last publish", seen.len());
        }
        tokio::time::sleep(crate::bench::proc::POLL).await;
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn latency_uses_the_first_write_and_clamps_at_zero() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let published = vec![Some(ms(10)), Some(ms(20))];
        // batch 0 written at 15 and (redelivered) at 40; batch 1 written at 18, before its publish
        // was noted at 20.
        let written = vec![(1000, ms(40)), (1000, ms(15)), (1001, ms(18))];
        let l = latencies(&published, &written, 1000).unwrap();
        assert_eq!(l, vec![5.0, 0.0]);
        let e = latencies(&published, &written[..2], 1000).unwrap_err().to_string();
        assert!(e.contains("batch 1 was never stored"), "{e}");
    }

    #[test]
    fn fleet_batches_decode_with_one_timestamp_and_distinct_series() {
        let fleet = Fleet::new();
        let b = codec::decode(&fleet.batch(13, 777)).unwrap();
        assert_eq!(b.len(), BATCH_SAMPLES);
        assert!(b.points.iter().all(|p| p.ts_ms == 777));
        let mut keys: Vec<_> = b.points.iter().map(|p| b.key_of(p)).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), BATCH_SAMPLES, "no duplicate series inside a batch");
    }

    #[tokio::test]
    async fn recording_store_notes_each_timestamp_of_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn MetricStore> = Arc::new(EmbeddedStore::open(StoreConfig::new(dir.path())).unwrap());
        let rec = RecordingStore::new(inner);
        let fleet = Fleet::new();
        let mut batch = codec::decode(&fleet.batch(0, 5)).unwrap();
        batch.extend_from(&codec::decode(&fleet.batch(1, 6)).unwrap());
        let report = rec.write(&batch, 0).await.unwrap();
        assert_eq!(report.inserted, 2 * BATCH_SAMPLES as u64);
        let mut ts: Vec<i64> = rec.written().iter().map(|w| w.0).collect();
        ts.sort_unstable();
        assert_eq!(ts, vec![5, 6]);
        rec.close().await.unwrap();
    }
}
