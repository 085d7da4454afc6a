//! [`LeaseStore`] of [`super::PostgresMetaStore`]: one `INSERT … ON CONFLICT DO UPDATE … WHERE`
//! per acquisition. PostgreSQL locks the conflicting row and re-checks the condition on its latest
//! version, so of several replicas racing for a free or expired lease exactly one updates it.

use super::{backend, PostgresMetaStore};
use crate::lease::{expiry_ms, LeaseStore};
use crate::metastore::StoreError;
use async_trait::async_trait;
use std::time::Duration;

#[async_trait]
impl LeaseStore for PostgresMetaStore {
    async fn try_acquire(&self, name: &str, holder: &str, ttl: Duration, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_ms = EXCLUDED.expires_ms \
             WHERE leases.holder = EXCLUDED.holder OR leases.expires_ms <= $4",
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
        let done = sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn holder(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        sqlx::query_as("SELECT holder, expires_ms FROM leases WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(backend)
    }
}
