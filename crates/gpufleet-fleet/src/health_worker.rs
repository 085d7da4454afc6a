//! [`HealthWorker`] (`fleet.health`): every `health_interval`, one health cycle over every active
//! host, on one replica at a time.
//!
//! # A cycle
//! 1. Take the lease `fleet.health` for two intervals ([`LeaseStore::try_acquire`]; a renewal when
//!    this replica holds it). Another replica holds it → skip this cycle (counted as skipped).
//! 2. Load the `active` hosts (not `inactive`, not `maintenance`), least recently checked first.
//! 3. Check them concurrently, at most `health_concurrency` at once, in that order
//!    ([`Checker::check`]: tries, timeout, classification).
//! 4. Meanwhile a writer takes finished checks in batches of up to [`BATCH`] and records each
//!    batch ([`FleetStore::record_checks`], one transaction), stores its state changes and sends
//!    them to [`Fleet::subscribe`] subscribers, and the whole batch to
//!    [`Fleet::subscribe_checks`] subscribers.
//! 5. Meanwhile, every interval (half the lease), the lease is renewed ([`CycleLease`]), whether
//!    or not checks are finishing. Once it is lost — taken by another replica, or not confirmed
//!    before it ran out because the store failed — no new check starts in this cycle; those in
//!    flight finish and are written, the loss is logged and counted (`cycles_lease_lost`,
//!    [`CycleReport::lease_lost`]), and the next tick tries to take the lease again.
//!
//! On shutdown no new check starts; those in flight finish and are written, then the worker
//! returns. A failed store write fails the cycle (recorded in the worker status), not the worker:
//! the next cycle tries again.

use crate::check::{CheckOutcome, Checker};
use crate::error::FleetError;
use crate::fleet::Fleet;
use crate::lease::{while_held, CycleLease};
use crate::model::{CheckResult, HostStatus, StateChange};
use crate::store::{HostFilter, HostOrder};
use async_trait::async_trait;
use gpufleet_core::time::now_ms;
use gpufleet_runtime::{Shutdown, Worker, WorkerContext, WorkerError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Name of the worker and of its lease.
pub const HEALTH_LEASE: &str = "fleet.health";
/// Checks per store batch.
pub const BATCH: usize = 1000;

/// What one cycle did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CycleReport {
    /// Hosts checked.
    pub hosts: usize,
    /// Of which answered with a health report.
    pub answered: usize,
    /// Requests sent (tries).
    pub requests: u64,
    /// Hosts per state after the cycle.
    pub states: BTreeMap<String, usize>,
    /// State changes.
    pub changes: usize,
    /// Store batches written.
    pub batches: usize,
    /// Time spent writing batches (history, hosts, events), seconds.
    pub store_s: f64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Why the lease was lost during the cycle, which then started no new check (hosts after
    /// the loss were not checked); `None` when it was kept (or the cycle ran without one).
    pub lease_lost: Option<String>,
}

/// Whether a tick ran a cycle.
#[derive(Clone, Debug, PartialEq)]
pub enum Tick {
    /// This replica held the lease and ran the cycle.
    Ran(CycleReport),
    /// Another replica holds the lease.
    Skipped,
}

/// The health worker; see the module docs.
pub struct HealthWorker {
    fleet: Arc<Fleet>,
    checker: Arc<Checker>,
}

impl HealthWorker {
    pub(crate) fn new(fleet: Arc<Fleet>) -> Self {
        let checker = Arc::new(fleet.checker());
        Self { fleet, checker }
    }

    /// One tick: take (or renew) the lease, and when held run one cycle.
    pub async fn tick(&self, shutdown: &Shutdown) -> Result<Tick, FleetError> {
        let ttl = self.fleet.settings().health_interval * 2;
        let lease = CycleLease::acquire(self.fleet.leases(), HEALTH_LEASE, self.fleet.holder(), ttl).await?;
        self.fleet.health_stats().lease(lease.is_some());
        let Some(lease) = lease else {
            debug!("another replica holds the health lease; skipping this cycle");
            return Ok(Tick::Skipped);
        };
        self.timed_cycle(shutdown, Some(lease)).await.map(Tick::Ran)
    }

    /// One cycle over every active host, without the lease (the benchmark and tests).
    pub async fn run_cycle(&self, shutdown: &Shutdown) -> Result<CycleReport, FleetError> {
        self.timed_cycle(shutdown, None).await
    }

    async fn timed_cycle(&self, shutdown: &Shutdown, lease: Option<CycleLease>) -> Result<CycleReport, FleetError> {
        let started = Instant::now();
        let result = self.cycle(shutdown, started, lease).await;
        let (hosts, error) = match &result {
            Ok(r) => (r.hosts as u64, None),
            Err(e) => (0, Some(e.to_string())),
        };
        self.fleet.health_stats().cycle(now_ms(), started.elapsed(), hosts, error);
        result
    }

    async fn cycle(&self, shutdown: &Shutdown, started: Instant, lease: Option<CycleLease>) -> Result<CycleReport, FleetError> {
        let filter = HostFilter { status: Some(HostStatus::Active), order: HostOrder::StaleFirst, ..Default::default() };
        let hosts = self.fleet.store().list_hosts(&filter).await?;
        let concurrency = self.fleet.settings().health_concurrency.get();
        let (tx, rx) = mpsc::channel::<CheckOutcome>(BATCH * 2);
        let checker = self.checker.clone();
        // Fires on shutdown, or when the lease is lost.
        let stop = shutdown.child();
        let stop_checks = stop.clone();
        let checks = async move {
            // One task per check, so checks use every runtime thread; the semaphore bounds them
            // and its FIFO order keeps the stale-first order. The set is joined before the cycle
            // ends (and aborts its tasks if the cycle is dropped).
            let permits = Arc::new(Semaphore::new(concurrency));
            let mut tasks = JoinSet::new();
            for host in hosts {
                let permit = tokio::select! {
                    biased;
                    // On shutdown or a lost lease no new check starts; those in flight finish.
                    _ = stop_checks.wait() => break,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                if stop_checks.is_triggered() {
                    break;
                }
                let (checker, tx) = (checker.clone(), tx.clone());
                tasks.spawn(async move {
                    let outcome = checker.check(&host).await;
                    drop(permit);
                    let _ = tx.send(outcome).await;
                });
                while tasks.try_join_next().is_some() {}
            }
            drop(tx);
            while tasks.join_next().await.is_some() {}
        };
        let work = async { tokio::join!(checks, self.write(rx)).1 };
        let (written, lost) = while_held(lease, self.fleet.health_stats(), &stop, work).await;
        self.fleet.agent_http().evict_idle();
        let mut report = written?;
        report.seconds = started.elapsed().as_secs_f64();
        report.lease_lost = lost.map(|l| l.to_string());
        info!(hosts = report.hosts, answered = report.answered, changes = report.changes, seconds = report.seconds, lease_lost = ?report.lease_lost, "health cycle done");
        Ok(report)
    }

    /// Drains finished checks into the store in batches.
    async fn write(&self, mut rx: mpsc::Receiver<CheckOutcome>) -> Result<CycleReport, FleetError> {
        let mut report = CycleReport::default();
        let mut first_error: Option<FleetError> = None;
        let mut buf = Vec::with_capacity(BATCH);
        loop {
            buf.clear();
            if rx.recv_many(&mut buf, BATCH).await == 0 {
                break;
            }
            let mut results: Vec<CheckResult> = Vec::with_capacity(buf.len());
            let mut events: Vec<StateChange> = Vec::new();
            for o in buf.drain(..) {
                self.fleet.health_stats().check(o.result.answered(), o.tries);
                report.hosts += 1;
                report.answered += usize::from(o.result.answered());
                report.requests += u64::from(o.tries);
                *report.states.entry(o.result.state.as_str().to_owned()).or_default() += 1;
                events.extend(o.event);
                results.push(o.result);
            }
            report.changes += events.len();
            report.batches += 1;
            let writing = Instant::now();
            let written = self.fleet.record(results, events).await;
            report.store_s += writing.elapsed().as_secs_f64();
            if let Err(e) = written {
                warn!(error = %e, "recording health checks failed");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

#[async_trait]
impl Worker for HealthWorker {
    fn name(&self) -> String {
        HEALTH_LEASE.to_owned()
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.fleet.settings().health_interval)
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let stats = self.fleet.clone();
        let _running = stats.health_stats().running();
        let mut ticker = tokio::time::interval(self.fleet.settings().health_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = ctx.shutdown.wait() => return Ok(()),
            }
            let started = Instant::now();
            match self.tick(&ctx.shutdown).await {
                Ok(Tick::Ran(_)) => ctx.record(true, started.elapsed(), None),
                Ok(Tick::Skipped) => {}
                Err(e) => {
                    warn!(error = %e, "health cycle failed");
                    ctx.record(false, started.elapsed(), Some(e.to_string()));
                }
            }
        }
    }
}
