//! The embedded [`FleetStore`]: one SQLite file (`fleet.db`, path given by the caller) through
//! `sqlx` (runtime queries only). Versioned migrations in `migrations/sqlite/` run on open; the
//! monthly host metrics tables `host_metrics_YYYY_MM` are created at run time from
//! [`crate::metric_row::METRICS`].
//!
//! # Settings
//! - `journal_mode = WAL`: API reads never block the workers' writes.
//! - `synchronous = NORMAL`: a commit survives a process crash; a power loss may lose the last
//!   commits. Health checks are rewritten every cycle and metrics every minute, so the fsync per
//!   commit of `FULL` would buy little here (keys and audit, in the metadata store, use `FULL`).
//! - `busy_timeout = 5 s`; writes of this process queue on a mutex and take the write lock up
//!   front (`BEGIN IMMEDIATE`).
//!
//! Batches are multi-row statements (500 rows each): one `INSERT` per chunk of history rows and one
//! `UPDATE … FROM (VALUES …)` per chunk of hosts, all in one transaction.

use super::rows::{self, CheckTuple, EventTuple, HostTuple, CHECK_COLUMNS, EVENT_COLUMNS, HOST_COLUMNS};
use super::{EventQuery, FleetStore, HistoryQuery, HostFilter, HostOrder};
use crate::error::FleetError;
use crate::metric_row::{MetricRow, MetricSelector, METRICS};
use crate::model::{CheckResult, Host, HostState, StateChange};
use crate::month::{month_of, month_start, months_from, parse_partition, partition_name};
use crate::spec::HostSpec;
use async_trait::async_trait;
use gpufleet_agent::wire::HostMetrics;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite};
use std::collections::BTreeMap;
use std::{path::Path, sync::Arc, time::Duration};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per multi-row statement (31 binds per metrics row stays far below SQLite's 32,766).
const CHUNK: usize = 500;

/// The registry, history, events and host metrics in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteFleetStore {
    pool: SqlitePool,
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteFleetStore {
    /// Opens (creating if missing) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, FleetError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        MIGRATOR.run(&pool).await.map_err(|e| FleetError::Backend(format!("migrations: {e}")))?;
        Ok(Self { pool, write_lock: Arc::default() })
    }

    /// The connection pool (maintenance and tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn unique_or(e: sqlx::Error, name: &str) -> FleetError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => FleetError::DuplicateName(name.to_owned()),
        _ => e.into(),
    }
}

/// The statements creating one monthly table and its index.
fn metrics_table_ddl(name: &str) -> [String; 2] {
    let cols: String = METRICS.iter().map(|d| format!("{} REAL, ", d.name)).collect();
    [
        format!("CREATE TABLE IF NOT EXISTS {name} (host_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL, {cols}mounts TEXT NOT NULL) STRICT"),
        format!("CREATE INDEX IF NOT EXISTS {name}_host_ts ON {name} (host_id, ts_ms)"),
    ]
}

#[async_trait]
impl FleetStore for SqliteFleetStore {
    async fn create_host(&self, spec: &HostSpec, now_ms: i64) -> Result<Host, FleetError> {
        let (groups, tags) = rows::spec_json(spec);
        let _w = self.write_lock.lock().await;
        let row: HostTuple = sqlx::query_as(&format!(
            "INSERT INTO hosts (name, address, agent_url, groups_json, tags_json, status, watchdog, state, consecutive_failures, created_ms, updated_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?) RETURNING {HOST_COLUMNS}"
        ))
        .bind(&spec.name)
        .bind(&spec.address)
        .bind(&spec.agent_url)
        .bind(groups)
        .bind(tags)
        .bind(spec.status.as_str())
        .bind(spec.watchdog)
        .bind(HostState::Unknown.as_str())
        .bind(now_ms)
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| unique_or(e, &spec.name))?;
        rows::host_from(row)
    }

    async fn get_host(&self, id: i64) -> Result<Option<Host>, FleetError> {
        let row: Option<HostTuple> =
            sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?")).bind(id).fetch_optional(&self.pool).await?;
        row.map(rows::host_from).transpose()
    }

    async fn get_host_by_name(&self, name: &str) -> Result<Option<Host>, FleetError> {
        let row: Option<HostTuple> =
            sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE name = ?")).bind(name).fetch_optional(&self.pool).await?;
        row.map(rows::host_from).transpose()
    }

    async fn update_host(&self, id: i64, spec: &HostSpec, now_ms: i64) -> Result<Host, FleetError> {
        let (groups, tags) = rows::spec_json(spec);
        let _w = self.write_lock.lock().await;
        let row: Option<HostTuple> = sqlx::query_as(&format!(
            "UPDATE hosts SET name = ?, address = ?, agent_url = ?, groups_json = ?, tags_json = ?, status = ?, watchdog = ?, updated_ms = ? \
             WHERE id = ? RETURNING {HOST_COLUMNS}"
        ))
        .bind(&spec.name)
        .bind(&spec.address)
        .bind(&spec.agent_url)
        .bind(groups)
        .bind(tags)
        .bind(spec.status.as_str())
        .bind(spec.watchdog)
        .bind(now_ms)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| unique_or(e, &spec.name))?;
        row.map(rows::host_from).transpose()?.ok_or_else(|| FleetError::NotFound(format!("with id {id}")))
    }

    async fn delete_host(&self, id: i64) -> Result<bool, FleetError> {
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM health_checks WHERE host_id = ?").bind(id).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM hosts WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_hosts(&self, filter: &HostFilter) -> Result<Vec<Host>, FleetError> {
        let order = match filter.order {
            HostOrder::Name => "name",
            HostOrder::StaleFirst => "last_check_ms IS NOT NULL, last_check_ms, id",
        };
        let sql = match filter.status {
            Some(_) => format!("SELECT {HOST_COLUMNS} FROM hosts WHERE status = ? ORDER BY {order}"),
            None => format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY {order}"),
        };
        let mut q = sqlx::query_as::<_, HostTuple>(&sql);
        if let Some(s) = filter.status {
            q = q.bind(s.as_str());
        }
        let mut out = Vec::new();
        for row in q.fetch_all(&self.pool).await? {
            let h = rows::host_from(row)?;
            if filter.keeps(&h) {
                out.push(h);
            }
        }
        Ok(out)
    }

    async fn record_checks(&self, checks: &[CheckResult]) -> Result<(), FleetError> {
        if checks.is_empty() {
            return Ok(());
        }
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in checks.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(format!("INSERT INTO health_checks ({CHECK_COLUMNS}) "));
            q.push_values(chunk, |mut b, c| {
                b.push_bind(c.host_id)
                    .push_bind(c.at_ms)
                    .push_bind(c.state.as_str())
                    .push_bind(c.latency_ms)
                    .push_bind(c.error.clone())
                    .push_bind(rows::components_json(c))
                    .push_bind(i64::from(c.consecutive_failures));
            });
            q.build().execute(&mut *tx).await?;
            let mut u = QueryBuilder::<Sqlite>::new("WITH v(id, state, at, seen, cf) AS (VALUES ");
            for (i, c) in chunk.iter().enumerate() {
                u.push(if i == 0 { "(" } else { ", (" });
                u.push_bind(c.host_id).push(", ").push_bind(c.state.as_str()).push(", ").push_bind(c.at_ms).push(", ");
                u.push_bind(c.answered().then_some(c.at_ms)).push(", ").push_bind(i64::from(c.consecutive_failures)).push(")");
            }
            u.push(
                ") UPDATE hosts SET state = v.state, last_check_ms = v.at, last_seen_ms = COALESCE(v.seen, hosts.last_seen_ms), \
                 consecutive_failures = v.cf FROM v WHERE hosts.id = v.id",
            );
            u.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn health_history(&self, host_id: i64, query: &HistoryQuery) -> Result<Vec<CheckResult>, FleetError> {
        let rows: Vec<CheckTuple> = sqlx::query_as(&format!(
            "SELECT {CHECK_COLUMNS} FROM health_checks WHERE host_id = ? AND at_ms >= ? ORDER BY at_ms DESC, rowid DESC LIMIT ?"
        ))
        .bind(host_id)
        .bind(query.since_ms.unwrap_or(i64::MIN))
        .bind(rows::limit(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(rows::check_from).collect()
    }

    async fn apply_history_retention(&self, older_than_ms: i64) -> Result<u64, FleetError> {
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let a = sqlx::query("DELETE FROM health_checks WHERE at_ms < ?").bind(older_than_ms).execute(&mut *tx).await?;
        let b = sqlx::query("DELETE FROM state_events WHERE at_ms < ?").bind(older_than_ms).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(a.rows_affected() + b.rows_affected())
    }

    async fn insert_events(&self, events: &[StateChange]) -> Result<(), FleetError> {
        if events.is_empty() {
            return Ok(());
        }
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in events.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO state_events (host_id, host, at_ms, from_state, to_state, reason) ");
            q.push_values(chunk, |mut b, e| {
                b.push_bind(e.host_id)
                    .push_bind(e.host.clone())
                    .push_bind(e.at_ms)
                    .push_bind(e.from.as_str())
                    .push_bind(e.to.as_str())
                    .push_bind(e.reason.clone());
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<StateChange>, FleetError> {
        let rows: Vec<EventTuple> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM state_events WHERE (?1 IS NULL OR host_id = ?1) AND at_ms >= ?2 \
             ORDER BY at_ms DESC, id DESC LIMIT ?3"
        ))
        .bind(query.host_id)
        .bind(query.since_ms.unwrap_or(i64::MIN))
        .bind(rows::limit(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(rows::event_from).collect()
    }

    async fn write_host_metrics(&self, samples: &[(i64, Arc<HostMetrics>)]) -> Result<usize, FleetError> {
        if samples.is_empty() {
            return Ok(0);
        }
        let mut by_month: BTreeMap<i32, Vec<MetricRow>> = BTreeMap::new();
        for (host_id, m) in samples {
            by_month.entry(month_of(m.time_ms)).or_default().push(MetricRow::new(*host_id, m.time_ms, m));
        }
        let existing = self.partitions().await?;
        if let Some(missing) = by_month.keys().map(|m| partition_name(*m)).find(|n| !existing.contains(n)) {
            return Err(FleetError::PartitionMissing(missing));
        }
        let columns: String = METRICS.iter().map(|d| format!("{}, ", d.name)).collect();
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (month, rows) in &by_month {
            for chunk in rows.chunks(CHUNK) {
                let mut q = QueryBuilder::<Sqlite>::new(format!("INSERT INTO {} (host_id, ts_ms, {columns}mounts) ", partition_name(*month)));
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(r.host_id).push_bind(r.ts_ms);
                    for v in &r.values {
                        b.push_bind(*v);
                    }
                    b.push_bind(r.mounts.clone());
                });
                q.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(samples.len())
    }

    async fn host_metrics_range(&self, host_id: i64, metric: &str, start_ms: i64, end_ms: i64) -> Result<Vec<(i64, f64)>, FleetError> {
        let selector = MetricSelector::parse(metric)?;
        if end_ms <= start_ms {
            return Ok(Vec::new());
        }
        let (first, last) = (month_of(start_ms), month_of(end_ms - 1));
        let mut out = Vec::new();
        for name in self.partitions().await? {
            let Some(month) = parse_partition(&name) else { continue };
            if month < first || month > last {
                continue;
            }
            match &selector {
                MetricSelector::Column(i) => {
                    let col = METRICS[*i].name;
                    let rows: Vec<(i64, f64)> = sqlx::query_as(&format!(
                        "SELECT ts_ms, {col} FROM {name} WHERE host_id = ? AND ts_ms >= ? AND ts_ms < ? AND {col} IS NOT NULL ORDER BY ts_ms"
                    ))
                    .bind(host_id)
                    .bind(start_ms)
                    .bind(end_ms)
                    .fetch_all(&self.pool)
                    .await?;
                    out.extend(rows);
                }
                sel => {
                    let rows: Vec<(i64, String)> =
                        sqlx::query_as(&format!("SELECT ts_ms, mounts FROM {name} WHERE host_id = ? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms"))
                            .bind(host_id)
                            .bind(start_ms)
                            .bind(end_ms)
                            .fetch_all(&self.pool)
                            .await?;
                    out.extend(rows.into_iter().filter_map(|(ts, mounts)| sel.from_mounts(&mounts).map(|v| (ts, v))));
                }
            }
        }
        Ok(out)
    }

    async fn ensure_partitions(&self, now_ms: i64, months_ahead: u32) -> Result<Vec<String>, FleetError> {
        let existing = self.partitions().await?;
        let wanted: Vec<String> = months_from(now_ms, months_ahead).into_iter().map(partition_name).filter(|n| !existing.contains(n)).collect();
        if wanted.is_empty() {
            return Ok(wanted);
        }
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut created = Vec::new();
        for name in wanted {
            // Another process may have created it since the list was read.
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").bind(&name).fetch_optional(&mut *tx).await?;
            if exists.is_none() {
                for ddl in metrics_table_ddl(&name) {
                    sqlx::query(&ddl).execute(&mut *tx).await?;
                }
                created.push(name);
            }
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn partitions(&self) -> Result<Vec<String>, FleetError> {
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'host\\_metrics\\_%' ESCAPE '\\'")
            .fetch_all(&self.pool)
            .await?;
        let mut parts: Vec<(i32, String)> = names.into_iter().filter_map(|n| parse_partition(&n).map(|m| (m, n))).collect();
        parts.sort();
        Ok(parts.into_iter().map(|(_, n)| n).collect())
    }

    async fn drop_partitions_before(&self, cutoff_ms: i64) -> Result<Vec<String>, FleetError> {
        let doomed: Vec<String> =
            self.partitions().await?.into_iter().filter(|n| parse_partition(n).is_some_and(|m| month_start(m + 1) <= cutoff_ms)).collect();
        if doomed.is_empty() {
            return Ok(doomed);
        }
        let _w = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for name in &doomed {
            sqlx::query(&format!("DROP TABLE IF EXISTS {name}")).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(doomed)
    }
}
