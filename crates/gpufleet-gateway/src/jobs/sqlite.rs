//! [`SqliteJobStore`]: the embedded [`JobStore`], one SQLite file through `sqlx` (runtime
//! queries, schema created on open). WAL with `synchronous = NORMAL`: a crash of the process
//! loses nothing; a power loss may lose the last status changes, which the broker's redelivery
//! repairs (a job whose completion was lost runs again — at-least-once).

use super::store::{JobRecord, JobStatus, JobStore, JobStoreError};
use super::JobId;
use crate::proxy::Endpoint;
use crate::queue::Priority;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;
use std::path::Path;
use std::time::Duration;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS gateway_jobs (
        id TEXT PRIMARY KEY, status TEXT NOT NULL, model TEXT NOT NULL, endpoint TEXT NOT NULL,
        priority TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL, result TEXT, error TEXT, expires_ms INTEGER)",
    "CREATE INDEX IF NOT EXISTS gateway_jobs_expiry ON gateway_jobs (expires_ms) WHERE expires_ms IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS gateway_dlq_resolved (id TEXT PRIMARY KEY, action TEXT NOT NULL, at_ms INTEGER NOT NULL)",
];

/// Job records in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteJobStore {
    pool: SqlitePool,
}

fn backend(e: sqlx::Error) -> JobStoreError {
    JobStoreError::Backend(e.to_string())
}

impl SqliteJobStore {
    /// Opens (creating if missing) the database at `path`.
    pub async fn open(path: &Path) -> Result<Self, JobStoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(backend)?;
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await.map_err(backend)?;
        }
        Ok(Self { pool })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn endpoint(s: &str) -> Option<Endpoint> {
    Some(match s {
        "chat" => Endpoint::Chat,
        "completions" => Endpoint::Completions,
        "embeddings" => Endpoint::Embeddings,
        _ => return None,
    })
}

fn record(row: &SqliteRow) -> Result<JobRecord, JobStoreError> {
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
        attempts: row
            .try_get::<i64, _>("attempts")
            .map_err(backend)?
            .clamp(0, i64::from(u32::MAX)) as u32,
        result: row.try_get("result").map_err(backend)?,
        error: row.try_get("error").map_err(backend)?,
        expires_ms: row.try_get("expires_ms").map_err(backend)?,
    })
}

#[async_trait]
impl JobStore for SqliteJobStore {
    async fn upsert(&self, job: &JobRecord) -> Result<(), JobStoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO gateway_jobs
             (id, status, model, endpoint, priority, created_ms, updated_ms, attempts, result, error, expires_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "SELECT * FROM gateway_jobs WHERE id = ? AND (expires_ms IS NULL OR expires_ms > ?)",
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
            "DELETE FROM gateway_jobs WHERE expires_ms IS NOT NULL AND expires_ms <= ?",
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
            "INSERT OR IGNORE INTO gateway_dlq_resolved (id, action, at_ms) VALUES (?, ?, ?)",
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
        let rows = sqlx::query("SELECT id FROM gateway_dlq_resolved")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(backend))
            .collect()
    }
}
