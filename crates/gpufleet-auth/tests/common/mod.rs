//! Shared setup of the service tests: a SQLite store in a temp dir, the audit writer under a
//! supervisor, and an AuthService over both.

use gpufleet_auth::{
    AuditFilter, AuditLog, AuditLogConfig, AuditRecord, AuthOptions, AuthService, MetaStore, SqliteMetaStore,
};
use gpufleet_runtime::{Shutdown, Supervisor};
use std::{sync::Arc, time::Duration};

pub(crate) struct Harness {
    pub(crate) service: Arc<AuthService>,
    pub(crate) store: Arc<SqliteMetaStore>,
    pub(crate) supervisor: Supervisor,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub(crate) async fn new(options: AuthOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(SqliteMetaStore::open(&dir.path().join("meta.db")).await?);
        Ok(Self::over(store, options, dir))
    }

    /// Another service (a second replica) over the same store.
    pub(crate) fn over(store: Arc<SqliteMetaStore>, options: AuthOptions, dir: tempfile::TempDir) -> Self {
        let (log, writer) = AuditLog::new(store.clone(), AuditLogConfig::default());
        let mut supervisor =
            Supervisor::new(Shutdown::new()).with_backoff(Duration::from_millis(1), Duration::from_millis(5));
        supervisor.spawn(writer);
        let service = Arc::new(AuthService::new(store.clone(), log, options));
        Self { service, store, supervisor, _dir: dir }
    }

    /// Every stored audit record with `action`, oldest first, after flushing the queue.
    pub(crate) async fn audit(&self, action: &str) -> anyhow::Result<Vec<AuditRecord>> {
        self.service.audit_log().flush().await?;
        let filter = AuditFilter { action: Some(action.to_owned()), ..Default::default() };
        let mut records = self.store.query_audit(&filter).await?;
        records.reverse();
        Ok(records)
    }
}
