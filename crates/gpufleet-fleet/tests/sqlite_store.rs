//! The FleetStore conformance suite against SQLite (a fresh file per case), plus what is
//! SQLite-specific: a reopened file keeps everything, and the monthly tables are real tables.

use gpufleet_fleet::testsuite::{spec, TestFleetStore, NOV_2026};
use gpufleet_fleet::{FleetStore, SqliteFleetStore};
use std::sync::Arc;

async fn make() -> TestFleetStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteFleetStore::open(&dir.path().join("fleet.db")).await.expect("open");
    TestFleetStore::new(Arc::new(store), dir)
}

gpufleet_fleet::fleet_store_test_suite!(make);

#[tokio::test]
async fn reopening_keeps_hosts_and_partitions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("fleet.db");
    let store = SqliteFleetStore::open(&path).await?;
    let h = store.create_host(&spec("keep", &["g"]), 1).await?;
    store.ensure_partitions(NOV_2026, 0).await?;
    store.close().await;
    let store = SqliteFleetStore::open(&path).await?;
    assert_eq!(store.get_host_by_name("keep").await?.map(|x| x.id), Some(h.id));
    assert_eq!(store.partitions().await?, ["host_metrics_2026_11"]);
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'host_metrics%'")
        .fetch_all(store.pool())
        .await?;
    assert_eq!(tables, ["host_metrics_2026_11"], "one real table per month");
    Ok(())
}
