//! [`PostgresJobStore`]: the shared [`JobStore`] for several gateway replicas, PostgreSQL through
//! `sqlx` (runtime queries), everything in one schema of the database.
//!
//! [`PostgresJobStore::connect`] creates the schema when missing and sets every connection's
//! `search_path` to it, so the tables and sqlx's `_sqlx_migrations` table live there; the
//! migrations in `migrations/postgres/` run on connect. The schema belongs to this store alone
//! (two migration sets in one `_sqlx_migrations` table refuse to run). Replicas connecting at
//! once do not race: schema creation is serialized by a transaction-scoped advisory lock on the
//! schema name and the migrations by sqlx's database-wide advisory lock, both on a dedicated
//! one-connection setup pool closed afterwards.

use super::store::{JobRecord, JobStatus, JobStore, JobStoreError};
use super::JobId;
use crate::proxy::Endpoint;
use crate::queue::Priority;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Row};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Job records in one PostgreSQL schema.
#[derive(Clone, Debug)]
pub struct PostgresJobStore {
    pool: PgPool,
    schema: String,
}

fn backend(e: sqlx::Error) -> JobStoreError {
    JobStoreError::Backend(e.to_string())
}

impl PostgresJobStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), creates `schema` if
    /// missing and applies pending migrations in it. `schema` must be a plain lowercase
    /// identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub async fn connect(url: &str, schema: &str) -> Result<Self, JobStoreError> {
        check_schema_name(schema)?;
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| JobStoreError::Backend(format!("postgres url: {e}")))?
            .options([("search_path", schema)]);
        // One plain connection first: it fails at once with the real cause (refused, bad
        // password, no such database) where a pool would retry until its timeout.
        options
            .connect()
            .await
            .map_err(backend)?
            .close()
            .await
            .map_err(backend)?;
        // Setup runs on a one-connection pool of its own, closed afterwards (a bare connection's
        // `Acquire` impl makes the migration future not `Send`).
        let setup = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        let migrated = match create_schema(&setup, schema).await {
            Ok(()) => MIGRATOR
                .run(&setup)
                .await
                .map_err(|e| JobStoreError::Backend(format!("migrations: {e}"))),
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
        Ok(Self {
            pool,
            schema: schema.to_owned(),
        })
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
    pub async fn drop_schema(&self) -> Result<(), JobStoreError> {
        sqlx::query(&format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.schema
        ))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }
}

/// Refuses anything but a plain lowercase identifier, so the name can be spliced into DDL and
/// the `search_path` option without quoting rules.
fn check_schema_name(schema: &str) -> Result<(), JobStoreError> {
    let mut bytes = schema.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if first_ok && rest_ok && schema.len() <= 63 {
        Ok(())
    } else {
        Err(JobStoreError::Backend(format!(
            "invalid schema name {schema:?}: use [a-z_][a-z0-9_]*, at most 63 bytes"
        )))
    }
}

/// `CREATE SCHEMA IF NOT EXISTS` alone races (two sessions both insert the name and one fails
/// on the catalog's unique index); the advisory lock makes the second wait and then see it.
async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), JobStoreError> {
    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("gpufleet schema {schema}"))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    tx.commit().await.map_err(backend)
}

fn endpoint(s: &str) -> Option<Endpoint> {
    Some(match s {
        "chat" => Endpoint::Chat,
        "completions" => Endpoint::Completions,
        "embeddings" => Endpoint::Embeddings,
        _ => return None,
    })
}

fn record(row: &PgRow) -> Result<JobRecord, JobStoreError> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(backend);
    let id = text("id")?;
    let corrupt = |what: &str| JobStoreError::Corrupt(format!("job {id}: {what}"));
    Ok(JobRecord {
        id: JobId::parse(&id).ok_or_else(|| corrupt("id"))?,
        status: JobStatus::parse(&text("status")?).ok_or_else(|| corrupt("status"))?,
        model: text("model")?,
        endpoint: endpoint(&text("endpoint")?).ok_or_else(|| corrupt("endpoint"))?,
        priority: text("priority")?
            .parse::<Priority>()
            .map_err(|_| corrupt("priority"))?,
        created_ms: row.try_get("created_ms").map_err(backend)?,
        updated_ms: row.try_get("updated_ms").map_err(backend)?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts").map_err(backend)?)
            .map_err(|_| corrupt("attempts"))?,
        result: row.try_get("result").map_err(backend)?,
        error: row.try_get("error").map_err(backend)?,
        expires_ms: row.try_get("expires_ms").map_err(backend)?,
    })
}

#[async_trait]
impl JobStore for PostgresJobStore {
    async fn upsert(&self, job: &JobRecord) -> Result<(), JobStoreError> {
        sqlx::query(
            "INSERT INTO gateway_jobs
             (id, status, model, endpoint, priority, created_ms, updated_ms, attempts, result, error, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (id) DO UPDATE SET
               status = EXCLUDED.status, model = EXCLUDED.model, endpoint = EXCLUDED.endpoint,
               priority = EXCLUDED.priority, created_ms = EXCLUDED.created_ms,
               updated_ms = EXCLUDED.updated_ms, attempts = EXCLUDED.attempts,
               result = EXCLUDED.result, error = EXCLUDED.error, expires_ms = EXCLUDED.expires_ms",
        )
        .bind(job.id.as_str())
        .bind(job.status.as_str())
        .bind(&job.model)
        .bind(job.endpoint.as_str())
        .bind(job.priority.as_str())
        .bind(job.created_ms)
        .bind(job.updated_ms)
        .bind(i64::from(job.attempts))
        .bind(&job.result)
        .bind(&job.error)
        .bind(job.expires_ms)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn get(&self, id: &JobId, now_ms: i64) -> Result<Option<JobRecord>, JobStoreError> {
        let row = sqlx::query(
            "SELECT * FROM gateway_jobs WHERE id = $1 AND (expires_ms IS NULL OR expires_ms > $2)",
        )
        .bind(id.as_str())
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(record).transpose()
    }

    async fn expire(&self, now_ms: i64) -> Result<u64, JobStoreError> {
        let done = sqlx::query(
            "DELETE FROM gateway_jobs WHERE expires_ms IS NOT NULL AND expires_ms <= $1",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn resolve_dead_letter(
        &self,
        id: &str,
        action: &str,
        now_ms: i64,
    ) -> Result<bool, JobStoreError> {
        let done = sqlx::query(
            "INSERT INTO gateway_dlq_resolved (id, action, at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(action)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn resolved_dead_letters(&self) -> Result<Vec<String>, JobStoreError> {
        sqlx::query_scalar("SELECT id FROM gateway_dlq_resolved ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::check_schema_name;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["gpufleet_jobs", "_x", &"a".repeat(63)] {
            assert!(check_schema_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "Jobs", "a-b", "a\"b", "a;b", &"a".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }
}
