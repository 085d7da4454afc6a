//! The shared [`MetaStore`] for several replicas: PostgreSQL through `sqlx` (runtime queries
//! only, no compile-time-checked macros), everything in one schema of the database.
//!
//! # Schema and migrations
//! [`PostgresMetaStore::connect`] creates the schema when missing and sets every connection's
//! `search_path` to it, so the tables, the append-only trigger and sqlx's `_sqlx_migrations`
//! table all live there; the versioned migrations in `migrations/postgres/` run on connect. The
//! schema belongs to this store alone (give the gateway's job store another one: two migration
//! sets in one `_sqlx_migrations` table refuse to run). Replicas connecting at once do not race:
//! schema creation is serialized by a transaction-scoped advisory lock on the schema name and the
//! migrations by sqlx's database-wide advisory lock, both taken on a dedicated one-connection setup
//! pool that is closed afterwards (a failed migration cannot leave its session lock in the pool).
//!
//! # Audit chain
//! An append locks `audit_log` in `SHARE ROW EXCLUSIVE` mode (it conflicts with itself and with
//! every write, not with reads), then reads the last id and hash and inserts, all in one
//! `READ COMMITTED` transaction: the read after the lock sees every committed append, so the
//! chain stays linear across processes. Retention takes the same lock. A trigger refuses
//! `UPDATE`, `TRUNCATE` and any `DELETE` outside retention, which marks its transaction with
//! `gpufleet.audit_retention = on`.
//!
//! Durability is the server's: a commit returns after PostgreSQL flushed its WAL (with the
//! default `synchronous_commit = on`).
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
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use std::{str::FromStr, time::Duration};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Keys, audit and leases in one PostgreSQL schema.
#[derive(Clone, Debug)]
pub struct PostgresMetaStore {
    pool: PgPool,
    schema: String,
}

impl PostgresMetaStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), creates `schema` if
    /// missing and applies pending migrations in it. `schema` must be a plain lowercase
    /// identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub async fn connect(url: &str, schema: &str) -> Result<Self, StoreError> {
        check_schema_name(schema)?;
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("postgres url: {e}")))?
            .options([("search_path", schema)]);
        // One plain connection first: it fails at once with the real cause (refused, bad
        // password, no such database) where a pool would retry until its timeout.
        options.connect().await.map_err(backend)?.close().await.map_err(backend)?;
        // Setup runs on a one-connection pool of its own, closed afterwards (a bare connection's
        // `Acquire` impl makes the migration future not `Send`).
        let setup = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        let migrated = match create_schema(&setup, schema).await {
            Ok(()) => MIGRATOR.run(&setup).await.map_err(|e| StoreError::Backend(format!("migrations: {e}"))),
            Err(e) => Err(e),
        };
        setup.close().await;
        migrated?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(backend)?;
        Ok(Self { pool, schema: schema.to_owned() })
    }

    /// The connection pool, for maintenance and tests (e.g. tampering with a record on purpose).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Drops the schema with everything in it (tests clean up with this). The store is unusable
    /// afterwards.
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// Refuses anything but a plain lowercase identifier, so the name can be spliced into DDL and
/// the `search_path` option without quoting rules.
fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let mut bytes = schema.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if first_ok && rest_ok && schema.len() <= 63 {
        Ok(())
    } else {
        Err(StoreError::Backend(format!("invalid schema name {schema:?}: use [a-z_][a-z0-9_]*, at most 63 bytes")))
    }
}

/// `CREATE SCHEMA IF NOT EXISTS` alone races (two sessions both insert the name and one fails
/// on the catalog's unique index); the advisory lock makes the second wait and then see it.
async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("gpufleet schema {schema}"))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")).execute(&mut *tx).await.map_err(backend)?;
    tx.commit().await.map_err(backend)
}

pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

#[async_trait]
impl MetaStore for PostgresMetaStore {
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
        audit::append(&self.pool, entries).await
    }

    async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        audit::query(&self.pool, filter).await
    }

    async fn audit_chain_verify(&self) -> Result<VerifyReport, StoreError> {
        audit::verify(&self.pool).await
    }

    async fn apply_audit_retention(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        audit::retain(&self.pool, older_than_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::check_schema_name;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["gpufleet", "_x", "meta_2", &"a".repeat(63)] {
            assert!(check_schema_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "Meta", "a-b", "a\"b", "a b", "ä", &"a".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }
}
