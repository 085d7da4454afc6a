//! [`MaintenanceWorker`] (`fleet.maintenance`): at start and then hourly, on one replica at a time
//! (lease `fleet.maintenance`): create this month's and next month's host metrics partitions when
//! missing, drop whole months older than `metrics_retention`, and delete health checks and
//! state-change events older than `history_retention`.

use crate::error::FleetError;
use crate::fleet::Fleet;
use async_trait::async_trait;
use gpufleet_core::time::now_ms;
use gpufleet_runtime::{Shutdown, Worker, WorkerContext, WorkerError};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Name of the worker and of its lease.
pub const MAINTENANCE_LEASE: &str = "fleet.maintenance";
/// Time between two rounds.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MaintenanceReport {
    /// Partitions created.
    pub partitions_created: Vec<String>,
    /// Partitions dropped by retention.
    pub partitions_dropped: Vec<String>,
    /// History and event rows deleted by retention.
    pub history_rows_deleted: u64,
}

/// The maintenance worker; see the module docs.
pub struct MaintenanceWorker {
    fleet: Arc<Fleet>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl MaintenanceWorker {
    pub(crate) fn new(fleet: Arc<Fleet>) -> Self {
        Self { fleet }
    }

    /// One round at `now_ms` when this replica holds (or takes) the lease; `None`: skipped.
    pub async fn tick(&self, now_ms: i64) -> Result<Option<MaintenanceReport>, FleetError> {
        let held = self.fleet.leases().try_acquire(MAINTENANCE_LEASE, self.fleet.holder(), MAINTENANCE_INTERVAL * 2, now_ms).await?;
        self.fleet.maintenance_stats().lease(held);
        if !held {
            return Ok(None);
        }
        let started = Instant::now();
        let result = self.round(now_ms).await;
        self.fleet.maintenance_stats().cycle(gpufleet_core::time::now_ms(), started.elapsed(), 0, result.as_ref().err().map(|e| e.to_string()));
        result.map(Some)
    }

    async fn round(&self, now_ms: i64) -> Result<MaintenanceReport, FleetError> {
        let store = self.fleet.store();
        let s = self.fleet.settings();
        let report = MaintenanceReport {
            partitions_created: store.ensure_partitions(now_ms, 1).await?,
            partitions_dropped: store.drop_partitions_before(now_ms.saturating_sub(ms(s.metrics_retention))).await?,
            history_rows_deleted: store.apply_history_retention(now_ms.saturating_sub(ms(s.history_retention))).await?,
        };
        info!(?report, "fleet maintenance done");
        Ok(report)
    }
}

#[async_trait]
impl Worker for MaintenanceWorker {
    fn name(&self) -> String {
        MAINTENANCE_LEASE.to_owned()
    }

    fn interval(&self) -> Option<Duration> {
        Some(MAINTENANCE_INTERVAL)
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let fleet = self.fleet.clone();
        let _running = fleet.maintenance_stats().running();
        let shutdown: &Shutdown = &ctx.shutdown;
        let mut ticker = tokio::time::interval(MAINTENANCE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait() => return Ok(()),
            }
            let started = Instant::now();
            match self.tick(now_ms()).await {
                Ok(Some(_)) => ctx.record(true, started.elapsed(), None),
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "fleet maintenance failed");
                    ctx.record(false, started.elapsed(), Some(e.to_string()));
                }
            }
        }
    }
}
