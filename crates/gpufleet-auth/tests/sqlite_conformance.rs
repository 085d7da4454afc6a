//! The MetaStore conformance suite against SQLite (a fresh file in a temp dir per case), plus the
//! SQLite-specific checks: tampering with a stored record is caught, reopening keeps everything.

use gpufleet_auth::testsuite::{key_record, TestStore};
use gpufleet_auth::{AuditEntry, BrokenReason, MetaStore, Outcome, Role, SqliteMetaStore};
use std::sync::Arc;

async fn make() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("open sqlite");
    TestStore::new(Arc::new(store), dir)
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

#[tokio::test]
async fn an_edited_record_is_reported_by_verify() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteMetaStore::open(&dir.path().join("meta.db")).await?;
    store.append_audit(&entries(5)).await?;
    assert_eq!(store.audit_chain_verify().await?.first_broken, None);

    // The append-only trigger refuses edits...
    let refused = sqlx::query("UPDATE audit_log SET outcome = 'denied' WHERE id = 3").execute(store.pool()).await;
    assert!(refused.is_err(), "the trigger must refuse updates");
    // ...but someone with write access can drop it; the chain still catches the edit.
    sqlx::query("DROP TRIGGER audit_log_append_only").execute(store.pool()).await?;
    sqlx::query("UPDATE audit_log SET target = 'host-99' WHERE id = 3").execute(store.pool()).await?;
    let report = store.audit_chain_verify().await?;
    let broken = report.first_broken.expect("the edit must be detected");
    assert_eq!((broken.id, broken.reason), (3, BrokenReason::HashMismatch));
    assert_eq!(report.checked, 3);
    Ok(())
}

#[tokio::test]
async fn an_unreadable_edit_and_a_deletion_are_reported() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteMetaStore::open(&dir.path().join("meta.db")).await?;
    store.append_audit(&entries(5)).await?;
    sqlx::query("DROP TRIGGER audit_log_append_only").execute(store.pool()).await?;
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
async fn reopening_keeps_keys_and_the_chain() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("meta.db");
    let key = key_record("alice", Role::Admin, 1);
    {
        let store = SqliteMetaStore::open(&path).await?;
        store.create_key(&key).await?;
        store.append_audit(&entries(3)).await?;
        store.close().await;
    }
    let store = SqliteMetaStore::open(&path).await?;
    assert_eq!(store.get_key_by_prefix(&key.prefix).await?, Some(key));
    let more = store.append_audit(&entries(1)).await?;
    assert_eq!(more[0].id, 4);
    assert_eq!(store.audit_chain_verify().await?.checked, 4);
    Ok(())
}
