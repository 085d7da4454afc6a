//! [`LeaseStore`] of [`super::SqliteMetaStore`]: one upsert per acquisition (a single statement is
//! atomic in SQLite, also across processes sharing the file).

use super::{backend, SqliteMetaStore};
use crate::lease::{expiry_ms, LeaseStore};
use crate::metastore::StoreError;
use async_trait::async_trait;
use std::time::Duration;

#[async_trait]
impl LeaseStore for SqliteMetaStore {
    async fn try_acquire(&self, name: &str, holder: &str, ttl: Duration, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
             WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?4",
        )
        .bind(name)
        .bind(holder)
        .bind(expiry_ms(ttl, now_ms))
        .bind(now_ms)
        .execute(self.pool())
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM leases WHERE name = ? AND holder = ?")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn holder(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        sqlx::query_as("SELECT holder, expires_ms FROM leases WHERE name = ?")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(backend)
    }
}
