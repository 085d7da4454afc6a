//! [`LocalLeases`]: an in-process [`LeaseStore`] for a single server (and for tests and the
//! benchmark). Replicas sharing a database must use the metadata store's leases instead
//! (`SqliteMetaStore` / `PostgresMetaStore` of `gpufleet-auth`), or each would run every cycle.
//!
//! Also [`CycleLease`], the lease a worker holds while one cycle runs: renewed every half lease,
//! and given up (the cycle told to start no new work) as soon as it is lost:
//! - a renewal answered "held by another replica" is a definite loss, acted on at once;
//! - a renewal that fails (store error) or does not answer is retried every eighth of the lease
//!   while the lease confirmed last may still run; when it runs out unconfirmed, that is a loss too
//!   (another replica may hold it by then).

use crate::stats::WorkerStats;
use async_trait::async_trait;
use gpufleet_auth::{LeaseStore, StoreError};
use gpufleet_core::time::now_ms;
use gpufleet_runtime::Shutdown;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};
use tracing::warn;

/// Leases held in this process's memory.
#[derive(Debug, Default)]
pub struct LocalLeases {
    leases: Mutex<HashMap<String, (String, i64)>>,
}

impl LocalLeases {
    /// No lease taken.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl LeaseStore for LocalLeases {
    async fn try_acquire(&self, name: &str, holder: &str, ttl: Duration, now_ms: i64) -> Result<bool, StoreError> {
        let mut map = self.leases.lock();
        let expires = now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let free = map.get(name).is_none_or(|(h, until)| h == holder || *until <= now_ms);
        if free {
            map.insert(name.to_owned(), (holder.to_owned(), expires));
        }
        Ok(free)
    }

    async fn release(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        let mut map = self.leases.lock();
        if map.get(name).is_some_and(|(h, _)| h == holder) {
            map.remove(name);
            return Ok(true);
        }
        Ok(false)
    }

    async fn holder(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        Ok(self.leases.lock().get(name).cloned())
    }
}

/// Why a cycle's lease was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseLoss {
    /// A renewal found the lease held by another replica.
    Taken,
    /// No renewal succeeded before the lease confirmed last ran out (the last store error).
    Unconfirmed(String),
}

impl std::fmt::Display for LeaseLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseLoss::Taken => f.write_str("taken by another replica"),
            LeaseLoss::Unconfirmed(e) => write!(f, "not renewed before it ran out ({e})"),
        }
    }
}

/// A lease held for one cycle: taken by the tick at `confirmed_at`, kept by [`CycleLease::keep`].
pub(crate) struct CycleLease {
    leases: Arc<dyn LeaseStore>,
    name: &'static str,
    holder: String,
    ttl: Duration,
    confirmed_at: Instant,
}

impl CycleLease {
    /// Takes (or renews) `name` for `ttl`; `None` when another replica holds it.
    pub(crate) async fn acquire(leases: &Arc<dyn LeaseStore>, name: &'static str, holder: &str, ttl: Duration) -> Result<Option<CycleLease>, StoreError> {
        let asked = Instant::now();
        let held = leases.try_acquire(name, holder, ttl, now_ms()).await?;
        Ok(held.then(|| CycleLease { leases: leases.clone(), name, holder: holder.to_owned(), ttl, confirmed_at: asked }))
    }

    /// Renews the lease every half lease until it is lost, and returns why; never returns while
    /// the lease is held. The lease counts from before each successful call, so the local
    /// deadline is never later than the store's.
    pub(crate) async fn keep(mut self) -> LeaseLoss {
        let mut next = self.confirmed_at + self.ttl / 2;
        let mut last_error = String::from("no answer from the lease store");
        loop {
            let expiry = self.confirmed_at + self.ttl;
            tokio::select! {
                _ = sleep_until(next) => {}
                _ = sleep_until(expiry) => return LeaseLoss::Unconfirmed(last_error),
            }
            let asked = Instant::now();
            let renewed = tokio::select! {
                r = self.leases.try_acquire(self.name, &self.holder, self.ttl, now_ms()) => r,
                _ = sleep_until(expiry) => return LeaseLoss::Unconfirmed(last_error),
            };
            match renewed {
                Ok(true) => {
                    self.confirmed_at = asked;
                    next = asked + self.ttl / 2;
                }
                Ok(false) => return LeaseLoss::Taken,
                Err(e) => {
                    warn!(error = %e, lease = self.name, "renewing the lease failed; retrying while it may still be held");
                    last_error = e.to_string();
                    next = Instant::now() + self.ttl / 8;
                }
            }
        }
    }
}

/// Runs `work` under `lease` (when given): on a loss, logs it, counts it in `stats`, fires `stop`
/// (the work must start nothing new once it fires, and may finish what it started) and waits for
/// `work` to end. Returns its output and the loss.
pub(crate) async fn while_held<T>(lease: Option<CycleLease>, stats: &WorkerStats, stop: &Shutdown, work: impl Future<Output = T>) -> (T, Option<LeaseLoss>) {
    let Some(lease) = lease else {
        return (work.await, None);
    };
    let name = lease.name;
    let mut work = std::pin::pin!(work);
    tokio::select! {
        out = &mut work => (out, None),
        loss = lease.keep() => {
            warn!(lease = name, reason = %loss, "lease lost during a cycle: no new work starts in it; the next tick tries to take the lease again");
            stats.lease_lost();
            stop.trigger();
            (work.await, Some(loss))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_leases_follow_the_contract() {
        let s = LocalLeases::new();
        gpufleet_auth::lease::conformance::first_caller_wins(&s).await;
        let s = LocalLeases::new();
        gpufleet_auth::lease::conformance::expiry_hands_it_over(&s).await;
        let s = LocalLeases::new();
        gpufleet_auth::lease::conformance::renewal_keeps_it(&s).await;
        let s = LocalLeases::new();
        gpufleet_auth::lease::conformance::release_frees_it(&s).await;
    }

    /// Paused time: the keeper renews every half lease and returns only once the lease is taken.
    #[tokio::test(start_paused = true)]
    async fn the_keeper_renews_until_the_lease_is_taken() {
        let leases: Arc<dyn LeaseStore> = Arc::new(LocalLeases::new());
        let ttl = Duration::from_secs(10);
        let lease = CycleLease::acquire(&leases, "fleet.health", "a", ttl).await.expect("acquire").expect("free");
        assert!(CycleLease::acquire(&leases, "fleet.health", "b", ttl).await.expect("contend").is_none());
        let mut keep = std::pin::pin!(lease.keep());
        // Ten lease lengths: held all along (the store's expiry is wall-clock, barely moving here).
        assert!(tokio::time::timeout(ttl * 10, &mut keep).await.is_err(), "the keeper gave up a held lease");
        let (_, until) = leases.holder("fleet.health").await.expect("holder").expect("held");
        assert!(leases.try_acquire("fleet.health", "b", ttl, until).await.expect("steal"));
        let lost = tokio::time::timeout(ttl, &mut keep).await.expect("the loss is noticed at the next renewal");
        assert_eq!(lost, LeaseLoss::Taken);
    }
}
