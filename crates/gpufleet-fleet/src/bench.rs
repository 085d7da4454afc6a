//! [`run_cycle_bench`]: full health cycles over a list of agents through the real worker code path
//! (the SQLite store, [`crate::HealthWorker::run_cycle`]: stale-first listing, concurrent checks on
//! the shared keep-alive client, classification, batched history writes, events), timed.
//!
//! The first cycle opens a connection per agent ("cold"); the following ones reuse them where the
//! agents kept them open ("warm"), as cycles do in a running server. `gpufleet bench fleet` runs
//! this against the simulated fleet; `examples/fleet_bench.rs` does the same with the simulated
//! fleet in a child process.
//!
//! For the server-memory figure the benchmark also fills a fleet database before a real server
//! opens it: [`register_hosts`] and [`prefill_history`] (days of health history at a coarse
//! spacing, in bulk SQL).

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
    /// Idle keep-alive connections kept (`agent_keepalive`). Default: the server's.
    pub keepalive: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { concurrency: 256, timeout: Duration::from_secs(5), warm_cycles: 3, keepalive: crate::DEFAULT_AGENT_KEEPALIVE }
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
    let register_s = register_hosts(&store, hosts).await?;
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

/// Registers `hosts` (`(name, agent_url)`, active, state `unknown`) through the store's API;
/// returns the seconds it took.
pub async fn register_hosts(store: &SqliteFleetStore, hosts: &[(String, String)]) -> Result<f64, FleetError> {
    let started = std::time::Instant::now();
    for (name, url) in hosts {
        let spec = HostInput { name: name.clone(), agent_url: url.clone(), ..Default::default() }.validate()?;
        store.create_host(&spec, now_ms()).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// What [`prefill_history`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PrefillReport {
    /// Hosts given history (every registered host).
    pub hosts: u64,
    /// Checks per host (`days · 86,400 s / every`).
    pub checks_per_host: u64,
    /// Rows in `health_checks` afterwards.
    pub history_rows: u64,
    /// Seconds it took.
    pub seconds: f64,
}

/// Health history for every registered host: one `healthy` check (no failed components, latency
/// 1–20 ms) every `every` over the last `days` days, the newest `every` ago, written with
/// `INSERT … SELECT` over a recursive series `CROSS JOIN hosts`, one transaction per day.
/// Rows are what the health worker writes for a healthy host; only their spacing is coarser
/// than a real history's (30 days at 30 s would be 864 M rows for 10,000 hosts).
pub async fn prefill_history(store: &SqliteFleetStore, days: u32, every: Duration) -> Result<PrefillReport, FleetError> {
    let started = std::time::Instant::now();
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1_000);
    let per_day = (86_400_000 / every_ms).max(1);
    let now = now_ms();
    let mut conn = store.pool().acquire().await?;
    // A page cache large enough for the hot index pages of a bulk insert (this connection only).
    sqlx::query("PRAGMA cache_size = -262144").execute(&mut *conn).await?;
    for day in 0..i64::from(days) {
        // Steps k of this day: at = now - (days·per_day - k)·every, k in [day·per_day, (day+1)·per_day).
        let first = day * per_day;
        let total = i64::from(days) * per_day;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query(
            "WITH RECURSIVE t(k) AS (SELECT ?1 UNION ALL SELECT k + 1 FROM t WHERE k + 1 < ?2) \
             INSERT INTO health_checks (host_id, at_ms, state, latency_ms, error, components, failures) \
             SELECT h.id, ?3 - (?4 - t.k) * ?5, 'healthy', 1.0 + (abs(random()) % 1900) / 100.0, NULL, NULL, 0 \
             FROM t CROSS JOIN hosts h",
        )
        .bind(first)
        .bind(first + per_day)
        .bind(now)
        .bind(total)
        .bind(every_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    sqlx::query("PRAGMA cache_size = -2000").execute(&mut *conn).await?;
    let hosts: i64 = sqlx::query_scalar("SELECT count(*) FROM hosts").fetch_one(&mut *conn).await?;
    drop(conn);
    Ok(PrefillReport {
        hosts: u64::try_from(hosts).unwrap_or(0),
        checks_per_host: u64::try_from(i64::from(days) * per_day).unwrap_or(0),
        history_rows: history_rows(store).await?,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Rows in the health history.
pub async fn history_rows(store: &SqliteFleetStore) -> Result<u64, FleetError> {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM health_checks").fetch_one(store.pool()).await?;
    Ok(u64::try_from(rows).unwrap_or(0))
}

fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn prefilled_history_spans_the_days_at_the_spacing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteFleetStore::open(&dir.path().join("f.db")).await.unwrap();
        let hosts: Vec<(String, String)> = (0..3).map(|i| (format!("h{i}"), format!("http://127.0.0.1:{}", 9000 + i))).collect();
        register_hosts(&store, &hosts).await.unwrap();
        let before = now_ms();
        let r = prefill_history(&store, 2, Duration::from_secs(3600)).await.unwrap();
        assert_eq!((r.hosts, r.checks_per_host, r.history_rows), (3, 48, 144));
        let (min, max, distinct): (i64, i64, i64) =
            sqlx::query_as("SELECT min(at_ms), max(at_ms), count(DISTINCT at_ms) FROM health_checks WHERE host_id = (SELECT min(id) FROM hosts)")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(distinct, 48);
        assert_eq!(max - min, 47 * 3_600_000);
        assert!(max <= before && max >= before - 3_600_000, "newest row one spacing ago: {max} vs {before}");
        let history = store.health_history(1, &crate::store::HistoryQuery { since_ms: None, limit: 5 }).await.unwrap();
        assert_eq!(history.len(), 5);
        assert!(history.iter().all(|c| c.state == crate::model::HostState::Healthy && c.error.is_none()));
    }

    #[test]
    fn median_of_odd_and_even_and_empty() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(super::median(&[4.0, 1.0]), Some(4.0));
        assert_eq!(super::median(&[]), None);
    }
}
