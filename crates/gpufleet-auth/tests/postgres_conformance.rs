//! The MetaStore conformance suite against PostgreSQL (a fresh schema per case, dropped after),
//! plus the PostgreSQL-specific checks: the append-only trigger, tampering caught by verify,
//! reconnecting keeps everything, and two stores (two pools, like two replicas) appending to one
//! schema at once build one unbroken chain.
//!
//! Needs the server: `GPUFLEET_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/test`.

#[path = "common/postgres.rs"]
mod pg;

use gpufleet_auth::testsuite::{key_record, TestStore};
use gpufleet_auth::{AuditEntry, AuditFilter, BrokenReason, MetaStore, Outcome, PostgresMetaStore, Role};
use pg::SchemaGuard;
use std::sync::Arc;

async fn make() -> TestStore {
    let schema = pg::unique_schema("meta");
    let store = pg::connect(&schema).await;
    TestStore::new(Arc::new(store), SchemaGuard(schema))
}

gpufleet_auth::metastore_test_suite!(make);

fn entries(n: i64) -> Vec<AuditEntry> {
    (1..=n)
        .map(|i| {
            let mut e = AuditEntry::new(i, "host.restart", Outcome::Success);
            e.target = format!("host-{i}");
            e
        })
        .collect()
}

async fn schema_exists(store: &PostgresMetaStore, schema: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(store.pool())
        .await?)
}

#[tokio::test]
async fn the_trigger_refuses_edits_and_deletes_but_not_retention() -> anyhow::Result<()> {
    let schema = pg::unique_schema("guard");
    let _guard = SchemaGuard(schema.clone());
    let store = pg::connect(&schema).await;
    store.append_audit(&entries(5)).await?;
    let update = sqlx::query("UPDATE audit_log SET outcome = 'denied' WHERE id = 3").execute(store.pool()).await;
    assert!(update.is_err(), "the trigger must refuse updates");
    let delete = sqlx::query("DELETE FROM audit_log WHERE id = 1").execute(store.pool()).await;
    assert!(delete.is_err(), "the trigger must refuse deletes outside retention");
    let truncate = sqlx::query("TRUNCATE audit_log").execute(store.pool()).await;
    assert!(truncate.is_err(), "the trigger must refuse truncation");
    assert_eq!(store.query_audit(&AuditFilter::default()).await?.len(), 5, "nothing changed");
    // Retention marks its own transaction and gets through; the mark does not outlive it.
    assert_eq!(store.apply_audit_retention(3).await?, 2);
    let delete = sqlx::query("DELETE FROM audit_log WHERE id = 5").execute(store.pool()).await;
    assert!(delete.is_err(), "after retention, deletes are refused again");
    let report = store.audit_chain_verify().await?;
    assert_eq!((report.checked, report.first_broken), (3, None));
    Ok(())
}

#[tokio::test]
async fn an_edited_record_is_reported_by_verify() -> anyhow::Result<()> {
    let schema = pg::unique_schema("edit");
    let _guard = SchemaGuard(schema.clone());
    let store = pg::connect(&schema).await;
    store.append_audit(&entries(5)).await?;
    assert_eq!(store.audit_chain_verify().await?.first_broken, None);

    // Someone with write access can drop the guard; the chain still catches the edit.
    sqlx::query("DROP TRIGGER audit_log_append_only ON audit_log").execute(store.pool()).await?;
    sqlx::query("UPDATE audit_log SET target = 'host-99' WHERE id = 3").execute(store.pool()).await?;
    let report = store.audit_chain_verify().await?;
    let broken = report.first_broken.expect("the edit must be detected");
    assert_eq!((broken.id, broken.reason), (3, BrokenReason::HashMismatch));
    assert_eq!(report.checked, 3);
    Ok(())
}

#[tokio::test]
async fn an_unreadable_edit_and_a_deletion_are_reported() -> anyhow::Result<()> {
    let schema = pg::unique_schema("unreadable");
    let _guard = SchemaGuard(schema.clone());
    let store = pg::connect(&schema).await;
    store.append_audit(&entries(5)).await?;
    sqlx::query("DROP TRIGGER audit_log_append_only ON audit_log").execute(store.pool()).await?;
    sqlx::query("UPDATE audit_log SET role = 'superuser' WHERE id = 4").execute(store.pool()).await?;
    let broken = store.audit_chain_verify().await?.first_broken.expect("detected");
    assert_eq!(broken.id, 4);
    assert!(matches!(broken.reason, BrokenReason::Unreadable { .. }), "{broken:?}");

    sqlx::query("DELETE FROM audit_log WHERE id = 2").execute(store.pool()).await?;
    let broken = store.audit_chain_verify().await?.first_broken.expect("detected");
    assert_eq!((broken.id, broken.reason), (3, BrokenReason::IdGap { expected: 2 }));
    Ok(())
}

#[tokio::test]
async fn reconnecting_keeps_keys_and_the_chain() -> anyhow::Result<()> {
    let schema = pg::unique_schema("reopen");
    let _guard = SchemaGuard(schema.clone());
    let key = key_record("alice", Role::Admin, 1);
    {
        let store = pg::connect(&schema).await;
        store.create_key(&key).await?;
        store.append_audit(&entries(3)).await?;
        store.close().await;
    }
    let store = pg::connect(&schema).await;
    assert_eq!(store.get_key_by_prefix(&key.prefix).await?, Some(key));
    let more = store.append_audit(&entries(1)).await?;
    assert_eq!(more[0].id, 4);
    assert_eq!(store.audit_chain_verify().await?.checked, 4);
    Ok(())
}

#[tokio::test]
async fn schemas_are_separate_and_drop_schema_removes_one() -> anyhow::Result<()> {
    let (a, b) = (pg::unique_schema("sep_a"), pg::unique_schema("sep_b"));
    let _guards = (SchemaGuard(a.clone()), SchemaGuard(b.clone()));
    let (sa, sb) = (pg::connect(&a).await, pg::connect(&b).await);
    sa.append_audit(&entries(2)).await?;
    assert_eq!(sb.audit_chain_verify().await?.checked, 0, "b sees nothing of a");
    assert_eq!(sb.append_audit(&entries(1)).await?[0].id, 1);
    assert!(schema_exists(&sb, &a).await?);
    sa.drop_schema().await?;
    sa.close().await;
    assert!(!schema_exists(&sb, &a).await?, "drop_schema removes the schema");
    assert_eq!(sb.audit_chain_verify().await?.checked, 1, "the other schema is untouched");
    Ok(())
}

#[tokio::test]
async fn a_bad_schema_name_is_refused() {
    let err = PostgresMetaStore::connect(&pg::url(), "meta; DROP TABLE x").await.expect_err("refused");
    assert!(err.to_string().contains("invalid schema name"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_connects_to_a_new_schema_do_not_race() -> anyhow::Result<()> {
    let schema = pg::unique_schema("connect");
    let _guard = SchemaGuard(schema.clone());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let schema = schema.clone();
            tokio::spawn(async move { PostgresMetaStore::connect(&pg::url(), &schema).await })
        })
        .collect();
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await?.map_err(|e| anyhow::anyhow!("concurrent connect failed: {e}"))?);
    }
    let key = key_record("alice", Role::Admin, 1);
    stores[0].create_key(&key).await?;
    assert_eq!(stores[3].get_key_by_prefix(&key.prefix).await?, Some(key), "all on the same tables");
    Ok(())
}

/// Two replicas (separate stores, separate pools) appending to one schema at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_appending_at_once_build_one_chain() -> anyhow::Result<()> {
    let schema = pg::unique_schema("two");
    let _guard = SchemaGuard(schema.clone());
    let stores = [Arc::new(pg::connect(&schema).await), Arc::new(pg::connect(&schema).await)];
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(n, store)| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..50 {
                    let mut e = AuditEntry::new(i, "job.submit", Outcome::Success);
                    e.target = format!("replica-{n}-{i}");
                    let records = store.append_audit(&[e]).await.expect("append");
                    ids.push(records[0].id);
                }
                ids
            })
        })
        .collect();
    let mut all_ids = Vec::new();
    for t in tasks {
        all_ids.extend(t.await?);
    }
    all_ids.sort_unstable();
    assert_eq!(all_ids, (1..=100).collect::<Vec<i64>>(), "each append got its own position");
    for store in &stores {
        let report = store.audit_chain_verify().await?;
        assert_eq!((report.checked, report.first_broken), (100, None));
    }
    Ok(())
}
