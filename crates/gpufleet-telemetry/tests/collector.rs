//! Collector workers against the real embedded broker and store: good batches are stored once
//! (also when published twice), an undecodable message is nacked until it lands in the dead-letter
//! topic with its reason, and nothing is acked before it is stored.

use bytes::Bytes;
use gpufleet_broker::{Broker, BrokerConfig, EmbeddedBroker};
use gpufleet_core::{codec, BatchBuilder, GpuDesc, GroupName, TopicName};
use gpufleet_runtime::{Shutdown, Supervisor};
use gpufleet_store::{EmbeddedStore, MetricStore, StoreConfig};
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
