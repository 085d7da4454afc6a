//! The batched audit writer: flush, drain on shutdown, retry after a store failure, backpressure.

use async_trait::async_trait;
use gpufleet_auth::{
    AuditEntry, AuditFilter, AuditLog, AuditLogConfig, AuditLogError, AuditRecord, KeyPrefix, KeyRecord, MetaStore,
    Outcome, SqliteMetaStore, StoreError, VerifyReport,
};
use gpufleet_runtime::{Shutdown, Supervisor};
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};
use std::time::Duration;

fn entry(i: i64) -> AuditEntry {
    let mut e = AuditEntry::new(i, "job.submit", Outcome::Success);
    e.target = format!("job-{i}");
    e
}

async fn sqlite() -> anyhow::Result<(Arc<SqliteMetaStore>, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    Ok((Arc::new(SqliteMetaStore::open(&dir.path().join("meta.db")).await?), dir))
}

fn supervisor() -> Supervisor {
    Supervisor::new(Shutdown::new()).with_backoff(Duration::from_millis(1), Duration::from_millis(5))
}

#[tokio::test]
async fn flush_makes_every_queued_entry_visible_in_order() -> anyhow::Result<()> {
    let (store, _dir) = sqlite().await?;
    let (log, writer) = AuditLog::new(store.clone(), AuditLogConfig { capacity: 64, max_batch: 16 });
    let mut sup = supervisor();
    sup.spawn(writer);
    for i in 1..=500 {
        log.append(entry(i)).await?;
    }
    log.flush().await?;
    let report = store.audit_chain_verify().await?;
    assert_eq!((report.checked, report.first_broken), (500, None));
    let newest = store.query_audit(&AuditFilter { limit: 1, ..Default::default() }).await?;
    assert_eq!((newest[0].id, newest[0].entry.target.as_str()), (500, "job-500"));
    sup.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test]
async fn shutdown_drains_what_is_queued() -> anyhow::Result<()> {
    let (store, _dir) = sqlite().await?;
    let (log, writer) = AuditLog::new(store.clone(), AuditLogConfig::default());
    for i in 1..=100 {
        log.try_append(entry(i))?;
    }
    let mut sup = supervisor();
    sup.spawn(writer);
    sup.shutdown(Duration::from_secs(10)).await;
    assert_eq!(store.audit_chain_verify().await?.checked, 100);
    assert_eq!(log.append(entry(101)).await, Err(AuditLogError::Closed));
    Ok(())
}

#[tokio::test]
async fn a_full_queue_is_reported_without_waiting() -> anyhow::Result<()> {
    let (store, _dir) = sqlite().await?;
    let (log, writer) = AuditLog::new(store, AuditLogConfig { capacity: 2, max_batch: 8 });
    log.try_append(entry(1))?;
    log.try_append(entry(2))?;
    assert_eq!(log.try_append(entry(3)), Err(AuditLogError::Full));
    drop(writer);
    assert_eq!(log.try_append(entry(3)), Err(AuditLogError::Closed));
    Ok(())
}

/// A store whose first `fail` audit appends fail.
struct Flaky {
    inner: Arc<SqliteMetaStore>,
    fail: AtomicUsize,
}

#[async_trait]
impl MetaStore for Flaky {
    async fn create_key(&self, r: &KeyRecord) -> Result<(), StoreError> {
        self.inner.create_key(r).await
    }
    async fn get_key_by_prefix(&self, p: &KeyPrefix) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.get_key_by_prefix(p).await
    }
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list_keys().await
    }
    async fn revoke_key(&self, p: &KeyPrefix, at: i64) -> Result<bool, StoreError> {
        self.inner.revoke_key(p, at).await
    }
    async fn rotate_key(&self, old: &KeyPrefix, new: &KeyRecord, at: i64) -> Result<(), StoreError> {
        self.inner.rotate_key(old, new, at).await
    }
    async fn touch_last_used(&self, uses: &[(KeyPrefix, i64)]) -> Result<(), StoreError> {
        self.inner.touch_last_used(uses).await
    }
    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>, StoreError> {
        let left = self.fail.load(Ordering::SeqCst);
        if left > 0 {
            self.fail.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Backend("injected".into()));
        }
        self.inner.append_audit(entries).await
    }
    async fn query_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.query_audit(f).await
    }
    async fn audit_chain_verify(&self) -> Result<VerifyReport, StoreError> {
        self.inner.audit_chain_verify().await
    }
    async fn apply_audit_retention(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        self.inner.apply_audit_retention(older_than_ms).await
    }
}

#[tokio::test]
async fn a_failed_batch_is_retried_not_lost() -> anyhow::Result<()> {
    let (inner, _dir) = sqlite().await?;
    let flaky = Arc::new(Flaky { inner: inner.clone(), fail: AtomicUsize::new(3) });
    let (log, writer) = AuditLog::new(flaky.clone(), AuditLogConfig::default());
    let mut sup = supervisor();
    let status = sup.status_handle();
    sup.spawn(writer);
    for i in 1..=10 {
        log.append(entry(i)).await?;
    }
    log.flush().await?;
    assert_eq!(flaky.fail.load(Ordering::SeqCst), 0, "the injected failures happened");
    let report = inner.audit_chain_verify().await?;
    assert_eq!((report.checked, report.first_broken), (10, None));
    let writer_status = status.snapshot().into_iter().find(|s| s.name == "audit-writer").expect("status");
    assert_eq!(writer_status.restarts, 3);
    sup.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
