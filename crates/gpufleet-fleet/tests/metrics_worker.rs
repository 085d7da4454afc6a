//! The metrics and maintenance workers against the simulated fleet: only healthy and degraded
//! hosts are read, with the agent token; samples land in the current month's partition (created
//! by the round) and are read back per metric; the latest sample is kept per host; a wrong token
//! counts as a failure; maintenance creates partitions ahead and applies retention.

mod common;

use common::{fleet, register, settings};
use gpufleet_agent::sim::{run_sim_fleet, Scenario, SimFleetConfig};
use gpufleet_core::time::now_ms;
use gpufleet_fleet::month::{month_of, month_start, partition_name};
use gpufleet_fleet::{FleetConfig, FleetStore, HostState};
use gpufleet_runtime::Shutdown;

fn sim_config() -> SimFleetConfig {
    SimFleetConfig {
        hosts: 4,
        assign: vec![(1, Scenario::Degraded), (2, Scenario::GpuXid), (3, Scenario::Unreachable)],
        ..Default::default()
    }
}

fn with_token(token: &str) -> gpufleet_fleet::FleetSettings {
    let mut s = settings(1, 8);
    s.agent_token = Some(gpufleet_fleet::AgentToken::new(token));
    s
}

#[tokio::test]
async fn only_healthy_and_degraded_hosts_are_read_into_this_months_partition() -> anyhow::Result<()> {
    let sim = run_sim_fleet(sim_config(), std::future::pending()).await?;
    let dir = tempfile::tempdir()?;
    let (fleet, workers, store) = fleet(dir.path(), with_token(gpufleet_agent::sim::DEFAULT_SIM_TOKEN)).await;
    let mut ids = Vec::new();
    for h in sim.hosts() {
        ids.push(register(&fleet, &h.name, &h.agent_url).await);
    }
    let shutdown = Shutdown::new();
    // Before any health cycle every host is `unknown`: nothing to read.
    let none = workers.metrics.tick(&shutdown).await?.expect("lease held");
    assert_eq!((none.hosts, none.stored), (0, 0));
    assert!(none.partitions_created.is_empty(), "Fleet::open created this month's and next month's");
    assert_eq!(store.partitions().await?, [partition_name(month_of(now_ms())), partition_name(month_of(now_ms()) + 1)]);
    assert_eq!(fleet.partition_problem(now_ms()).await, None);

    workers.health.run_cycle(&shutdown).await?;
    let states: Vec<HostState> = futures_states(store.as_ref(), &ids).await;
    assert_eq!(states, [HostState::Healthy, HostState::Degraded, HostState::Critical, HostState::Unreachable]);
    let before = now_ms();
    let round = workers.metrics.tick(&shutdown).await?.expect("lease held");
    assert_eq!((round.hosts, round.stored, round.failed), (2, 2, 0), "{round:?}");
    assert!(round.partitions_created.is_empty(), "already there");
    for id in &ids[..2] {
        let steal = store.host_metrics_range(*id, "cpu_steal_pct", before - 600_000, now_ms() + 600_000).await?;
        assert_eq!(steal.len(), 1, "one sample for host {id}");
        let disk = store.host_metrics_range(*id, "disk_used_pct", 0, i64::MAX).await?;
        assert!(disk[0].1 > 0.0 && disk[0].1 <= 100.0, "{disk:?}");
        let latest = fleet.latest_metrics(*id).expect("latest kept");
        assert_eq!(latest.gpus.len(), 8);
    }
    assert!(fleet.latest_metrics(ids[2]).is_none() && fleet.latest_metrics(ids[3]).is_none(), "critical and unreachable hosts are not read");
    let status = &fleet.workers_status()[1];
    assert_eq!((status.name.as_str(), status.checks_performed, status.successful), ("fleet.metrics", 2, 2));
    Ok(())
}

async fn futures_states(store: &dyn FleetStore, ids: &[i64]) -> Vec<HostState> {
    let mut out = Vec::new();
    for id in ids {
        out.push(common::state_of(store, *id).await);
    }
    out
}

#[tokio::test]
async fn a_wrong_agent_token_is_a_failed_read() -> anyhow::Result<()> {
    let sim = run_sim_fleet(SimFleetConfig { hosts: 2, ..Default::default() }, std::future::pending()).await?;
    let dir = tempfile::tempdir()?;
    let (fleet, workers, _) = fleet(dir.path(), with_token("not-the-token")).await;
    for h in sim.hosts() {
        register(&fleet, &h.name, &h.agent_url).await;
    }
    let shutdown = Shutdown::new();
    workers.health.run_cycle(&shutdown).await?;
    let round = workers.metrics.tick(&shutdown).await?.expect("lease held");
    assert_eq!((round.hosts, round.stored, round.failed), (2, 0, 2));
    assert_eq!(fleet.workers_status()[1].failed, 2);
    Ok(())
}

#[tokio::test]
async fn maintenance_creates_partitions_ahead_and_applies_retention() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = FleetConfig { history_retention: "1d".into(), metrics_retention: "40d".into(), ..FleetConfig::default() };
    let (fleet, workers, store) = fleet(dir.path(), cfg.validate()?).await;
    let id = register(&fleet, "a", "http://127.0.0.1:9").await;
    let day = 86_400_000;
    // Mid-month, 40 months from now: Fleet::open made this month's and next month's partitions.
    let opened = store.partitions().await?;
    let nov = month_of(now_ms()) + 40;
    let now = month_start(nov) + 15 * day;
    store.ensure_partitions(now - 90 * day, 0).await?; // three months before
    let old = gpufleet_fleet::testsuite::check(id, now - 2 * day, HostState::Healthy, None);
    let new = gpufleet_fleet::testsuite::check(id, now - 3_600_000, HostState::Healthy, None);
    store.record_checks(&[old, new]).await?;
    assert!(fleet.partition_problem(now).await.is_some(), "that month is missing");
    let report = workers.maintenance.tick(now).await?.expect("lease held");
    assert_eq!(report.partitions_created, [partition_name(nov), partition_name(nov + 1)]);
    let mut dropped = opened.clone();
    dropped.push(partition_name(nov - 3));
    assert_eq!(report.partitions_dropped, dropped, "months that ended more than 40 days ago");
    assert_eq!(report.history_rows_deleted, 1);
    assert_eq!(fleet.partition_problem(now).await, None);
    assert_eq!(fleet.workers_status()[2].cycles, 1);
    Ok(())
}
