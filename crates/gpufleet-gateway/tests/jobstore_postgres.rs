//! The JobStore conformance suite against PostgreSQL (a fresh schema per case, dropped after),
//! plus reconnecting keeps records, two stores on one schema (two replicas) see each other's
//! writes, and concurrent connects to a new schema do not race.
//!
//! Needs the server: `GPUFLEET_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/test`.

use gpufleet_gateway::jobs::testsuite::{job, TestJobStore};
use gpufleet_gateway::{JobStatus, JobStore, PostgresJobStore};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

fn url() -> String {
    std::env::var("GPUFLEET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema name no other test (in this or another process) uses.
fn unique_schema(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "gpufleet_test_jobs_{what}_{}_{n}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Connects a store on `schema`, failing with how to start the server when it is down.
async fn connect(schema: &str) -> PostgresJobStore {
    let url = url();
    PostgresJobStore::connect(&url, schema)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot open PostgreSQL at {url} ({e}). Start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main start` \
                 (or run .ci/run), or point GPUFLEET_TEST_POSTGRES_URL at a server"
            )
        })
}

/// Drops its schema on drop, from a thread with its own runtime (drop cannot await); the test
/// passes even when this fails, with a warning naming the schema left behind.
struct SchemaGuard(String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let schema = self.0.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url()).await?;
                // The test's pool may still hold a connection whose transaction ends only when
                // its runtime runs again, which it cannot while this drop blocks it: end the
                // sessions holding locks in this schema (they belong to the finished test).
                sqlx::query(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                     JOIN pg_class c ON c.oid = l.relation \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                )
                .bind(&schema)
                .execute(&mut conn)
                .await?;
                sqlx::query("SET lock_timeout = '5s'")
                    .execute(&mut conn)
                    .await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "warning: could not drop test schema {}: {dropped:?}",
                self.0
            );
        }
    }
}

async fn make() -> TestJobStore {
    let schema = unique_schema("suite");
    let store = connect(&schema).await;
    TestJobStore::new(Arc::new(store), SchemaGuard(schema))
}

gpufleet_gateway::jobstore_test_suite!(make);

#[tokio::test]
async fn reconnecting_keeps_records_and_handled_dead_letters() -> anyhow::Result<()> {
    let schema = unique_schema("reopen");
    let _guard = SchemaGuard(schema.clone());
    let keep = job(JobStatus::Running, None);
    {
        let store = connect(&schema).await;
        store.upsert(&keep).await?;
        assert!(store.resolve_dead_letter("7", "discarded", 1).await?);
        store.close().await;
    }
    let store = connect(&schema).await;
    assert_eq!(store.get(&keep.id, 5_000).await?, Some(keep));
    assert_eq!(store.resolved_dead_letters().await?, vec!["7".to_owned()]);
    assert!(!store.resolve_dead_letter("7", "retried", 2).await?);
    Ok(())
}

#[tokio::test]
async fn two_replicas_share_records_and_drop_schema_removes_them() -> anyhow::Result<()> {
    let schema = unique_schema("shared");
    let _guard = SchemaGuard(schema.clone());
    let (a, b) = (connect(&schema).await, connect(&schema).await);
    let queued = job(JobStatus::Queued, None);
    a.upsert(&queued).await?;
    let done = gpufleet_gateway::JobRecord {
        status: JobStatus::Completed,
        attempts: 2,
        expires_ms: Some(9_000),
        ..queued.clone()
    };
    b.upsert(&done).await?;
    assert_eq!(
        a.get(&queued.id, 100).await?,
        Some(done),
        "a sees b's update"
    );
    assert!(a.resolve_dead_letter("1-0", "retried", 1).await?);
    assert!(
        !b.resolve_dead_letter("1-0", "discarded", 2).await?,
        "handled once across replicas"
    );
    b.drop_schema().await?;
    b.close().await;
    assert!(
        a.get(&queued.id, 100).await.is_err(),
        "the tables are gone with the schema"
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_schema_name_is_refused() {
    let err = PostgresJobStore::connect(&url(), "jobs; DROP TABLE x")
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("invalid schema name"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_connects_to_a_new_schema_do_not_race() -> anyhow::Result<()> {
    let schema = unique_schema("connect");
    let _guard = SchemaGuard(schema.clone());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let schema = schema.clone();
            tokio::spawn(async move { PostgresJobStore::connect(&url(), &schema).await })
        })
        .collect();
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(
            t.await?
                .map_err(|e| anyhow::anyhow!("concurrent connect failed: {e}"))?,
        );
    }
    let j = job(JobStatus::Queued, None);
    stores[0].upsert(&j).await?;
    assert_eq!(stores[3].get(&j.id, 0).await?, Some(j));
    Ok(())
}
