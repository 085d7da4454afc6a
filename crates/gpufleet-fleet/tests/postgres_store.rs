//! The FleetStore conformance suite against PostgreSQL (a fresh schema per case, dropped after),
//! plus what is PostgreSQL-specific: the monthly tables are native partitions of `host_metrics`,
//! and two stores (two pools, like two replicas) creating the same partitions at once do not
//! collide.
//!
//! Needs the server: `GPUFLEET_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/test`.

#[path = "common/postgres.rs"]
mod pg;

use gpufleet_fleet::testsuite::{TestFleetStore, NOV_2026};
use gpufleet_fleet::FleetStore;
use pg::SchemaGuard;
use std::sync::Arc;

async fn make() -> TestFleetStore {
    let schema = pg::unique_schema("fleet");
    let store = pg::connect(&schema).await;
    TestFleetStore::new(Arc::new(store), SchemaGuard(schema))
}

gpufleet_fleet::fleet_store_test_suite!(make);

#[tokio::test]
async fn months_are_native_partitions_and_replicas_create_them_without_colliding() -> anyhow::Result<()> {
    let schema = pg::unique_schema("fleet_parts");
    let _guard = SchemaGuard(schema.clone());
    // Two replicas connecting (and migrating) at once, then creating the same months at once.
    let (a, b) = tokio::join!(pg::connect(&schema), pg::connect(&schema));
    let (ca, cb) = tokio::join!(a.ensure_partitions(NOV_2026, 2), b.ensure_partitions(NOV_2026, 2));
    let mut created = ca?;
    created.extend(cb?);
    created.sort();
    assert_eq!(created, ["host_metrics_2026_11", "host_metrics_2026_12", "host_metrics_2027_01"], "each month created once");
    let kind: String = sqlx::query_scalar(
        "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = 'host_metrics'",
    )
    .bind(&schema)
    .fetch_one(a.pool())
    .await?;
    assert_eq!(kind, "p", "host_metrics is a partitioned table");
    assert_eq!(b.partitions().await?.len(), 3);
    Ok(())
}
