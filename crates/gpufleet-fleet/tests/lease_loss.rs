//! A worker that loses its lease in the middle of a cycle starts no new check (or fetch) in it:
//! the lease taken by a second holder (a definite loss), and the lease store failing until the
//! lease runs out (the SQLite metadata store closed). One check at a time, the first host's
//! answer held by the stub until the loss has been counted, so the order is fixed without timing:
//! no other host can start before the held one finishes, and it finishes only after the loss.

mod common;

use common::{register, Answer, Stub};
use gpufleet_agent::wire::Status;
use gpufleet_auth::{LeaseStore, SqliteMetaStore};
use gpufleet_core::time::now_ms;
use gpufleet_fleet::health_worker::HEALTH_LEASE;
use gpufleet_fleet::metrics_worker::METRICS_LEASE;
use gpufleet_fleet::{Fleet, FleetConfig, FleetSettings, FleetWorkers, HistoryQuery, LocalLeases, SqliteFleetStore, Tick, WorkerReport};
use gpufleet_runtime::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Hosts; the first one's answer is held.
const HOSTS: usize = 5;

/// Lease of 400 ms (two intervals), renewed every 200 ms; one check at a time, one try, and a
/// timeout far longer than the test so that only the test ends the held check.
fn settings() -> FleetSettings {
    let cfg = FleetConfig {
        health_interval: "200ms".into(),
        health_timeout: "150ms".into(),
        health_retry_backoff: "5ms".into(),
        metrics_interval: "200ms".into(),
        unreachable_after: 1,
        health_concurrency: 1,
        ..FleetConfig::default()
    };
    let mut settings = cfg.validate().expect("test settings");
    // The config refuses a timeout longer than the interval; a cycle still outlasts its lease
    // when agents hang through all their tries (the system test's case). Set past validation so
    // that the held answer, not a timeout, decides when the first check ends.
    settings.health_timeout = Duration::from_secs(120);
    settings
}

async fn fleet_over(dir: &std::path::Path, leases: Arc<dyn LeaseStore>, stub: &Stub) -> anyhow::Result<(Arc<Fleet>, FleetWorkers, Vec<i64>)> {
    let store = Arc::new(SqliteFleetStore::open(&dir.join("fleet.db")).await?);
    let (fleet, workers) = Fleet::open(store, leases, settings()).await?;
    let mut ids = Vec::new();
    for i in 0..HOSTS {
        ids.push(register(&fleet, &format!("h{i}"), &stub.url(i)).await);
    }
    Ok((fleet, workers, ids))
}

/// Polls `cond` every 5 ms for at most 20 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "waited 20 s for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn health(fleet: &Fleet) -> WorkerReport {
    fleet.workers_status().remove(0)
}

fn metrics(fleet: &Fleet) -> WorkerReport {
    fleet.workers_status().remove(1)
}

/// Takes `name` for `thief` while `holder`'s lease still runs (its expiry is passed as "now").
async fn steal(leases: &dyn LeaseStore, name: &str) -> anyhow::Result<()> {
    let (holder, until_ms) = leases.holder(name).await?.expect("the worker holds the lease");
    assert_ne!(holder, "thief");
    assert!(leases.try_acquire(name, "thief", Duration::from_secs(3600), until_ms.max(now_ms())).await?, "the thief takes the lease");
    Ok(())
}

#[tokio::test]
async fn a_health_cycle_whose_lease_is_taken_starts_no_new_check() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let stub = Stub::start([vec![Answer::Held], vec![Answer::Report(Status::Ok); HOSTS - 1]].concat()).await;
    let leases = Arc::new(LocalLeases::new());
    let (fleet, workers, ids) = fleet_over(dir.path(), leases.clone(), &stub).await?;
    let shutdown = Shutdown::new();

    let (tick, ()) = tokio::join!(workers.health.tick(&shutdown), async {
        until("the first check to be in flight", || stub.held() == 1).await;
        steal(leases.as_ref(), HEALTH_LEASE).await.expect("steal");
        until("the worker to notice the loss", || health(&fleet).cycles_lease_lost == 1).await;
        stub.release_held();
    });
    let Tick::Ran(report) = tick? else { panic!("the worker held the lease at the tick") };
    assert_eq!(report.lease_lost.as_deref(), Some("taken by another replica"), "{report:?}");
    assert_eq!((report.hosts, report.answered), (1, 1), "only the check in flight ran, and it was recorded: {report:?}");
    for i in 1..HOSTS {
        assert_eq!(stub.count(i), 0, "host {i} was checked after the lease was lost");
    }
    let (_, hist) = fleet.history("h0", &HistoryQuery::default()).await?;
    assert_eq!(hist.len(), 1, "the check in flight is recorded");
    let s = health(&fleet);
    assert_eq!((s.cycles, s.cycles_lease_lost, s.cycles_failed, s.lease_held), (1, 1, 0, false), "{s:?}");

    // The next tick tries again: skipped while the thief holds the lease, run once it is free.
    assert_eq!(workers.health.tick(&shutdown).await?, Tick::Skipped);
    assert!(leases.release(HEALTH_LEASE, "thief").await?);
    stub.set(0, Answer::Report(Status::Ok));
    let Tick::Ran(report) = workers.health.tick(&shutdown).await? else { panic!("the lease is free again") };
    assert_eq!((report.hosts, report.lease_lost), (HOSTS, None));
    assert_eq!(ids.len(), HOSTS);
    Ok(())
}

#[tokio::test]
async fn a_health_cycle_whose_lease_store_fails_stops_when_the_lease_runs_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let stub = Stub::start([vec![Answer::Held], vec![Answer::Report(Status::Ok); HOSTS - 1]].concat()).await;
    let meta = Arc::new(SqliteMetaStore::open(&dir.path().join("meta.db")).await?);
    let (fleet, workers, _) = fleet_over(dir.path(), meta.clone(), &stub).await?;
    let shutdown = Shutdown::new();

    let (tick, ()) = tokio::join!(workers.health.tick(&shutdown), async {
        until("the first check to be in flight", || stub.held() == 1).await;
        // Every renewal from now on fails: the lease cannot be confirmed again.
        meta.close().await;
        until("the worker to give the lease up", || health(&fleet).cycles_lease_lost == 1).await;
        stub.release_held();
    });
    let Tick::Ran(report) = tick? else { panic!("the worker held the lease at the tick") };
    let lost = report.lease_lost.as_deref().unwrap_or_default();
    assert!(lost.starts_with("not renewed before it ran out"), "an unconfirmed lease, with the store's error: {report:?}");
    assert_eq!(report.hosts, 1, "{report:?}");
    for i in 1..HOSTS {
        assert_eq!(stub.count(i), 0, "host {i} was checked after the lease ran out unconfirmed");
    }
    // The lease store is down: the next tick fails (counted), it does not run a cycle.
    assert!(workers.health.tick(&shutdown).await.is_err());
    Ok(())
}

#[tokio::test]
async fn a_metrics_round_whose_lease_is_taken_starts_no_new_fetch() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let stub = Stub::start(vec![Answer::Report(Status::Ok); HOSTS]).await;
    let leases = Arc::new(LocalLeases::new());
    let (fleet, workers, ids) = fleet_over(dir.path(), leases.clone(), &stub).await?;
    let shutdown = Shutdown::new();
    // Healthy hosts take metrics; then the first one's metrics answer is held.
    assert_eq!(workers.health.run_cycle(&shutdown).await?.answered, HOSTS);
    stub.set(0, Answer::Held);

    let (round, ()) = tokio::join!(workers.metrics.tick(&shutdown), async {
        until("the first fetch to be in flight", || stub.held() == 1).await;
        steal(leases.as_ref(), METRICS_LEASE).await.expect("steal");
        until("the worker to notice the loss", || metrics(&fleet).cycles_lease_lost == 1).await;
        stub.release_held();
    });
    let report = round?.expect("the worker held the lease at the tick");
    assert_eq!(report.lease_lost.as_deref(), Some("taken by another replica"), "{report:?}");
    assert_eq!((report.hosts, report.stored), (1, 1), "only the fetch in flight ran, and it was stored: {report:?}");
    assert!(fleet.latest_metrics(ids[0]).is_some(), "the fetch in flight is kept");
    for (i, id) in ids.iter().enumerate().skip(1) {
        assert!(fleet.latest_metrics(*id).is_none(), "host {i}'s metrics were fetched after the lease was lost");
    }
    let s = metrics(&fleet);
    assert_eq!((s.cycles_lease_lost, s.cycles_failed, s.lease_held), (1, 0, false), "{s:?}");
    assert_eq!(workers.metrics.tick(&shutdown).await?, None, "the thief holds it: the next tick skips");
    Ok(())
}
