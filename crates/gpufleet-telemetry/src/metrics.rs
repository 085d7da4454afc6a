//! Every internal metric of the telemetry pipeline, declared in one place and registered into a
//! `prometheus-client` registry by [`PipelineMetrics::register`].

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use prometheus_client::registry::Registry;

/// Pipeline counters and histograms, shared by ingest and collectors.
#[derive(Clone)]
pub struct PipelineMetrics {
    /// CSV/JSON rows accepted at ingest.
    pub rows_accepted: Counter,
    /// Rows rejected at ingest (malformed).
    pub rows_rejected: Counter,
    /// Samples published to the broker.
    pub samples_published: Counter,
    /// Samples newly stored by collectors.
    pub samples_stored: Counter,
    /// Samples dropped as duplicates (replays, redeliveries).
    pub samples_duplicate: Counter,
    /// Broker messages collectors could not decode (nacked; dead-lettered after max attempts).
    pub messages_undecodable: Counter,
    /// Store writes that failed and were retried.
    pub store_write_failures: Counter,
    /// Seconds a collector's store write took (batch of messages).
    pub store_write_seconds: Histogram,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self {
            rows_accepted: Counter::default(),
            rows_rejected: Counter::default(),
            samples_published: Counter::default(),
            samples_stored: Counter::default(),
            samples_duplicate: Counter::default(),
            messages_undecodable: Counter::default(),
            store_write_failures: Counter::default(),
            store_write_seconds: Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        }
    }
}

impl PipelineMetrics {
    /// Registers every metric under the `gpufleet_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("gpufleet");
        r.register("ingest_rows_accepted", "Rows accepted at ingest", self.rows_accepted.clone());
        r.register("ingest_rows_rejected", "Malformed rows rejected at ingest", self.rows_rejected.clone());
        r.register("samples_published", "Samples published to the broker", self.samples_published.clone());
        r.register("samples_stored", "Samples newly stored", self.samples_stored.clone());
        r.register("samples_duplicate", "Samples dropped as duplicates", self.samples_duplicate.clone());
        r.register("messages_undecodable", "Broker messages that could not be decoded", self.messages_undecodable.clone());
        r.register("store_write_failures", "Store writes that failed and were retried", self.store_write_failures.clone());
        r.register("store_write_seconds", "Latency of collector store writes", self.store_write_seconds.clone());
    }
}
