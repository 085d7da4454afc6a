//! [`MetricsWorker`] (`fleet.metrics`): every `metrics_interval`, the host metrics of every active
//! host that is `healthy` or `degraded`, on one replica at a time (lease `fleet.metrics`).
//!
//! A round: take the lease (skip when another replica holds it); create this month's and next
//! month's partitions when missing ([`FleetStore::ensure_partitions`](crate::FleetStore::ensure_partitions));
//! `GET {agent_url}/metrics/host` of each host, `health_concurrency` at once, one try each with the
//! agent token; store the samples in batches ([`Fleet::store_metrics`]: the monthly partitions and
//! the in-memory latest sample per host). A sample is stored at the agent's `time_ms`, or at the
//! server's time when the agent's clock is more than [`MAX_SKEW_MS`] off (so a wrong clock cannot
//! aim at a month without a partition). Unreachable and critical hosts are not read: their last
//! metrics stay as they were.
//!
//! During a round the lease is renewed every interval (half the lease, [`CycleLease`]); once it
//! is lost (taken by another replica, or not confirmed before it ran out) no new fetch starts in
//! this round, those in flight finish and are stored, and the loss is logged and counted
//! (`cycles_lease_lost`, [`MetricsReport::lease_lost`]); the next tick tries to take it again.

use crate::check::{takes_metrics, Checker};
use crate::error::FleetError;
use crate::fleet::Fleet;
use crate::health_worker::BATCH;
use crate::lease::{while_held, CycleLease};
use crate::model::HostStatus;
use crate::store::{HostFilter, HostOrder};
use async_trait::async_trait;
use futures::StreamExt;
use gpufleet_agent::wire::HostMetrics;
use gpufleet_core::time::now_ms;
use gpufleet_runtime::{Shutdown, Worker, WorkerContext, WorkerError};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Name of the worker and of its lease.
pub const METRICS_LEASE: &str = "fleet.metrics";
/// A sample whose time is further than this from the server's clock is stored at the server's.
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MetricsReport {
    /// Hosts asked (all that take metrics, unless shutdown or a lost lease ended the round early).
    pub hosts: usize,
    /// Samples stored.
    pub stored: usize,
    /// Hosts that did not give a sample.
    pub failed: usize,
    /// Partitions created by this round.
    pub partitions_created: Vec<String>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Why the lease was lost during the round, which then started no new fetch; `None` when
    /// it was kept.
    pub lease_lost: Option<String>,
}

/// The metrics worker; see the module docs.
pub struct MetricsWorker {
    fleet: Arc<Fleet>,
    checker: Arc<Checker>,
}

impl MetricsWorker {
    pub(crate) fn new(fleet: Arc<Fleet>) -> Self {
        let checker = Arc::new(fleet.checker());
        Self { fleet, checker }
    }

    /// One tick: take (or renew) the lease and, when held, run one round. `None`: skipped.
    pub async fn tick(&self, shutdown: &Shutdown) -> Result<Option<MetricsReport>, FleetError> {
        let ttl = self.fleet.settings().metrics_interval * 2;
        let lease = CycleLease::acquire(self.fleet.leases(), METRICS_LEASE, self.fleet.holder(), ttl).await?;
        self.fleet.metrics_stats().lease(lease.is_some());
        let Some(lease) = lease else {
            debug!("another replica holds the metrics lease; skipping this round");
            return Ok(None);
        };
        let started = Instant::now();
        // Fires on shutdown, or when the lease is lost.
        let stop = shutdown.child();
        let (result, lost) = while_held(Some(lease), self.fleet.metrics_stats(), &stop, self.round(&stop)).await;
        let result = result.map(|r| MetricsReport { lease_lost: lost.map(|l| l.to_string()), ..r });
        let (hosts, error) = match &result {
            Ok(r) => (r.hosts as u64, None),
            Err(e) => (0, Some(e.to_string())),
        };
        self.fleet.metrics_stats().cycle(now_ms(), started.elapsed(), hosts, error);
        result.map(Some)
    }

    async fn round(&self, shutdown: &Shutdown) -> Result<MetricsReport, FleetError> {
        let started = Instant::now();
        let mut report = MetricsReport { partitions_created: self.fleet.store().ensure_partitions(now_ms(), 1).await?, ..Default::default() };
        let filter = HostFilter { status: Some(HostStatus::Active), order: HostOrder::StaleFirst, ..Default::default() };
        let hosts: Vec<_> = self.fleet.store().list_hosts(&filter).await?.into_iter().filter(takes_metrics).collect();
        let concurrency = self.fleet.settings().health_concurrency.get();
        let stop = shutdown.clone();
        let checker = self.checker.clone();
        let fetched = futures::stream::iter(hosts)
            .take_until(async move { stop.wait().await })
            .map(move |h| {
                let checker = checker.clone();
                async move {
                    let answer = checker.host_metrics(&h).await;
                    (h, answer)
                }
            })
            .buffer_unordered(concurrency)
            .ready_chunks(BATCH);
        let mut fetched = std::pin::pin!(fetched);
        let stats = self.fleet.metrics_stats();
        while let Some(chunk) = fetched.next().await {
            let now = now_ms();
            let mut batch: Vec<(i64, Arc<HostMetrics>)> = Vec::with_capacity(chunk.len());
            for (host, answer) in chunk {
                report.hosts += 1;
                stats.check(answer.is_ok(), 1);
                match answer {
                    Ok(mut m) => {
                        if (m.time_ms - now).abs() > MAX_SKEW_MS {
                            m.time_ms = now;
                        }
                        batch.push((host.id, Arc::new(m)));
                    }
                    Err(e) => {
                        report.failed += 1;
                        debug!(host = %host.name, error = %e, "host metrics not read");
                    }
                }
            }
            report.stored += self.fleet.store_metrics(batch).await?;
        }
        report.seconds = started.elapsed().as_secs_f64();
        info!(hosts = report.hosts, stored = report.stored, failed = report.failed, stopped = shutdown.is_triggered(), "metrics round done");
        Ok(report)
    }
}

#[async_trait]
impl Worker for MetricsWorker {
    fn name(&self) -> String {
        METRICS_LEASE.to_owned()
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.fleet.settings().metrics_interval)
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let fleet = self.fleet.clone();
        let _running = fleet.metrics_stats().running();
        let mut ticker = tokio::time::interval(self.fleet.settings().metrics_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = ctx.shutdown.wait() => return Ok(()),
            }
            let started = Instant::now();
            match self.tick(&ctx.shutdown).await {
                Ok(Some(_)) => ctx.record(true, started.elapsed(), None),
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "metrics round failed");
                    ctx.record(false, started.elapsed(), Some(e.to_string()));
                }
            }
        }
    }
}
