//! [`SqliteAlertStore`]: alerts and silences in one SQLite file (`sqlx`, schema created on open,
//! WAL with `synchronous = NORMAL`). Rows hold the JSON of the alert or silence beside the columns
//! queried, so the format follows the Rust types; resolved alerts beyond the history cap are
//! deleted as new ones arrive.

use super::engine::{Alert, AlertStatus, Change};
use super::silence::Silence;
use super::store::{AlertStore, Loaded, StoreError};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;
use std::path::Path;
use std::time::Duration;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS insight_alerts (
        id TEXT PRIMARY KEY, status TEXT NOT NULL, updated_ms INTEGER NOT NULL, body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS insight_alerts_status ON insight_alerts (status, updated_ms)",
    "CREATE TABLE IF NOT EXISTS insight_silences (id TEXT PRIMARY KEY, ends_ms INTEGER NOT NULL, body TEXT NOT NULL)",
];

/// Alerts and silences in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteAlertStore {
    pool: SqlitePool,
    history_cap: i64,
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(id: &str, body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt { id: id.to_owned(), reason: e.to_string() })
}

fn encode<T: serde::Serialize>(id: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt { id: id.to_owned(), reason: e.to_string() })
}

impl SqliteAlertStore {
    /// Opens (creating if missing) the database at `path`, keeping at most `history_cap` resolved
    /// alerts.
    pub async fn open(path: &Path, history_cap: usize) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(2).connect_with(options).await.map_err(backend)?;
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await.map_err(backend)?;
        }
        Ok(Self { pool, history_cap: i64::try_from(history_cap).unwrap_or(i64::MAX) })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn alerts(&self, sql: &str, limit: i64) -> Result<Vec<Alert>, StoreError> {
        let rows = sqlx::query(sql).bind(limit).fetch_all(&self.pool).await.map_err(backend)?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id").map_err(backend)?;
                decode(&id, &r.try_get::<String, _>("body").map_err(backend)?)
            })
            .collect()
    }
}

#[async_trait]
impl AlertStore for SqliteAlertStore {
    async fn load(&self, now_ms: i64, history: usize) -> Result<Loaded, StoreError> {
        let active = self.alerts("SELECT id, body FROM insight_alerts WHERE status != 'resolved' ORDER BY id LIMIT ?", i64::MAX).await?;
        let history = self.history(history).await?;
        let rows = sqlx::query("SELECT id, body FROM insight_silences WHERE ends_ms > ? ORDER BY id").bind(now_ms).fetch_all(&self.pool).await.map_err(backend)?;
        let silences = rows
            .iter()
            .map(|r| {
                let id: String = r.try_get("id").map_err(backend)?;
                decode(&id, &r.try_get::<String, _>("body").map_err(backend)?)
            })
            .collect::<Result<Vec<Silence>, _>>()?;
        Ok(Loaded { active, silences, history })
    }

    async fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut resolved = false;
        for c in changes {
            match c {
                Change::Remove(id) => {
                    sqlx::query("DELETE FROM insight_alerts WHERE id = ?").bind(id).execute(&mut *tx).await.map_err(backend)?;
                }
                Change::Upsert(a) => {
                    resolved |= a.status == AlertStatus::Resolved;
                    sqlx::query("INSERT OR REPLACE INTO insight_alerts (id, status, updated_ms, body) VALUES (?, ?, ?, ?)")
                        .bind(&a.id)
                        .bind(a.status.as_str())
                        .bind(a.updated_ms)
                        .bind(encode(&a.id, a)?)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                }
            }
        }
        if resolved {
            sqlx::query(
                "DELETE FROM insight_alerts WHERE status = 'resolved' AND id NOT IN
                 (SELECT id FROM insight_alerts WHERE status = 'resolved' ORDER BY updated_ms DESC, id DESC LIMIT ?)",
            )
            .bind(self.history_cap)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn history(&self, limit: usize) -> Result<Vec<Alert>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.alerts("SELECT id, body FROM insight_alerts WHERE status = 'resolved' ORDER BY updated_ms DESC, id DESC LIMIT ?", limit).await
    }

    async fn put_silence(&self, s: &Silence) -> Result<(), StoreError> {
        sqlx::query("INSERT OR REPLACE INTO insight_silences (id, ends_ms, body) VALUES (?, ?, ?)")
            .bind(&s.id)
            .bind(s.ends_ms)
            .bind(encode(&s.id, s)?)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_silence(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM insight_silences WHERE id = ?").bind(id).execute(&self.pool).await.map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }
}
