//! [`AuthMaintenance`]: the periodic worker that writes batched key last-use times, forgets idle
//! rate-limit buckets and applies audit retention.

use crate::service::AuthService;
use async_trait::async_trait;
use gpufleet_runtime::{Worker, WorkerContext, WorkerError};
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tracing::{info, warn};

/// Periodic upkeep of an [`AuthService`]. Run it under the binary's `Supervisor`; on shutdown it
/// writes the last-use times one final time.
pub struct AuthMaintenance {
    service: Arc<AuthService>,
    interval: Duration,
    audit_retention: Option<Duration>,
}

impl AuthMaintenance {
    /// Upkeep every `interval`; audit records older than `audit_retention` are removed (`None`:
    /// kept forever).
    pub fn new(service: Arc<AuthService>, interval: Duration, audit_retention: Option<Duration>) -> Self {
        Self { service, interval, audit_retention }
    }

    /// One round of upkeep at `now_ms`.
    pub async fn run_once(&self, now_ms: i64) -> Result<(), WorkerError> {
        self.service.flush_last_used().await?;
        self.service.limiter.prune();
        if let Some(keep) = self.audit_retention {
            let cutoff = now_ms.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
            let removed = self.service.store.apply_audit_retention(cutoff).await?;
            if removed > 0 {
                info!(removed, "audit retention applied");
            }
        }
        Ok(())
    }
}

impl AuthService {
    /// Writes the last-use times noted since the previous call; on failure they are kept for the
    /// next one. Returns how many keys were written.
    pub async fn flush_last_used(&self) -> Result<usize, crate::StoreError> {
        let uses = self.cache.take_last_used();
        if uses.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.store.touch_last_used(&uses).await {
            self.cache.restore_last_used(&uses);
            return Err(e);
        }
        Ok(uses.len())
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[async_trait]
impl Worker for AuthMaintenance {
    fn name(&self) -> String {
        "auth-maintenance".to_owned()
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = ctx.shutdown.wait() => {
                    if let Err(error) = self.service.flush_last_used().await {
                        warn!(%error, "last-use times not written at shutdown");
                    }
                    return Ok(());
                }
            }
            let started = Instant::now();
            let res = self.run_once(now_ms()).await;
            ctx.record(res.is_ok(), started.elapsed(), res.as_ref().err().map(ToString::to_string));
            if let Err(error) = res {
                warn!(%error, "auth maintenance round failed");
            }
        }
    }
}
