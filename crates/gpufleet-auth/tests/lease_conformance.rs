//! The LeaseStore conformance suite against both implementations (SQLite: a fresh file per case;
//! PostgreSQL: a fresh schema per case, dropped after), plus two PostgreSQL stores on one schema
//! (two replicas) contending for the same leases.
//!
//! Needs PostgreSQL: `GPUFLEET_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/test`.

#[path = "common/postgres.rs"]
mod pg;

use gpufleet_auth::lease::conformance::TestLeases;
use gpufleet_auth::{LeaseStore, SqliteMetaStore};
use std::{sync::Arc, time::Duration};

mod sqlite {
    use super::*;

    async fn make() -> TestLeases {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("open sqlite");
        TestLeases::new(Arc::new(store), dir)
    }

    gpufleet_auth::lease_test_suite!(make);
}

mod postgres {
    use super::*;

    async fn make() -> TestLeases {
        let schema = pg::unique_schema("lease");
        let store = pg::connect(&schema).await;
        TestLeases::new(Arc::new(store), pg::SchemaGuard(schema))
    }

    gpufleet_auth::lease_test_suite!(make);

    /// Two replicas with their own pools race for 20 fresh leases, then for each lease again
    /// after it expired: one winner every time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_replicas_contend_and_one_wins_each_lease() -> anyhow::Result<()> {
        let schema = pg::unique_schema("lease_two");
        let _guard = pg::SchemaGuard(schema.clone());
        let a: Arc<dyn LeaseStore> = Arc::new(pg::connect(&schema).await);
        let b: Arc<dyn LeaseStore> = Arc::new(pg::connect(&schema).await);
        let ttl = Duration::from_millis(100);
        for now in [1_000, 1_100] {
            for round in 0..20 {
                let name = format!("partition-maintenance-{round}");
                let (ra, rb) = tokio::join!(
                    a.try_acquire(&name, "replica-a", ttl, now),
                    b.try_acquire(&name, "replica-b", ttl, now)
                );
                let (ra, rb) = (ra?, rb?);
                assert!(ra ^ rb, "{name} at {now}: exactly one replica wins (a: {ra}, b: {rb})");
                let winner = if ra { "replica-a" } else { "replica-b" };
                assert_eq!(a.holder(&name).await?, Some((winner.to_owned(), now + 100)));
            }
        }
        Ok(())
    }
}
