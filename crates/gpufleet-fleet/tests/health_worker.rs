//! The health worker against stub agents and the simulated fleet: classification of every kind of
//! answer, tries and retries, a host going unreachable within one cycle (with its events),
//! maintenance hosts left alone, stale-first order, the concurrency bound, the worker under a
//! supervisor with its status, and two replicas sharing one lease.

mod common;

use common::{dead_url, fleet, register, settings, state_of, Answer, Stub};
use gpufleet_agent::sim::{run_sim_fleet, Scenario, SimFleetConfig};
use gpufleet_agent::wire::Status;
use gpufleet_fleet::{Fleet, HistoryQuery, HostPatch, HostState, LocalLeases, SqliteFleetStore, Tick};
use gpufleet_runtime::{Shutdown, Supervisor};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_cycle_classifies_every_kind_of_answer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (fleet, workers, store) = fleet(dir.path(), settings(2, 16)).await;
    let stub = Stub::start(vec![
        Answer::Report(Status::Ok),
        Answer::Report(Status::Warn),
        Answer::Report(Status::Critical),
        Answer::ServerError,
        Answer::Garbage,
        Answer::Slow(Duration::from_secs(2)),
        Answer::Report(Status::Ok),
        Answer::Report(Status::Ok),
    ])
    .await;
    let names = ["ok", "warn", "crit", "http500", "garbage", "slow", "maint", "inactive"];
    let mut ids = Vec::new();
    for (i, n) in names.iter().enumerate() {
        ids.push(register(&fleet, n, &stub.url(i)).await);
    }
    let dead = register(&fleet, "dead", &dead_url().await).await;
    fleet.update("maint", &HostPatch { maintenance: Some(true), ..Default::default() }).await?;
    fleet.update("inactive", &HostPatch { status: Some("inactive".into()), ..Default::default() }).await?;
    let mut events = fleet.subscribe();

    let report = workers.health.run_cycle(&Shutdown::new()).await?;
    assert_eq!(report.hosts, 7, "maintenance and inactive hosts are not checked");
    assert_eq!(report.answered, 3);
    let expect = [
        (ids[0], HostState::Healthy),
        (ids[1], HostState::Degraded),
        (ids[2], HostState::Critical),
        (ids[3], HostState::Degraded),
        (ids[4], HostState::Degraded),
        (ids[5], HostState::Unreachable),
        (dead, HostState::Unreachable),
        (ids[6], HostState::Unknown),
        (ids[7], HostState::Unknown),
    ];
    for (id, state) in expect {
        assert_eq!(state_of(store.as_ref(), id).await, state, "host {id}");
    }
    // Answers cost one try; failures are retried until unreachable_after (2).
    assert_eq!([0, 1, 2, 3, 4, 5, 6, 7].map(|i| stub.count(i)), [1, 1, 1, 2, 2, 2, 0, 0]);
    assert_eq!(report.requests, 3 + 2 * 4);
    let (_, hist) = fleet.history("http500", &HistoryQuery::default()).await?;
    assert_eq!(hist.len(), 1, "one history row per check, not per try");
    assert!(hist[0].error.as_deref().is_some_and(|e| e.contains("500")), "{:?}", hist[0].error);
    let (_, hist) = fleet.history("slow", &HistoryQuery::default()).await?;
    assert!(hist[0].error.as_deref().is_some_and(|e| e.contains("no answer within")), "{:?}", hist[0].error);
    let (_, hist) = fleet.history("dead", &HistoryQuery::default()).await?;
    assert!(hist[0].error.as_deref().is_some_and(|e| e.contains("connect")), "{:?}", hist[0].error);
    let host = fleet.resolve("dead").await?;
    assert_eq!((host.consecutive_failures, host.last_seen_ms.is_none(), host.last_check_ms.is_some()), (2, true, true));
    let (_, hist) = fleet.history("crit", &HistoryQuery::default()).await?;
    assert_eq!(hist[0].components[0].status, Status::Critical);

    // Every checked host left `unknown`: seven events, stored and broadcast.
    let mut got = Vec::new();
    while let Ok(e) = events.try_recv() {
        got.push(e);
    }
    assert_eq!(got.len(), 7);
    assert!(got.iter().all(|e| e.from == HostState::Unknown));
    let crit = got.iter().find(|e| e.host == "crit").expect("crit event");
    assert_eq!((crit.to, crit.reason.as_str()), (HostState::Critical, "disk:/: disk is critical"));
    assert_eq!(fleet.events(&Default::default()).await?.len(), 7);

    let status = fleet.workers_status();
    let health = &status[0];
    assert_eq!((health.name.as_str(), health.checks_performed, health.successful, health.failed), ("fleet.health", 7, 3, 4));
    assert_eq!(health.requests, 11);
    assert!((health.success_rate - 3.0 / 7.0).abs() < 1e-9);
    assert_eq!((health.cycles, health.last_cycle_hosts), (1, 7));
    assert!(health.last_run_ms.is_some() && health.last_duration_ms.is_some());
    Ok(())
}

#[tokio::test]
async fn a_host_going_unreachable_turns_unreachable_within_one_cycle_and_back() -> anyhow::Result<()> {
    let sim = run_sim_fleet(SimFleetConfig { hosts: 3, ..Default::default() }, std::future::pending()).await?;
    let dir = tempfile::tempdir()?;
    let (fleet, workers, store) = fleet(dir.path(), settings(3, 8)).await;
    let mut ids = Vec::new();
    for h in sim.hosts() {
        ids.push(register(&fleet, &h.name, &h.agent_url).await);
    }
    let shutdown = Shutdown::new();
    workers.health.run_cycle(&shutdown).await?;
    for id in &ids {
        assert_eq!(state_of(store.as_ref(), *id).await, HostState::Healthy);
    }
    let mut events = fleet.subscribe();
    let victim = sim.hosts()[1].name.clone();
    sim.set_scenario(&victim, Scenario::Unreachable).await?;
    let report = workers.health.run_cycle(&shutdown).await?;
    assert_eq!(state_of(store.as_ref(), ids[1]).await, HostState::Unreachable, "unreachable after one cycle");
    assert_eq!(report.requests, 2 + 3, "the two others once, the victim three tries");
    let e = events.try_recv()?;
    assert_eq!((e.host.as_str(), e.from, e.to), (victim.as_str(), HostState::Healthy, HostState::Unreachable));
    assert!(e.reason.contains("connect"), "{}", e.reason);
    assert!(events.try_recv().is_err(), "no other host changed");

    // Already unreachable: one try per cycle, no new event.
    let report = workers.health.run_cycle(&shutdown).await?;
    assert_eq!(report.requests, 2 + 1);
    assert!(events.try_recv().is_err());
    assert_eq!(fleet.resolve(&victim).await?.consecutive_failures, 4);

    sim.set_scenario(&victim, Scenario::Healthy).await?;
    workers.health.run_cycle(&shutdown).await?;
    let e = events.try_recv()?;
    assert_eq!((e.from, e.to), (HostState::Unreachable, HostState::Healthy));
    let back = fleet.resolve(&victim).await?;
    assert_eq!((back.state, back.consecutive_failures), (HostState::Healthy, 0));
    let problems = fleet.summary().await?.top_problems;
    assert!(problems.is_empty(), "{problems:?}");
    Ok(())
}

#[tokio::test]
async fn checks_go_stale_first_and_stay_within_the_concurrency_bound() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // One at a time: the request order is the check order.
    let (fleet1, workers1, store1) = fleet(dir.path(), settings(1, 1)).await;
    let stub = Stub::start(vec![Answer::Report(Status::Ok); 6]).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(register(&fleet1, &format!("h{i}"), &stub.url(i)).await);
    }
    // h0 checked at 300, h1 at 100, h2 at 200; h3..h5 never.
    let seed = |id: i64, at: i64| gpufleet_fleet::testsuite::check(id, at, HostState::Healthy, None);
    use gpufleet_fleet::FleetStore;
    store1.record_checks(&[seed(ids[0], 300), seed(ids[1], 100), seed(ids[2], 200)]).await?;
    workers1.health.run_cycle(&Shutdown::new()).await?;
    assert_eq!(stub.order(), [3, 4, 5, 1, 2, 0], "never checked first (by id), then the oldest check");
    drop((fleet1, workers1));

    let dir2 = tempfile::tempdir()?;
    let (fleet2, workers2, _) = fleet(dir2.path(), settings(1, 4)).await;
    let slow = Stub::start(vec![Answer::Slow(Duration::from_millis(20)); 24]).await;
    for i in 0..24 {
        register(&fleet2, &format!("s{i}"), &slow.url(i)).await;
    }
    let report = workers2.health.run_cycle(&Shutdown::new()).await?;
    assert_eq!(report.answered, 24);
    assert!(slow.max_in_flight() <= 4, "at most health_concurrency checks at once: {}", slow.max_in_flight());
    assert!(slow.max_in_flight() >= 2, "checks do run concurrently: {}", slow.max_in_flight());
    Ok(())
}

#[tokio::test]
async fn the_worker_runs_under_a_supervisor_and_reports_its_status() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (fleet, workers, _) = fleet(dir.path(), settings(1, 8)).await;
    let stub = Stub::start(vec![Answer::Report(Status::Ok), Answer::Report(Status::Ok)]).await;
    register(&fleet, "a", &stub.url(0)).await;
    register(&fleet, "b", &stub.url(1)).await;
    let mut sup = Supervisor::new(Shutdown::new());
    let handle = sup.status_handle();
    sup.spawn(workers.health);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.workers_status()[0].cycles < 3 {
        assert!(Instant::now() < deadline, "three cycles within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = &fleet.workers_status()[0];
    assert!(s.running && s.lease_held);
    assert_eq!(s.interval_s, 0.2);
    assert!(s.checks_performed >= 6 && s.failed == 0 && s.success_rate == 1.0, "{s:?}");
    let sup_status = handle.snapshot();
    assert_eq!(sup_status[0].name, "fleet.health");
    assert!(sup_status[0].successes >= 3, "each cycle is recorded with the supervisor too: {sup_status:?}");
    sup.shutdown(Duration::from_secs(5)).await;
    assert!(!fleet.workers_status()[0].running, "stopped after shutdown");
    Ok(())
}

#[tokio::test]
async fn two_replicas_sharing_a_lease_check_each_host_once_per_cycle() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let stub = Stub::start(vec![Answer::Report(Status::Ok); 20]).await;
    // Two replicas: one store file, one lease store, two Fleet instances (two holders).
    let store = Arc::new(SqliteFleetStore::open(&dir.path().join("fleet.db")).await?);
    let leases = Arc::new(LocalLeases::new());
    let (a, wa) = Fleet::new(store.clone(), leases.clone(), settings(1, 8))?;
    let (b, wb) = Fleet::new(store.clone(), leases, settings(1, 8))?;
    for i in 0..20 {
        register(&a, &format!("h{i}"), &stub.url(i)).await;
    }
    let shutdown = Shutdown::new();
    let mut ran = 0;
    for _ in 0..4 {
        let (ta, tb) = tokio::join!(wa.health.tick(&shutdown), wb.health.tick(&shutdown));
        let (ta, tb) = (ta?, tb?);
        ran += usize::from(matches!(ta, Tick::Ran(_))) + usize::from(matches!(tb, Tick::Ran(_)));
        assert!(matches!(ta, Tick::Skipped) || matches!(tb, Tick::Skipped), "never both in one round");
    }
    assert_eq!(ran, 4, "one replica ran each round");
    for i in 0..20 {
        assert_eq!(stub.count(i), 4, "host {i}: exactly one check per cycle");
    }
    let (sa, sb) = (&a.workers_status()[0], &b.workers_status()[0]);
    assert_eq!(sa.cycles + sb.cycles, 4);
    assert_eq!(sa.cycles_skipped + sb.cycles_skipped, 4);
    Ok(())
}
