//! Collector workers against the real embedded broker and store: good batches are stored once
//! (also when published twice), an undecodable message is nacked until it lands in the dead-letter
//! topic with its reason, and nothing is acked before it is stored.

use bytes::Bytes;
use gpufleet_broker::{Broker, BrokerConfig, EmbeddedBroker};
use gpufleet_core::{codec, BatchBuilder, GpuDesc, GroupName, TopicName};
use gpufleet_runtime::{Shutdown, Supervisor};
use gpufleet_store::{EmbeddedStore, MetricStore, StoreConfig, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use gpufleet_telemetry::{Collector, CollectorConfig, PipelineMetrics};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn batch(host: &str, n: i64) -> Bytes {
    let mut b = BatchBuilder::new();
    let g = b.gpu(&GpuDesc { host: host.into(), uuid: format!("GPU-{host}").into(), index: Some(0), device: "nvidia0".into(), model: "m".into(), labels: vec![] });
    let m = b.metric(&"DCGM_FI_DEV_GPU_UTIL".into());
    for i in 0..n {
        b.push(g, m, 1_700_000_000_000 + i * 1000, i as f64);
    }
    Bytes::from(codec::encode(&b.finish()))
}

#[tokio::test]
async fn collectors_store_once_ack_and_dead_letter_poison() {
    let dir = tempfile::tempdir().unwrap();
    let mut bc = BrokerConfig::new(dir.path().join("b"));
    bc.visibility_timeout = Duration::from_millis(200);
    bc.max_attempts = 2;
    let broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::open(bc).unwrap());
    let mut sc = StoreConfig::new(dir.path().join("s"));
    sc.raw_retention = None;
    let store: Arc<dyn MetricStore> = Arc::new(EmbeddedStore::open(sc).unwrap());
    let topic = TopicName::new("telemetry");
    let group = GroupName::new("collectors");
    broker.create_group(&topic, &group).await.unwrap();
    // Two good batches, the first published twice (a retried ingest), and one poison message.
    broker.publish(&topic, &[batch("h1", 100), batch("h2", 50), batch("h1", 100), Bytes::from_static(b"not a batch")]).await.unwrap();

    let metrics = PipelineMetrics::default();
    let shutdown = Shutdown::new();
    let mut sup = Supervisor::new(shutdown.clone());
    let cfg = CollectorConfig { topic: topic.clone(), group: group.clone(), fetch_max: 2, fetch_wait: Duration::from_millis(50) };
    for i in 0..2 {
        sup.spawn(Collector::new(format!("c{i}"), broker.clone(), store.clone(), cfg.clone(), metrics.clone()));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = broker.stats().await.unwrap();
        let t = stats.iter().find(|t| t.topic == topic).unwrap();
        let g = &t.groups[0];
        if g.lag == 0 && g.in_flight == 0 && t.dead_letters == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "pipeline did not drain: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sup.shutdown(Duration::from_secs(5)).await;
    assert_eq!(store.stats().await.unwrap().samples, 150, "each distinct sample stored once");
    assert_eq!(metrics.samples_duplicate.get(), 100);
    assert!(metrics.messages_undecodable.get() >= 2, "poison seen on each attempt");
    let dead = broker.dead_letters(&topic, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 2);
    assert!(dead[0].reason.contains("undecodable sample batch"), "{}", dead[0].reason);
    assert_eq!(&dead[0].payload[..], b"not a batch");
}

/// A store whose writes fail (retryably) while `down` is set.
struct FlakyStore {
    inner: Arc<dyn MetricStore>,
    down: AtomicBool,
}

#[async_trait::async_trait]
impl MetricStore for FlakyStore {
    async fn write(&self, batch: &gpufleet_core::SampleBatch, ingest_ms: i64) -> Result<gpufleet_store::WriteReport, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("test outage".into()));
        }
        self.inner.write(batch, ingest_ms).await
    }
    async fn query_range(&self, q: &gpufleet_store::RangeQuery) -> Result<gpufleet_store::RangeResult, StoreError> {
        self.inner.query_range(q).await
    }
    async fn aggregate(&self, q: &gpufleet_store::AggregateQuery) -> Result<Vec<gpufleet_store::AggregateRow>, StoreError> {
        self.inner.aggregate(q).await
    }
    async fn series(&self, f: &gpufleet_store::SeriesFilter) -> Result<Vec<(gpufleet_core::SeriesKey, GpuDesc)>, StoreError> {
        self.inner.series(f).await
    }
    async fn gpus(&self) -> Result<Vec<gpufleet_store::GpuInfo>, StoreError> {
        self.inner.gpus().await
    }
    async fn stats(&self) -> Result<gpufleet_store::StoreStats, StoreError> {
        self.inner.stats().await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
    async fn apply_retention(&self, now_ms: i64) -> Result<gpufleet_store::RetentionReport, StoreError> {
        self.inner.apply_retention(now_ms).await
    }
    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}

/// A store outage of several visibility timeouts: the collector holding the batch keeps it (it
/// extends the visibility while it retries), the idle second collector never gets it, no delivery
/// is counted, nothing is dead-lettered (2 attempts allowed), and it is stored once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_neither_redelivers_nor_dead_letters_the_held_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut bc = BrokerConfig::new(dir.path().join("b"));
    bc.visibility_timeout = Duration::from_millis(1500);
    bc.max_attempts = 2;
    let broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::open(bc).unwrap());
    let mut sc = StoreConfig::new(dir.path().join("s"));
    sc.raw_retention = None;
    let flaky = Arc::new(FlakyStore { inner: Arc::new(EmbeddedStore::open(sc).unwrap()), down: AtomicBool::new(true) });
    let store: Arc<dyn MetricStore> = flaky.clone();
    let (topic, group) = (TopicName::new("telemetry"), GroupName::new("collectors"));
    broker.create_group(&topic, &group).await.unwrap();
    broker.publish(&topic, &[batch("h1", 10)]).await.unwrap();

    let metrics = PipelineMetrics::default();
    let mut sup = Supervisor::new(Shutdown::new());
    let cfg = CollectorConfig { topic: topic.clone(), group: group.clone(), fetch_max: 10, fetch_wait: Duration::from_millis(50) };
    for i in 0..2 {
        sup.spawn(Collector::new(format!("c{i}"), broker.clone(), store.clone(), cfg.clone(), metrics.clone()));
    }
    // The outage lasts four visibility timeouts (the scenario, not a synchronisation).
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics.store_write_failures.get() == 0 {
        assert!(Instant::now() < deadline, "no write was attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    flaky.down.store(false, Ordering::SeqCst);
    loop {
        let stats = broker.stats().await.unwrap();
        let t = stats.iter().find(|t| t.topic == topic).unwrap().clone();
        if t.groups[0].lag == 0 && t.groups[0].in_flight == 0 {
            assert_eq!(t.dead_letters, 0, "an outage must not dead-letter telemetry");
            assert_eq!(t.groups[0].redeliveries, 0, "the held batch was never handed out again");
            break;
        }
        assert!(Instant::now() < deadline, "pipeline did not drain: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sup.shutdown(Duration::from_secs(5)).await;
    assert_eq!(store.stats().await.unwrap().samples, 10);
}
