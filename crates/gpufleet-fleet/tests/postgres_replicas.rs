//! Two server replicas sharing PostgreSQL (one fleet schema, one metadata schema for the leases,
//! a pool each) against the simulated fleet: each host is checked exactly once per cycle, and when
//! the replica holding the lease stops, the other takes over once the lease ends.
//!
//! Needs the server: `GPUFLEET_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/test`.

#[path = "common/postgres.rs"]
mod pg;

use gpufleet_agent::sim::{run_sim_fleet, SimFleetConfig};
use gpufleet_auth::PostgresMetaStore;
use gpufleet_fleet::{Fleet, FleetConfig, FleetSettings, FleetWorkers, HistoryQuery, HostInput, HostState, Tick};
use gpufleet_runtime::Shutdown;
use pg::SchemaGuard;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOSTS: usize = 50;

fn settings() -> FleetSettings {
    let cfg = FleetConfig { health_interval: "300ms".into(), health_timeout: "250ms".into(), unreachable_after: 1, ..FleetConfig::default() };
    cfg.validate().expect("settings")
}

/// One replica: its own pools on the shared schemas.
async fn replica(fleet_schema: &str, meta_schema: &str) -> (Arc<Fleet>, FleetWorkers) {
    let store = pg::connect(fleet_schema).await;
    let url = pg::url();
    let meta = PostgresMetaStore::connect(&url, meta_schema).await.unwrap_or_else(|e| panic!("{}", pg::how_to_start(&url, &e)));
    Fleet::open(Arc::new(store), Arc::new(meta), settings()).await.expect("fleet")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_is_checked_once_per_cycle_and_the_other_replica_takes_over() -> anyhow::Result<()> {
    let fleet_schema = pg::unique_schema("fleet_rep");
    let meta_schema = pg::unique_schema("meta_rep");
    let _guards = (SchemaGuard(fleet_schema.clone()), SchemaGuard(meta_schema.clone()));
    let sim = run_sim_fleet(SimFleetConfig { hosts: HOSTS, ..Default::default() }, std::future::pending()).await?;
    let ((a, wa), (b, wb)) = tokio::join!(replica(&fleet_schema, &meta_schema), replica(&fleet_schema, &meta_schema));
    for h in sim.hosts() {
        a.register(&HostInput { name: h.name.clone(), agent_url: h.agent_url.clone(), ..Default::default() }).await?;
    }
    assert_eq!(b.hosts(&Default::default()).await?.len(), HOSTS, "the replicas share the registry");

    let shutdown = Shutdown::new();
    let requests_before = sim.requests();
    let mut ran = 0;
    for round in 0..4 {
        let (ta, tb) = tokio::join!(wa.health.tick(&shutdown), wb.health.tick(&shutdown));
        let (ta, tb) = (ta?, tb?);
        assert!(matches!(ta, Tick::Skipped) || matches!(tb, Tick::Skipped), "round {round}: both replicas ran a cycle");
        ran += usize::from(matches!(ta, Tick::Ran(_))) + usize::from(matches!(tb, Tick::Ran(_)));
    }
    assert_eq!(ran, 4, "one replica ran each round");
    assert_eq!(sim.requests() - requests_before, (4 * HOSTS) as u64, "one request per host per cycle");
    for h in a.hosts(&Default::default()).await? {
        let checks = a.store().health_history(h.id, &HistoryQuery { since_ms: None, limit: 100 }).await?;
        assert_eq!(checks.len(), 4, "{}: exactly one check per cycle", h.name);
        assert_eq!(h.state, HostState::Healthy);
    }
    let (ra, rb) = (&a.workers_status()[0], &b.workers_status()[0]);
    assert_eq!((ra.cycles + rb.cycles, ra.cycles_skipped + rb.cycles_skipped), (4, 4));

    // The holder stops renewing; once its lease (two intervals) ends, the other replica runs.
    let other = if ra.cycles > 0 { &wb } else { &wa };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if matches!(other.health.tick(&shutdown).await?, Tick::Ran(_)) {
            break;
        }
        assert!(Instant::now() < deadline, "the other replica takes over within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sim.requests() - requests_before, (5 * HOSTS) as u64);
    Ok(())
}
