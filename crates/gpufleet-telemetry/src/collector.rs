//! Collectors: a pool of workers that fetch telemetry messages from the broker, decode and validate
//! them, write them to the store in one batch, and only then ack.
//!
//! Failure behaviour:
//! - an undecodable message is nacked with the decode error (the broker dead-letters it after
//!   `max_attempts`), the rest of the batch flows on;
//! - a failed store write is retried with backoff while the messages stay unacked; while it waits
//!   the collector extends their visibility every second (`Broker::extend`; so the visibility
//!   timeout must exceed 1 s plus one write attempt — the default is 5 s), so an outage of the store
//!   neither hands the batch to another collector nor counts deliveries towards the dead-letter
//!   topic; if the collector dies, the broker redelivers after the visibility timeout, which is
//!   harmless because the store write is idempotent;
//! - on shutdown the worker finishes the batch in hand (write + ack) and returns.

use gpufleet_core::time::now_ms;
use crate::metrics::PipelineMetrics;
use async_trait::async_trait;
use gpufleet_broker::{Broker, MessageId};
use gpufleet_core::{codec, BatchBuilder, ConsumerName, GroupName, SampleBatch, TopicName};
use gpufleet_runtime::{Backoff, Worker, WorkerContext, WorkerError};
use gpufleet_store::MetricStore;
use std::{sync::Arc, time::Duration, time::Instant};
use tracing::{debug, warn};

/// Settings of the collector pool.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// Topic to consume.
    pub topic: TopicName,
    /// Consumer group shared by all collectors (in every process).
    pub group: GroupName,
    /// Messages fetched per round.
    pub fetch_max: usize,
    /// How long a fetch waits for messages.
    pub fetch_wait: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self { topic: TopicName::new("telemetry"), group: GroupName::new("collectors"), fetch_max: 64, fetch_wait: Duration::from_millis(200) }
    }
}

/// One collector worker.
pub struct Collector {
    id: ConsumerName,
    broker: Arc<dyn Broker>,
    store: Arc<dyn MetricStore>,
    config: CollectorConfig,
    metrics: PipelineMetrics,
}

impl Collector {
    /// A collector named `id` (unique within the group).
    pub fn new(id: impl Into<ConsumerName>, broker: Arc<dyn Broker>, store: Arc<dyn MetricStore>, config: CollectorConfig, metrics: PipelineMetrics) -> Self {
        Self { id: id.into(), broker, store, config, metrics }
    }

    /// Processes one fetched round; returns the number of messages handled.
    async fn round(&self, ctx: &WorkerContext) -> Result<usize, WorkerError> {
        let c = &self.config;
        let msgs = self.broker.fetch(&c.topic, &c.group, &self.id, c.fetch_max, c.fetch_wait).await?;
        if msgs.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let mut decoded: Vec<SampleBatch> = Vec::with_capacity(msgs.len());
        let mut ids: Vec<MessageId> = Vec::with_capacity(msgs.len());
        for m in &msgs {
            match codec::decode(&m.payload) {
                Ok(batch) => {
                    decoded.push(batch);
                    ids.push(m.id);
                }
                Err(e) => {
                    self.metrics.messages_undecodable.inc();
                    warn!(error = %e, id = %m.id, attempt = m.attempt, "undecodable telemetry message");
                    self.broker.nack(&c.topic, &c.group, m.id, &format!("undecodable sample batch: {e}")).await?;
                }
            }
        }
        // One write for the whole round (one WAL record, one fsync); dictionaries merged once.
        let merged = if decoded.len() == 1 {
            decoded.pop().unwrap_or_default()
        } else {
            let mut b = BatchBuilder::new();
            for batch in &decoded {
                b.append_batch(batch);
            }
            b.finish()
        };
        if merged.is_empty() {
            self.broker.ack(&c.topic, &c.group, &ids).await?;
            return Ok(msgs.len());
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let t = Instant::now();
            match self.store.write(&merged, now_ms()).await {
                Ok(report) => {
                    self.metrics.store_write_seconds.observe(t.elapsed().as_secs_f64());
                    self.metrics.samples_stored.inc_by(report.inserted);
                    self.metrics.samples_duplicate.inc_by(report.duplicates);
                    break;
                }
                Err(e) => {
                    self.metrics.store_write_failures.inc();
                    ctx.record(false, t.elapsed(), Some(e.to_string()));
                    let delay = backoff.next_delay();
                    warn!(error = %e, ?delay, "store write failed; retrying (messages stay unacked)");
                    if ctx.shutdown.is_triggered() && !e.is_retryable() {
                        return Err(e.into());
                    }
                    self.hold(&ids, delay).await;
                    if ctx.shutdown.is_triggered() && backoff.attempts() > 3 {
                        // Leave the messages unacked: the broker redelivers them after restart.
                        return Err(e.into());
                    }
                }
            }
        }
        self.broker.ack(&c.topic, &c.group, &ids).await?;
        ctx.record(true, started.elapsed(), None);
        debug!(messages = ids.len(), samples = merged.len(), "batch stored and acked");
        Ok(msgs.len())
    }
}


impl Collector {
    /// Waits `delay` while keeping `ids` in flight: their visibility is extended now and every
    /// [`EXTEND_EVERY`] (so any visibility timeout above that, plus one write attempt, holds).
    async fn hold(&self, ids: &[MessageId], delay: Duration) {
        let c = &self.config;
        let until = tokio::time::Instant::now() + delay;
        loop {
            if let Err(e) = self.broker.extend(&c.topic, &c.group, &self.id, ids).await {
                warn!(error = %e, "could not extend the batch's visibility; another collector may take it over");
            }
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(EXTEND_EVERY)).await;
        }
    }
}

/// How often a collector retrying a store write re-extends its batch's visibility.
pub const EXTEND_EVERY: Duration = Duration::from_secs(1);

#[async_trait]
impl Worker for Collector {
    fn name(&self) -> String {
        format!("collector-{}", self.id)
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        self.broker.create_group(&self.config.topic, &self.config.group).await?;
        // A round returns within `fetch_wait` when idle, so checking the signal between rounds
        // stops promptly while always finishing (write + ack) the batch in hand.
        while !ctx.shutdown.is_triggered() {
            self.round(&ctx).await?;
        }
        Ok(())
    }
}
