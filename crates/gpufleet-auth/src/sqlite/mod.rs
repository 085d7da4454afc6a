//! The embedded [`MetaStore`]: one SQLite file through `sqlx` (runtime queries only, no
//! compile-time-checked macros). Versioned migrations in `migrations/sqlite/` run on open.
//!
//! # Durability settings
//! - `journal_mode = WAL`: readers (key lookups on a cache miss, audit queries) never block the
//!   single writer and vice versa.
//! - `synchronous = FULL`: every commit is fsynced before it returns. With WAL, `NORMAL` survives a
//!   process crash but may lose the last commits on power loss — and a lost commit here can be a
//!   *revocation* (silently re-enabling a key) or audit evidence. Writes are rare (key changes) or
//!   batched (audit: one transaction per batch from [`crate::AuditLog`]), so the extra fsync is
//!   paid per batch, not per request.
//! - `busy_timeout = 5 s`: writers from other processes sharing the file wait instead of failing.
//!
//! Audit appends take the write lock up front (`BEGIN IMMEDIATE`), read the last hash and insert
//! in that one transaction, so the chain stays linear even with several processes on one file.
//!
//! # Layout
//! - `keys.rs`: the key queries. `audit.rs`: the chain queries. `lease.rs`: its
//!   [`crate::LeaseStore`].

mod audit;
mod keys;
mod lease;

use crate::audit::{AuditEntry, AuditFilter, AuditRecord, VerifyReport};
use crate::key::KeyPrefix;
use crate::metastore::{MetaStore, StoreError};
use crate::record::KeyRecord;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::{path::Path, time::Duration};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Keys and audit in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteMetaStore {
    pool: SqlitePool,
    /// Serializes this process's audit appends so they queue here instead of spinning on
    /// SQLite's busy handler; other processes are serialized by `BEGIN IMMEDIATE`.
    append_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl SqliteMetaStore {
    /// Opens (creating if missing) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(backend)?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Backend(format!("migrations: {e}")))?;
        Ok(Self { pool, append_lock: Default::default() })
    }

    /// The connection pool, for maintenance and tests (e.g. tampering with a record on purpose).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

#[async_trait]
impl MetaStore for SqliteMetaStore {
    async fn create_key(&self, record: &KeyRecord) -> Result<(), StoreError> {
        keys::create(&self.pool, record).await
    }

    async fn get_key_by_prefix(&self, prefix: &KeyPrefix) -> Result<Option<KeyRecord>, StoreError> {
        keys::get(&self.pool, prefix).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        keys::list(&self.pool).await
    }

    async fn revoke_key(&self, prefix: &KeyPrefix, at_ms: i64) -> Result<bool, StoreError> {
        keys::revoke(&self.pool, prefix, at_ms).await
    }

    async fn rotate_key(&self, old: &KeyPrefix, new: &KeyRecord, at_ms: i64) -> Result<(), StoreError> {
        keys::rotate(&self.pool, old, new, at_ms).await
    }

    async fn touch_last_used(&self, uses: &[(KeyPrefix, i64)]) -> Result<(), StoreError> {
        keys::touch(&self.pool, uses).await
    }

    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = self.append_lock.lock().await;
        audit::append(&self.pool, entries).await
    }

    async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        audit::query(&self.pool, filter).await
    }

    async fn audit_chain_verify(&self) -> Result<VerifyReport, StoreError> {
        audit::verify(&self.pool).await
    }

    async fn apply_audit_retention(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        let _guard = self.append_lock.lock().await;
        audit::retain(&self.pool, older_than_ms).await
    }
}
