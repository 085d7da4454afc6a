//! [`WorkerStats`]: the counters each fleet worker keeps for `GET /api/v1/fleet/workers/status`
//! (running, interval, checks performed / successful / failed, success rate, last run, last
//! duration), and their snapshot [`WorkerReport`]. Counters are this replica's: with several
//! replicas, a cycle run elsewhere (lease held by another replica) counts as skipped here.

use parking_lot::Mutex;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters of one worker.
#[derive(Debug)]
pub struct WorkerStats {
    name: &'static str,
    interval: Duration,
    running: AtomicBool,
    lease_held: AtomicBool,
    checks: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    requests: AtomicU64,
    cycles: AtomicU64,
    cycles_skipped: AtomicU64,
    cycles_failed: AtomicU64,
    cycles_lease_lost: AtomicU64,
    last: Mutex<LastCycle>,
}

#[derive(Debug, Default, Clone)]
struct LastCycle {
    run_ms: Option<i64>,
    duration_ms: Option<f64>,
    hosts: u64,
    error: Option<String>,
}

/// A snapshot of one worker's counters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerReport {
    /// `fleet.health`, `fleet.metrics` or `fleet.maintenance`.
    pub name: String,
    /// Whether its task runs now.
    pub running: bool,
    /// Its interval, seconds.
    pub interval_s: f64,
    /// Whether this replica held the worker's lease at its last cycle.
    pub lease_held: bool,
    /// Host checks (or fetches) done by this replica.
    pub checks_performed: u64,
    /// Of which got an answer.
    pub successful: u64,
    /// Of which got none.
    pub failed: u64,
    /// `successful / checks_performed` (1 when none yet).
    pub success_rate: f64,
    /// HTTP requests sent (tries, retries included).
    pub requests: u64,
    /// Cycles run here.
    pub cycles: u64,
    /// Cycles skipped because another replica held the lease.
    pub cycles_skipped: u64,
    /// Cycles that failed (store unreachable…).
    pub cycles_failed: u64,
    /// Cycles cut short because this replica lost the lease during them (no new check started
    /// after the loss).
    pub cycles_lease_lost: u64,
    /// End of the last cycle run here (epoch ms).
    pub last_run_ms: Option<i64>,
    /// Its duration, ms.
    pub last_duration_ms: Option<f64>,
    /// Hosts it covered.
    pub last_cycle_hosts: u64,
    /// The last cycle failure.
    pub last_error: Option<String>,
}

impl WorkerStats {
    /// Zeroed counters.
    pub fn new(name: &'static str, interval: Duration) -> Self {
        Self {
            name,
            interval,
            running: AtomicBool::new(false),
            lease_held: AtomicBool::new(false),
            checks: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            cycles: AtomicU64::new(0),
            cycles_skipped: AtomicU64::new(0),
            cycles_failed: AtomicU64::new(0),
            cycles_lease_lost: AtomicU64::new(0),
            last: Mutex::new(LastCycle::default()),
        }
    }

    /// The worker's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Marks the worker running until the guard drops.
    pub(crate) fn running(&self) -> RunningGuard<'_> {
        self.running.store(true, Relaxed);
        RunningGuard(self)
    }

    pub(crate) fn check(&self, answered: bool, tries: u32) {
        self.checks.fetch_add(1, Relaxed);
        self.requests.fetch_add(u64::from(tries), Relaxed);
        if answered {
            self.successes.fetch_add(1, Relaxed);
        } else {
            self.failures.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn lease(&self, held: bool) {
        self.lease_held.store(held, Relaxed);
        if !held {
            self.cycles_skipped.fetch_add(1, Relaxed);
        }
    }

    /// Counted when the loss is noticed, not when the cycle ends.
    pub(crate) fn lease_lost(&self) {
        self.lease_held.store(false, Relaxed);
        self.cycles_lease_lost.fetch_add(1, Relaxed);
    }

    pub(crate) fn cycle(&self, end_ms: i64, took: Duration, hosts: u64, error: Option<String>) {
        self.cycles.fetch_add(1, Relaxed);
        let mut last = self.last.lock();
        if error.is_some() {
            self.cycles_failed.fetch_add(1, Relaxed);
            last.error = error;
        }
        last.run_ms = Some(end_ms);
        last.duration_ms = Some(took.as_secs_f64() * 1000.0);
        last.hosts = hosts;
    }

    /// Cycles run here so far.
    pub fn cycles(&self) -> u64 {
        self.cycles.load(Relaxed)
    }

    /// A snapshot.
    pub fn report(&self) -> WorkerReport {
        let last = self.last.lock().clone();
        let checks = self.checks.load(Relaxed);
        let successful = self.successes.load(Relaxed);
        WorkerReport {
            name: self.name.to_owned(),
            running: self.running.load(Relaxed),
            interval_s: self.interval.as_secs_f64(),
            lease_held: self.lease_held.load(Relaxed),
            checks_performed: checks,
            successful,
            failed: self.failures.load(Relaxed),
            success_rate: if checks == 0 { 1.0 } else { successful as f64 / checks as f64 },
            requests: self.requests.load(Relaxed),
            cycles: self.cycles.load(Relaxed),
            cycles_skipped: self.cycles_skipped.load(Relaxed),
            cycles_failed: self.cycles_failed.load(Relaxed),
            cycles_lease_lost: self.cycles_lease_lost.load(Relaxed),
            last_run_ms: last.run_ms,
            last_duration_ms: last.duration_ms,
            last_cycle_hosts: last.hosts,
            last_error: last.error,
        }
    }
}

/// Clears the running flag when the worker's `run` ends (also by panic).
pub(crate) struct RunningGuard<'a>(&'a WorkerStats);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up() {
        let s = WorkerStats::new("fleet.health", Duration::from_secs(30));
        assert_eq!(s.report().success_rate, 1.0);
        {
            let _g = s.running();
            assert!(s.report().running);
            s.check(true, 1);
            s.check(true, 1);
            s.check(true, 2);
            s.check(false, 3);
            s.lease(false);
            s.cycle(1_000, Duration::from_millis(250), 4, None);
        }
        let r = s.report();
        assert!(!r.running);
        assert_eq!((r.checks_performed, r.successful, r.failed, r.requests), (4, 3, 1, 7));
        assert_eq!(r.success_rate, 0.75);
        assert_eq!((r.cycles, r.cycles_skipped, r.last_run_ms, r.last_duration_ms), (1, 1, Some(1_000), Some(250.0)));
        assert_eq!(r.interval_s, 30.0);
    }
}
