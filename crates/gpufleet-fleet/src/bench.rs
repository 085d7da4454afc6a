//! [`run_cycle_bench`]: full health cycles over a list of agents through the real worker code path
//! (the SQLite store, [`crate::HealthWorker::run_cycle`]: stale-first listing, concurrent checks on
//! the shared keep-alive client, classification, batched history writes, events), timed.
//!
//! The first cycle opens a connection per agent ("cold"); the following ones reuse them where the
//! agents kept them open ("warm"), as cycles do in a running server. `gpufleet bench fleet` runs
//! this against the simulated fleet; `examples/fleet_bench.rs` does the same with the simulated
//! fleet in a child process.

use crate::config::FleetConfig;
use crate::error::FleetError;
use crate::fleet::Fleet;
use crate::lease::LocalLeases;
use crate::spec::HostInput;
use crate::store::{FleetStore, SqliteFleetStore};
use gpufleet_core::time::now_ms;
use gpufleet_runtime::Shutdown;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How to run the benchmark.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Checks in flight at once (`health_concurrency`). Default 256.
    pub concurrency: usize,
    /// Per-try timeout. Default 5 s.
    pub timeout: Duration,
    /// Warm cycles after the first. Default 3.
    pub warm_cycles: usize,
    /// Idle keep-alive connections kept (`agent_keepalive`). Default 4096.
    pub keepalive: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { concurrency: 256, timeout: Duration::from_secs(5), warm_cycles: 3, keepalive: 4096 }
    }
}

/// What the benchmark measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CycleBenchReport {
    /// Hosts per cycle.
    pub hosts: usize,
    /// Median warm cycle, seconds (the first cycle when there are no warm ones).
    pub cycle_s: f64,
    /// `hosts / cycle_s`.
    pub checks_per_s: f64,
    /// The first (cold) cycle, seconds.
    pub cold_cycle_s: f64,
    /// Every warm cycle, seconds.
    pub warm_cycles_s: Vec<f64>,
    /// Hosts that answered in the last cycle.
    pub answered: usize,
    /// Requests of the last cycle (retries included).
    pub requests: u64,
    /// Seconds of the last cycle spent writing to the store.
    pub store_s: f64,
    /// Seconds spent registering the hosts (not part of a cycle).
    pub register_s: f64,
}

/// Registers `hosts` (`(name, agent_url)`) in a fresh SQLite store under `dir` and runs one cold
/// and `opts.warm_cycles` warm health cycles over them.
pub async fn run_cycle_bench(hosts: &[(String, String)], opts: &BenchOptions, dir: &Path) -> Result<CycleBenchReport, FleetError> {
    let interval = opts.timeout.saturating_mul(4).max(Duration::from_secs(30));
    let cfg = FleetConfig {
        health_concurrency: opts.concurrency,
        health_timeout: format!("{}ms", opts.timeout.as_millis().max(1)),
        health_interval: format!("{}ms", interval.as_millis()),
        agent_keepalive: opts.keepalive,
        ..FleetConfig::default()
    };
    let settings = cfg.validate().map_err(|e| FleetError::invalid(e.field.clone(), e.problem))?;
    let store = Arc::new(SqliteFleetStore::open(&dir.join("fleet-bench.db")).await?);
    let started = std::time::Instant::now();
    for (name, url) in hosts {
        let spec = HostInput { name: name.clone(), agent_url: url.clone(), ..Default::default() }.validate()?;
        store.create_host(&spec, now_ms()).await?;
    }
    let register_s = started.elapsed().as_secs_f64();
    let (_fleet, workers) = Fleet::new(store, Arc::new(LocalLeases::new()), settings)?;
    let shutdown = Shutdown::new();
    let cold = workers.health.run_cycle(&shutdown).await?;
    let mut last = cold.clone();
    let mut warm = Vec::with_capacity(opts.warm_cycles);
    for _ in 0..opts.warm_cycles {
        last = workers.health.run_cycle(&shutdown).await?;
        warm.push(last.seconds);
    }
    let cycle_s = median(&warm).unwrap_or(cold.seconds);
    Ok(CycleBenchReport {
        hosts: cold.hosts,
        cycle_s,
        checks_per_s: if cycle_s > 0.0 { cold.hosts as f64 / cycle_s } else { 0.0 },
        cold_cycle_s: cold.seconds,
        warm_cycles_s: warm,
        answered: last.answered,
        requests: last.requests,
        store_s: last.store_s,
        register_s,
    })
}

fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_and_empty() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(super::median(&[4.0, 1.0]), Some(4.0));
        assert_eq!(super::median(&[]), None);
    }
}
