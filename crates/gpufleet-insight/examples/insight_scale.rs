//! How long the alert pass and the fleet score take over a large fleet held in memory:
//! `cargo run --release -p gpufleet-insight --example insight_scale -- 10000`.
//!
//! Builds N hosts with a full metrics sample each (1 % unreachable, 2 % with an unhealthy
//! container, 1 % with high steal), evaluates every built-in rule plus two configured rules over
//! them through [`Insight`] (observe + evaluate) several times, and scores the fleet; prints the
//! median of each.

use gpufleet_agent::wire::{ContainerState, CpuPercent, Disk, HostMetrics};
use gpufleet_insight::alert::{AlertService, HostHealth, MemoryAlertStore, ObservationSource};
use gpufleet_insight::config::AlertsConfig;
use gpufleet_insight::source::{HostView, StaticFleet};
use gpufleet_insight::Insight;
use std::sync::Arc;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map_or(Ok(10_000), |a| a.parse())?;
    let now = gpufleet_core::time::now_ms();
    let fleet = StaticFleet::new();
    for i in 0..n {
        let unhealthy = i % 50 == 7;
        let m = HostMetrics {
            time_ms: now,
            cpu: CpuPercent { steal: if i % 100 == 3 { 20.0 } else { 0.5 }, idle: 80.0, ..CpuPercent::default() },
            mem_total_bytes: 512 << 30,
            mem_available_bytes: 300 << 30,
            disks: vec![Disk { mount: "/data".into(), fs: "xfs".into(), total_bytes: 100, used_bytes: 50, free_bytes: 50 }],
            containers: vec![ContainerState {
                id: format!("c{i}"),
                name: "inference".into(),
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
        };
        let state = if i % 100 == 11 { HostHealth::Unreachable } else { HostHealth::Healthy };
        fleet.put_host(HostView { id: i.to_string(), name: format!("host-{i:05}"), groups: vec![format!("rack-{}", i % 40)], state, metrics: Some(Arc::new(m)), ..HostView::default() });
    }
    let cfg: AlertsConfig = toml::from_str(
        "[[rules]]\nname = \"disk\"\nmetric = \"disk_used_pct\"\nthreshold = 90\nseverity = \"CRIT\"\n[[rules]]\nname = \"rack7-down\"\nstate = \"unreachable\"\nseverity = \"WARN\"\ngroups = [\"rack-7\"]\n",
    )?;
    let alerts = Arc::new(AlertService::open(&cfg.validate()?, Arc::new(MemoryAlertStore::default()), now).await?);
    let insight = Insight::new(fleet.clone(), fleet.clone(), Some(fleet.clone()), alerts.clone());
    let (mut observe, mut evaluate, mut score) = (Vec::new(), Vec::new(), Vec::new());
    let mut notices = 0;
    for round in 0..7 {
        let t = Instant::now();
        let obs = insight.observe(now + round * 30_000).await?;
        observe.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let (sent, stored) = alerts.evaluate(now + round * 30_000, &obs).await;
        stored?;
        evaluate.push(t.elapsed().as_secs_f64() * 1000.0);
        notices += sent.len();
        let t = Instant::now();
        let f = insight.fleet_score(now).await?;
        score.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(f.hosts, n);
    }
    println!(
        "{{\"hosts\": {n}, \"observe_ms\": {:.1}, \"evaluate_ms\": {:.1}, \"fleet_score_ms\": {:.1}, \"firing\": {}, \"notices\": {notices}}}",
        median(observe),
        median(evaluate),
        median(score),
        alerts.firing()
    );
    Ok(())
}
