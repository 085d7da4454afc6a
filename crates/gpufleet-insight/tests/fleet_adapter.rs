//! This crate over the real fleet (SQLite store, health and metrics workers) and the simulated
//! agents: scores and trends from stored metrics, a host going unreachable within one health cycle
//! fires and then resolves an alert that a loopback webhook receives, the missing partition, and
//! the watchdog fed by the health worker's check batches restarting a flapping container once.

mod common;

use common::{eventually, receiver};
use gpufleet_agent::sim::DEFAULT_SIM_TOKEN;
use gpufleet_agent::{run_sim_fleet, HostMetrics, Scenario, SimFleetConfig, SimFleetHandle};
use gpufleet_fleet::{Fleet, FleetConfig, FleetWorkers, HostInput, HostPatch, LocalLeases, SqliteFleetStore};
use gpufleet_insight::alert::{AlertService, AlertWorker, MemoryAlertStore, NoticeKind};
use gpufleet_insight::config::AlertsConfig;
use gpufleet_insight::fleet_adapter::{FleetSource, FleetSystem, FleetWatchSource, TAG_LAST_CLEANUP_MS};
use gpufleet_insight::notify::{NotifierConfig, Notifiers, NotifyQueue};
use gpufleet_insight::score::Dimension;
use gpufleet_insight::source::{FleetView, SystemView};
use gpufleet_insight::watchdog::{AgentRestarter, AuditEvent, WatchdogSettings, WatchdogWorker};
use gpufleet_insight::{system_clock, Insight, TrendQuery};
use gpufleet_runtime::{Shutdown, Supervisor};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const DAY: i64 = 86_400_000;

struct Setup {
    sim: SimFleetHandle,
    fleet: Arc<Fleet>,
    workers: FleetWorkers,
    _dir: tempfile::TempDir,
}

/// Three simulated hosts; host 1's `inference` container flaps (unhealthy for 10 minutes) and
/// host 1 is opted in to the watchdog.
async fn setup() -> Setup {
    let cfg = SimFleetConfig { hosts: 3, gpus_per_host: 2, assign: vec![(1, Scenario::ContainerFlapping { period_ms: 600_000 })], ..SimFleetConfig::default() };
    let sim = run_sim_fleet(cfg, std::future::pending()).await.expect("simulated fleet");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteFleetStore::open(&dir.path().join("fleet.db")).await.expect("fleet store"));
    let settings = FleetConfig {
        health_timeout: "2s".into(),
        health_retry_backoff: "5ms".into(),
        unreachable_after: 2,
        agent_token: Some(DEFAULT_SIM_TOKEN.into()),
        ..FleetConfig::default()
    }
    .validate()
    .expect("fleet settings");
    // `Fleet::new` (not `open`): no partitions yet, so the test sees one missing until the first
    // metrics round creates it.
    let (fleet, workers) = Fleet::new(store, Arc::new(LocalLeases::new()), settings).expect("fleet");
    for (i, h) in sim.hosts().into_iter().enumerate() {
        let input = HostInput { name: h.name, agent_url: h.agent_url, watchdog: Some(i == 1), groups: vec!["gpu".into()], ..HostInput::default() };
        fleet.register(&input).await.expect("register");
    }
    Setup { sim, fleet, workers, _dir: dir }
}

async fn alerts() -> Arc<AlertService> {
    let settings = AlertsConfig::default().validate().expect("alert settings");
    Arc::new(AlertService::open(&settings, Arc::new(MemoryAlertStore::default()), gpufleet_core::time::now_ms()).await.expect("alerts"))
}

#[tokio::test]
async fn scores_trends_and_an_unreachable_host_alert_over_the_real_fleet() {
    let s = setup().await;
    let stop = Shutdown::new();
    let (source, cache_worker) = FleetSource::new(s.fleet.clone());
    let mut sup = Supervisor::new(stop.clone());
    let system = Arc::new(FleetSystem::new(s.fleet.clone(), sup.status_handle()));
    // No metrics round yet: the current month's partition is missing.
    assert_eq!(system.missing_partitions().await.unwrap().len(), 1);
    sup.spawn(cache_worker);
    s.workers.health.run_cycle(&stop).await.expect("health cycle");
    s.workers.metrics.tick(&stop).await.expect("metrics round");
    assert!(system.missing_partitions().await.unwrap().is_empty());

    let insight = Arc::new(Insight::new(source.clone(), source.clone(), Some(system), alerts().await));
    let now = gpufleet_core::time::now_ms();
    let card = insight.host_score("sim-host-00000", now).await.unwrap();
    assert_eq!(card.dimension(Dimension::CpuSteal).unwrap().points, 20);
    assert_eq!(card.dimension(Dimension::ServiceHealth).unwrap().points, 20);
    assert_eq!(card.dimension(Dimension::MaintenanceHygiene).unwrap().points, 0, "no cleanup recorded");
    // The flapping host's unhealthy container costs points.
    let flapping = insight.host_score("sim-host-00001", now).await.unwrap();
    assert_eq!(flapping.dimension(Dimension::ServiceHealth).unwrap().points, 15);
    s.fleet.update("sim-host-00000", &HostPatch { tags: Some(BTreeMap::from([(TAG_LAST_CLEANUP_MS.to_owned(), (now - DAY).to_string())])), ..HostPatch::default() }).await.unwrap();
    assert_eq!(insight.host_score("sim-host-00000", now).await.unwrap().dimension(Dimension::MaintenanceHygiene).unwrap().points, 15);

    // A week of stored samples with /scratch (a mount the live samples lack) filling 3 points a
    // day → a projection from the store.
    let id = s.fleet.resolve("sim-host-00002").await.unwrap().id;
    s.fleet.store().ensure_partitions(now - 8 * DAY, 1).await.unwrap();
    let samples: Vec<(i64, Arc<HostMetrics>)> = (1..=7)
        .map(|d| {
            let used = 60 + 3 * (7 - d) as u64;
            let disk = gpufleet_agent::wire::Disk { mount: "/scratch".into(), fs: "xfs".into(), total_bytes: 100, used_bytes: used, free_bytes: 100 - used };
            (id, Arc::new(HostMetrics { time_ms: now - d * DAY, disks: vec![disk], ..HostMetrics::default() }))
        })
        .collect();
    s.fleet.store().write_host_metrics(&samples).await.unwrap();
    let t = insight.trends("sim-host-00002", &TrendQuery { metric: "disk_used_pct:/scratch".into(), range: None, threshold: None }, now).await.unwrap();
    assert_eq!(t.points, 7, "{t:?}");
    assert!((t.fit.unwrap().slope_per_day - 3.0).abs() < 1e-6);
    assert!(t.summary.starts_with("disk /scratch reaches 90 % in "), "{}", t.summary);
    let bad = insight.trends("sim-host-00002", &TrendQuery { metric: "no_such_metric".into(), range: None, threshold: None }, now).await;
    assert!(matches!(bad, Err(gpufleet_insight::InsightError::Invalid { .. })), "{bad:?}");

    // Alerts: sim-host-00002 goes down; one health cycle later the alert fires and is sent.
    let rx = receiver(0, None).await;
    let cfg: NotifierConfig = toml::from_str(&format!("kind = \"webhook\"\nname = \"ops\"\nurl = \"{}\"", rx.url("/hook"))).unwrap();
    let (queue, sender) = NotifyQueue::new(64, Notifiers::build(&[cfg]).unwrap());
    sup.spawn(sender);
    let worker = AlertWorker::new(insight.alerts().clone(), insight.clone(), queue, Duration::from_secs(30), system_clock());
    let first = worker.tick().await.unwrap();
    assert!(first.iter().all(|n| n.alert.rule == "container_unhealthy" || n.alert.rule == "disk_full_soon"), "{first:?}");
    s.sim.set_scenario("sim-host-00002", Scenario::Unreachable).await.unwrap();
    s.workers.health.run_cycle(&stop).await.unwrap();
    assert_eq!(source.host("sim-host-00002").await.unwrap().unwrap().state, gpufleet_insight::alert::HostHealth::Unreachable);
    let fired = worker.tick().await.unwrap();
    let down: Vec<_> = fired.iter().filter(|n| n.alert.rule == "host_unreachable").collect();
    assert_eq!(down.len(), 1, "{fired:?}");
    assert_eq!((down[0].kind, down[0].alert.host_name.as_deref()), (NoticeKind::Firing, Some("sim-host-00002")));
    s.sim.set_scenario("sim-host-00002", Scenario::Healthy).await.unwrap();
    s.workers.health.run_cycle(&stop).await.unwrap();
    let back = worker.tick().await.unwrap();
    assert!(back.iter().any(|n| n.alert.rule == "host_unreachable" && n.kind == NoticeKind::Resolved), "{back:?}");
    let bodies = eventually(10, "firing and resolved at the webhook", || {
        let rec = rx.rec.clone();
        async move {
            let got = rec.accepted();
            let unreachable: Vec<String> = got.iter().filter(|(_, b)| b["alert"]["rule"] == "host_unreachable").map(|(_, b)| b["notice"].as_str().unwrap_or("").to_owned()).collect();
            (unreachable.len() == 2).then_some(unreachable)
        }
    })
    .await;
    assert_eq!(bodies, ["firing", "resolved"]);
    sup.shutdown(Duration::from_secs(5)).await;
    s.sim.stop().await;
}

#[tokio::test]
async fn the_watchdog_restarts_a_flapping_container_once_from_the_health_checks() {
    let s = setup().await;
    let stop = Shutdown::new();
    let source = FleetWatchSource::new(s.fleet.clone(), WatchdogSettings::default());
    let audit = Arc::new(Mutex::new(Vec::<AuditEvent>::new()));
    let sink = {
        let a = audit.clone();
        Arc::new(move |e| a.lock().push(e))
    };
    let restarter = Arc::new(AgentRestarter::new(reqwest::Client::new(), Some(DEFAULT_SIM_TOKEN.into()), Duration::from_secs(5)));
    let worker = WatchdogWorker::new(WatchdogSettings::default(), Box::new(source), restarter, sink, system_clock());
    let mut sup = Supervisor::new(stop.clone());
    let status = sup.status_handle();
    sup.spawn(worker);
    let runs = || status.snapshot().iter().find(|w| w.name == "watchdog").map_or(0, |w| w.runs);
    // Three health cycles: three failed health checks in a row.
    for cycle in 1..=3 {
        s.workers.health.run_cycle(&stop).await.unwrap();
        eventually(10, "the watchdog saw the cycle", || async move { (runs() >= cycle).then_some(()) }).await;
    }
    assert_eq!(s.sim.restarts("sim-host-00001").unwrap().get("inference"), Some(&1));
    // Five more failing checks within the cooldown: no second restart.
    for cycle in 4..=8 {
        s.workers.health.run_cycle(&stop).await.unwrap();
        eventually(10, "the watchdog saw the cycle", || async move { (runs() >= cycle).then_some(()) }).await;
    }
    assert_eq!(s.sim.restarts("sim-host-00001").unwrap().get("inference"), Some(&1));
    assert!(s.sim.restarts("sim-host-00000").unwrap().is_empty());
    let audit = audit.lock().clone();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].target, "sim-host-00001/inference");
    assert!(audit[0].success);
    sup.shutdown(Duration::from_secs(5)).await;
    s.sim.stop().await;
}
