//! The watchdog against the agent crate's simulated fleet: a flapping container is restarted
//! through the real agent route exactly once per cooldown, a host in maintenance and a host not
//! opted in are left alone, every restart is audited and broadcast, and a wrong token is a failed
//! restart.

mod common;

use common::eventually;
use gpufleet_agent::sim::DEFAULT_SIM_TOKEN;
use gpufleet_agent::{run_sim_fleet, Scenario, SimFleetConfig, SimFleetHandle};
use gpufleet_insight::source::{FleetView, HostView, StaticFleet};
use gpufleet_insight::watchdog::{
    AgentRestarter, AuditEvent, AuditSink, ChannelSource, PollSource, SkipReason, WatchSource, WatchdogEventKind, WatchdogSettings, WatchdogWorker,
};
use gpufleet_runtime::{Shutdown, Supervisor};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

const MIN: i64 = 60_000;

/// Three hosts: 0 flapping and opted in, 1 flapping but in maintenance, 2 flapping and not opted in.
async fn fleet() -> (SimFleetHandle, Arc<StaticFleet>) {
    // A 10-minute phase: the container stays unhealthy for the whole test.
    let flap = Scenario::ContainerFlapping { period_ms: 600_000 };
    let cfg = SimFleetConfig { hosts: 3, assign: vec![(0, flap.clone()), (1, flap.clone()), (2, flap)], gpus_per_host: 1, ..SimFleetConfig::default() };
    let sim = run_sim_fleet(cfg, std::future::pending()).await.expect("simulated fleet");
    let view = StaticFleet::new();
    for (i, h) in sim.hosts().into_iter().enumerate() {
        // Host 0 opts in by its own flag, host 1 through the configuration.
        view.put_host(HostView { id: i.to_string(), name: h.name, groups: vec![], maintenance: i == 1, watchdog: i == 0, agent_url: Some(h.agent_url), ..HostView::default() });
    }
    (sim, view)
}

fn settings(interval: Duration) -> WatchdogSettings {
    WatchdogSettings { hosts: vec!["sim-host-00001".into()], interval, timeout: Duration::from_secs(5), ..WatchdogSettings::default() }
}

fn audit() -> (AuditSink, Arc<Mutex<Vec<AuditEvent>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    (Arc::new(move |e| l.lock().push(e)), log)
}

/// The tests that call `handle` themselves give the worker a source that never yields.
fn unused_source() -> Box<ChannelSource> {
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    Box::new(ChannelSource(rx))
}

fn restarter(token: &str) -> Arc<AgentRestarter> {
    Arc::new(AgentRestarter::new(reqwest::Client::new(), Some(token.into()), Duration::from_secs(5)))
}

#[tokio::test]
async fn flapping_container_is_restarted_exactly_once_per_cooldown() {
    let (sim, view) = fleet().await;
    let s = settings(Duration::from_millis(1));
    let mut source = PollSource::new(view.clone() as Arc<dyn FleetView>, s.clone(), reqwest::Client::new());
    let (sink, log) = audit();
    let mut worker = WatchdogWorker::new(s, unused_source(), restarter(DEFAULT_SIM_TOKEN), sink, gpufleet_insight::system_clock());
    let mut events = worker.subscribe();
    // Real observations of the simulated agents, explicit time: one batch every 30 s for 65 min.
    let t0 = 1_700_000_000_000;
    let mut restarted_at = Vec::new();
    for i in 0..131 {
        let batch = source.next().await.expect("batch");
        assert_eq!(batch.len(), 2, "only the opted-in hosts are read");
        let now = t0 + i * 30_000;
        let (attempted, failed) = worker.handle(now, &batch).await;
        assert_eq!(failed, 0);
        if attempted > 0 {
            restarted_at.push(now);
        }
    }
    // At the third failure (60 s), then the first observation 30 min after each restart.
    assert_eq!(restarted_at, vec![t0 + MIN, t0 + 31 * MIN, t0 + 61 * MIN]);
    let counts = sim.restarts("sim-host-00000").unwrap();
    assert_eq!(counts.get("inference"), Some(&3), "{counts:?}");
    assert!(sim.restarts("sim-host-00001").unwrap().is_empty(), "maintenance host restarted");
    assert!(sim.restarts("sim-host-00002").unwrap().is_empty(), "host not opted in restarted");

    let log = log.lock().clone();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|e| e.success && e.action == "watchdog.container_restart" && e.target == "sim-host-00000/inference"), "{log:?}");
    assert!(log[0].detail.starts_with("health check failed 3 times in a row"));
    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        kinds.push((e.host, e.kind));
    }
    let restarted = kinds.iter().filter(|(h, k)| h == "sim-host-00000" && *k == WatchdogEventKind::Restarted).count();
    assert_eq!(restarted, 3);
    // Skips are announced once per reason, not every cycle.
    let maint = kinds.iter().filter(|(h, k)| h == "sim-host-00001" && *k == WatchdogEventKind::Skipped { reason: SkipReason::Maintenance }).count();
    assert_eq!(maint, 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|(_, k)| matches!(k, WatchdogEventKind::Skipped { reason: SkipReason::Cooldown { .. } })).count(), 3);
    sim.stop().await;
}

#[tokio::test]
async fn the_worker_under_a_supervisor_restarts_once_then_waits_out_the_cooldown() {
    let (sim, view) = fleet().await;
    let s = settings(Duration::from_millis(50));
    let (sink, log) = audit();
    let source = PollSource::new(view.clone(), s.clone(), reqwest::Client::new());
    let worker = WatchdogWorker::new(s, Box::new(source), restarter(DEFAULT_SIM_TOKEN), sink, gpufleet_insight::system_clock());
    let mut sup = Supervisor::new(Shutdown::new());
    let status = sup.status_handle();
    sup.spawn(worker);
    eventually(20, "a restart of sim-host-00000/inference", || {
        let n = sim.restarts("sim-host-00000").unwrap().get("inference").copied();
        async move { (n == Some(1)).then_some(()) }
    })
    .await;
    // Twenty more cycles of a still-unhealthy container: no second restart within the cooldown.
    let runs = status.snapshot()[0].runs;
    eventually(20, "20 more watchdog cycles", || {
        let now = status.snapshot()[0].runs;
        async move { (now >= runs + 20).then_some(()) }
    })
    .await;
    assert_eq!(sim.restarts("sim-host-00000").unwrap().get("inference"), Some(&1));
    assert!(sim.restarts("sim-host-00001").unwrap().is_empty());
    assert_eq!(log.lock().len(), 1);
    assert_eq!(status.snapshot()[0].failures, 0);
    sup.shutdown(Duration::from_secs(5)).await;
    sim.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_an_audited_failure() {
    let (sim, view) = fleet().await;
    let s = settings(Duration::from_millis(1));
    let mut source = PollSource::new(view.clone(), s.clone(), reqwest::Client::new());
    let (sink, log) = audit();
    let mut worker = WatchdogWorker::new(s, unused_source(), restarter("wrong-token"), sink, gpufleet_insight::system_clock());
    let mut events = worker.subscribe();
    let mut failed = 0;
    for i in 0..3 {
        let batch = source.next().await.expect("batch");
        failed += worker.handle(1_700_000_000_000 + i * 30_000, &batch).await.1;
    }
    assert_eq!(failed, 1);
    assert!(sim.restarts("sim-host-00000").unwrap().is_empty());
    let log = log.lock().clone();
    assert_eq!(log.len(), 1);
    assert!(!log[0].success);
    assert!(log[0].detail.contains("agent answered HTTP 401: wrong agent token"), "{}", log[0].detail);
    let failed_event = std::iter::from_fn(|| events.try_recv().ok()).find(|e| matches!(e.kind, WatchdogEventKind::RestartFailed { .. }));
    assert!(failed_event.is_some());
    sim.stop().await;
}
