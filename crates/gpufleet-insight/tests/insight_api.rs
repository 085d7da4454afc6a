//! The façade over an in-memory fleet: scores, fleet score, trends and their errors, what the
//! alert engine observes, the digest inputs, and an alert worker whose unreachable host fires and
//! then resolves an alert that a loopback webhook receives.

mod common;

use common::{eventually, receiver};
use gpufleet_agent::wire::{Component, ComponentKind, ContainerState, CpuPercent, Disk, HealthReport, HostMetrics, Status};
use gpufleet_insight::alert::{AlertQuery, AlertService, AlertStatus, HostHealth, MemoryAlertStore, NoticeKind};
use gpufleet_insight::config::AlertsConfig;
use gpufleet_insight::digest::worker::DigestSource;
use gpufleet_insight::notify::{Notifiers, NotifyQueue};
use gpufleet_insight::score::Dimension;
use gpufleet_insight::source::{HostView, StaticFleet};
use gpufleet_insight::trend::{Projection, TrendRange};
use gpufleet_insight::{alert::AlertWorker, alert::ObservationSource, Insight, InsightError, TrendQuery};
use gpufleet_runtime::{Shutdown, Supervisor};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NOW: i64 = 1_700_000_000_000;
const DAY: i64 = 86_400_000;
const GIB: u64 = 1 << 30;

fn metrics(at: i64, disk_used: u64, unhealthy: bool) -> HostMetrics {
    HostMetrics {
        time_ms: at,
        cpu: CpuPercent { steal: 0.5, idle: 90.0, ..CpuPercent::default() },
        mem_total_bytes: 64 * GIB,
        mem_available_bytes: 32 * GIB,
        swap_used_bytes: 2 * GIB,
        disks: vec![Disk { mount: "/data".into(), fs: "xfs".into(), total_bytes: 100, used_bytes: disk_used, free_bytes: 100 - disk_used }],
        containers: vec![ContainerState {
            id: "c1".into(),
            name: "web".into(),
            image: String::new(),
            state: "running".into(),
            health: Some(if unhealthy { "unhealthy" } else { "healthy" }.into()),
            health_log: vec![],
            restart_count: 0,
            oom_killed: false,
            exit_code: None,
            stopped_on_purpose: false,
        }],
        ..HostMetrics::default()
    }
}

fn view(id: &str, state: HostHealth, m: Option<HostMetrics>) -> HostView {
    HostView { id: id.into(), name: format!("gpu-{id}"), groups: vec!["gpu".into()], state, agent_url: Some("http://127.0.0.1:1".into()), metrics: m.map(Arc::new), last_cleanup_ms: Some(NOW - DAY), ..HostView::default() }
}

async fn insight(fleet: &Arc<StaticFleet>) -> Insight {
    let settings = AlertsConfig::default().validate().unwrap();
    let alerts = Arc::new(AlertService::open(&settings, Arc::new(MemoryAlertStore::default()), NOW).await.unwrap());
    Insight::new(fleet.clone(), fleet.clone(), Some(fleet.clone()), alerts)
}

#[tokio::test]
async fn scores_use_fresh_samples_only() {
    let fleet = StaticFleet::new();
    fleet.put_host(view("1", HostHealth::Healthy, Some(metrics(NOW - 60_000, 30, false))));
    fleet.put_host(view("2", HostHealth::Unreachable, Some(metrics(NOW - 2 * 3_600_000, 30, false))));
    let mut m3 = view("3", HostHealth::Healthy, Some(metrics(NOW, 80, true)));
    m3.maintenance = true;
    fleet.put_host(m3);
    let i = insight(&fleet).await;
    let card = i.host_score("1", NOW).await.unwrap();
    assert_eq!(card.total, 100, "{card:?}");
    // By name too.
    assert_eq!(i.host_score("gpu-1", NOW).await.unwrap().host, "1");
    // A two-hour-old sample counts as none.
    let stale = i.host_score("2", NOW).await.unwrap();
    assert_eq!(stale.dimension(Dimension::Disk).unwrap().value, None);
    assert_eq!(stale.total, 15 + 10);
    assert!(matches!(i.host_score("9", NOW).await, Err(InsightError::HostNotFound(_))));
    let f = i.fleet_score(NOW).await.unwrap();
    assert_eq!((f.hosts, f.in_maintenance), (2, 1));
    assert_eq!(f.score, 62.5);
    assert_eq!(f.lowest[0], ("gpu-2".to_owned(), 25));
}

#[tokio::test]
async fn trends_project_stored_series() {
    let fleet = StaticFleet::new();
    fleet.put_host(view("1", HostHealth::Healthy, Some(metrics(NOW, 64, false))));
    let series: Vec<(i64, f64)> = (0..8).map(|d| (NOW - (7 - d) * DAY, 50.0 + 2.0 * d as f64)).collect();
    fleet.put_series("1", "disk_used_pct", series);
    let i = insight(&fleet).await;
    let q = |metric: &str, range: Option<TrendRange>, threshold: Option<f64>| TrendQuery { metric: metric.into(), range, threshold };
    let t = i.trends("1", &q("disk_used_pct", None, None), NOW).await.unwrap();
    assert_eq!(t.points, 8);
    assert_eq!(t.summary, "disk reaches 90 % in 13 days (R² 1.00)");
    assert!(matches!(t.projection, Some(Projection::In { .. })));
    let t = i.trends("gpu-1", &q("disk_used_pct", Some(TrendRange::Days30), Some(70.0)), NOW).await.unwrap();
    assert!((t.projection.unwrap().days().unwrap() - 3.0).abs() < 1e-6);
    // Too little data.
    let t = i.trends("1", &q("swap_used_bytes", None, None), NOW).await.unwrap();
    assert!(t.fit.is_none() && t.summary.starts_with("not enough data"));
    assert!(matches!(i.trends("1", &q("bad name!", None, None), NOW).await, Err(InsightError::Invalid { .. })));
    assert!(matches!(i.trends("1", &q("disk_used_pct", None, Some(f64::NAN)), NOW).await, Err(InsightError::Invalid { .. })));
    assert!(matches!(i.trends("2", &q("disk_used_pct", None, None), NOW).await, Err(InsightError::HostNotFound(_))));
    let parsed: TrendQuery = serde_json::from_value(serde_json::json!({"metric": "disk_used_pct", "range": "30d"})).unwrap();
    assert_eq!(parsed.range, Some(TrendRange::Days30));
}

fn report(status: Status, components: Vec<Component>) -> HealthReport {
    HealthReport { host: "h".into(), agent_version: "1".into(), time_ms: NOW, status, components }
}

#[tokio::test]
async fn observations_follow_state_and_sample_age() {
    let fleet = StaticFleet::new();
    let mut crit = view("1", HostHealth::Critical, Some(metrics(NOW - 1000, 97, true)));
    crit.report = Some(Arc::new(report(
        Status::Critical,
        vec![
            Component { name: "disk:/data".into(), kind: ComponentKind::Disk, status: Status::Critical, message: "97 % used".into(), detail: serde_json::Value::Null },
            Component { name: "container:web".into(), kind: ComponentKind::Container, status: Status::Warn, message: "unhealthy".into(), detail: serde_json::Value::Null },
        ],
    )));
    fleet.put_host(crit);
    fleet.put_host(view("2", HostHealth::Unreachable, Some(metrics(NOW - 1000, 30, false))));
    fleet.put_series("1", "disk_used_pct", (0..8).map(|d| (NOW - (7 - d) * DAY, 83.0 + d as f64)).collect());
    fleet.set_missing_partitions(vec!["host_metrics_2023_11".into()]);
    let i = insight(&fleet).await;
    let o = i.observe(NOW).await.unwrap();
    let h1 = &o.hosts[0];
    assert_eq!(h1.critical_reasons, vec!["disk:/data: 97 % used".to_owned()]);
    assert_eq!(h1.unhealthy_containers.as_deref(), Some(&["web".to_owned()][..]));
    assert_eq!(h1.metrics["disk_used_pct"], 97.0);
    let outlook = h1.disk_outlook.clone().unwrap();
    assert_eq!((outlook.mount.as_str(), outlook.days_to_90), ("/data", Some(0.0)));
    let h2 = &o.hosts[1];
    assert!(h2.metrics.is_empty() && h2.unhealthy_containers.is_none() && h2.disk_outlook.is_none());
    assert_eq!(o.missing_partitions, vec!["host_metrics_2023_11".to_owned()]);
    assert_eq!(o.workers, Some(vec![]));
}

#[tokio::test]
async fn digest_inputs_read_the_week() {
    let fleet = StaticFleet::new();
    fleet.put_host(view("1", HostHealth::Healthy, Some(metrics(NOW, 40, true))));
    let mut m = view("2", HostHealth::Healthy, None);
    m.maintenance = true;
    fleet.put_host(m);
    fleet.put_series("1", "cpu_steal_pct", vec![(NOW - DAY, 4.0), (NOW - 2 * DAY, 8.0), (NOW - 8 * DAY, 100.0)]);
    let i = insight(&fleet).await;
    let inputs = i.digest_inputs(NOW - 7 * DAY, NOW).await.unwrap();
    assert_eq!(inputs.len(), 1, "maintenance hosts are left out");
    assert_eq!(inputs[0].steal.len(), 2, "only the week");
    assert_eq!(inputs[0].unhealthy_now, vec!["web".to_owned()]);
    let d = gpufleet_insight::digest::build(NOW - 7 * DAY, NOW, &inputs);
    assert_eq!(d.hosts[0].steal_avg_pct, Some(6.0));
    assert_eq!(d.hosts[0].top_action.as_ref().unwrap().text, "Fix unhealthy containers: web");
}

#[tokio::test]
async fn an_unreachable_host_fires_then_resolves_and_the_webhook_hears_both() {
    let rx = receiver(0, None).await;
    let fleet = StaticFleet::new();
    fleet.put_host(view("1", HostHealth::Healthy, Some(metrics(NOW, 30, false))));
    let i = Arc::new(insight(&fleet).await);
    let cfg: gpufleet_insight::notify::NotifierConfig = toml::from_str(&format!("kind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"", rx.url("/hook"))).unwrap();
    let (queue, sender) = NotifyQueue::new(64, Notifiers::build(&[cfg]).unwrap());
    let now = Arc::new(AtomicI64::new(NOW));
    let clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    };
    let worker = AlertWorker::new(i.alerts().clone(), i.clone(), queue, Duration::from_secs(30), clock);
    let mut sup = Supervisor::new(Shutdown::new());
    sup.spawn(sender);

    assert!(worker.tick().await.unwrap().is_empty());
    fleet.update_host("1", |h| h.state = HostHealth::Unreachable);
    now.fetch_add(30_000, Ordering::SeqCst);
    let fired = worker.tick().await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!((fired[0].kind, fired[0].alert.rule.as_str()), (NoticeKind::Firing, "host_unreachable"));
    let firing = i.alerts().alerts(&AlertQuery { status: Some(AlertStatus::Firing), ..AlertQuery::default() }).await.unwrap();
    assert_eq!(firing.len(), 1);

    fleet.update_host("1", |h| h.state = HostHealth::Healthy);
    now.fetch_add(30_000, Ordering::SeqCst);
    let resolved = worker.tick().await.unwrap();
    assert_eq!(resolved.iter().map(|n| n.kind).collect::<Vec<_>>(), [NoticeKind::Resolved]);

    let bodies = eventually(10, "two webhook calls", || {
        let rec = rx.rec.clone();
        async move { (rec.accepted().len() >= 2).then(|| rec.accepted()) }
    })
    .await;
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0].1["notice"], "firing");
    assert_eq!(bodies[0].1["alert"]["host_name"], "gpu-1");
    assert_eq!(bodies[1].1["notice"], "resolved");
    assert_eq!(bodies[1].1["alert"]["status"], "resolved");
    sup.shutdown(Duration::from_secs(5)).await;
}
