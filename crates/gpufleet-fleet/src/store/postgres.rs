//! The shared [`FleetStore`] for several replicas: PostgreSQL through `sqlx` (runtime queries
//! only), everything in one schema given by the caller.
//!
//! # Schema and migrations
//! The pattern of `gpufleet-auth`'s `PostgresMetaStore`: [`PostgresFleetStore::connect`] creates
//! the schema when missing (serialized by a transaction-scoped advisory lock on its name) and runs
//! the migrations of `migrations/postgres/` on a one-connection setup pool that is closed
//! afterwards; every connection of the pool has `search_path` set to the schema. The schema
//! belongs to this store alone (sqlx's `_sqlx_migrations` table lives in it).
//!
//! # Batches and partitions
//! A batch of checks is two statements in one transaction, whatever its size: an
//! `INSERT … SELECT FROM UNNEST(arrays)` of the history rows and an `UPDATE … FROM UNNEST(arrays)`
//! of the hosts. Host metrics live in `host_metrics`, a table partitioned by range of `ts_ms`, one
//! partition per month (`host_metrics_YYYY_MM`); partition DDL takes a transaction-scoped advisory
//! lock per schema, so replicas creating the same month at once do not collide. A row for a month
//! without a partition fails the whole write (PostgreSQL's `no partition … found for row`) and is
//! reported as [`FleetError::PartitionMissing`].

use super::rows::{self, CheckTuple, EventTuple, HostTuple, CHECK_COLUMNS, EVENT_COLUMNS, HOST_COLUMNS};
use super::{EventQuery, FleetStore, HistoryQuery, HostFilter, HostOrder};
use crate::error::FleetError;
use crate::metric_row::{MetricRow, MetricSelector, METRICS};
use crate::model::{CheckResult, Host, HostState, StateChange};
use crate::month::{month_of, month_start, months_from, parse_partition, partition_name};
use crate::spec::HostSpec;
use async_trait::async_trait;
use gpufleet_agent::wire::HostMetrics;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use std::{str::FromStr, sync::Arc, time::Duration};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The registry, history, events and host metrics in one PostgreSQL schema.
#[derive(Clone, Debug)]
pub struct PostgresFleetStore {
    pool: PgPool,
    schema: String,
}

impl PostgresFleetStore {
    /// Connects to `url` (`postgres://user@host:port/db`), creates `schema` if missing, applies
    /// pending migrations there, and opens a pool of `max_connections`. `schema` must be a plain
    /// lowercase identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub async fn connect(url: &str, schema: &str, max_connections: u32) -> Result<Self, FleetError> {
        check_schema_name(schema)?;
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| FleetError::Backend(format!("postgres url: {e}")))?
            .options([("search_path", schema)]);
        // A plain connection first fails at once with the real cause (refused, no such database).
        options.connect().await?.close().await?;
        let setup = PgPoolOptions::new().max_connections(1).acquire_timeout(Duration::from_secs(5)).connect_with(options.clone()).await?;
        let migrated = match create_schema(&setup, schema).await {
            Ok(()) => MIGRATOR.run(&setup).await.map_err(|e| FleetError::Backend(format!("migrations: {e}"))),
            Err(e) => Err(e),
        };
        setup.close().await;
        migrated?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self { pool, schema: schema.to_owned() })
    }

    /// The connection pool (maintenance and tests).
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

    /// Drops the schema with everything in it (tests clean up with this).
    pub async fn drop_schema(&self) -> Result<(), FleetError> {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema)).execute(&self.pool).await?;
        Ok(())
    }

    /// Advisory lock key of partition DDL in this schema (FNV-1a of the schema name).
    fn ddl_lock_key(&self) -> i64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in "gpufleet-fleet/partitions/".bytes().chain(self.schema.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h as i64
    }
}

fn check_schema_name(schema: &str) -> Result<(), FleetError> {
    let mut bytes = schema.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if first_ok && rest_ok && schema.len() <= 63 {
        Ok(())
    } else {
        Err(FleetError::invalid("schema", format!("invalid schema name {schema:?}: use [a-z_][a-z0-9_]*, at most 63 bytes")))
    }
}

async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), FleetError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))").bind(format!("gpufleet schema {schema}")).execute(&mut *tx).await?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

fn unique_or(e: sqlx::Error, name: &str) -> FleetError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => FleetError::DuplicateName(name.to_owned()),
        _ => e.into(),
    }
}

#[async_trait]
impl FleetStore for PostgresFleetStore {
    async fn create_host(&self, spec: &HostSpec, now_ms: i64) -> Result<Host, FleetError> {
        let (groups, tags) = rows::spec_json(spec);
        let row: HostTuple = sqlx::query_as(&format!(
            "INSERT INTO hosts (name, address, agent_url, groups_json, tags_json, status, watchdog, state, consecutive_failures, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9) RETURNING {HOST_COLUMNS}"
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
        .fetch_one(&self.pool)
        .await
        .map_err(|e| unique_or(e, &spec.name))?;
        rows::host_from(row)
    }

    async fn get_host(&self, id: i64) -> Result<Option<Host>, FleetError> {
        let row: Option<HostTuple> =
            sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.map(rows::host_from).transpose()
    }

    async fn get_host_by_name(&self, name: &str) -> Result<Option<Host>, FleetError> {
        let row: Option<HostTuple> =
            sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE name = $1")).bind(name).fetch_optional(&self.pool).await?;
        row.map(rows::host_from).transpose()
    }

    async fn update_host(&self, id: i64, spec: &HostSpec, now_ms: i64) -> Result<Host, FleetError> {
        let (groups, tags) = rows::spec_json(spec);
        let row: Option<HostTuple> = sqlx::query_as(&format!(
            "UPDATE hosts SET name = $1, address = $2, agent_url = $3, groups_json = $4, tags_json = $5, status = $6, watchdog = $7, \
             updated_ms = $8 WHERE id = $9 RETURNING {HOST_COLUMNS}"
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM health_checks WHERE host_id = $1").bind(id).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM hosts WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_hosts(&self, filter: &HostFilter) -> Result<Vec<Host>, FleetError> {
        let order = match filter.order {
            HostOrder::Name => "name",
            HostOrder::StaleFirst => "last_check_ms ASC NULLS FIRST, id",
        };
        let rows: Vec<HostTuple> =
            sqlx::query_as(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE ($1::text IS NULL OR status = $1) ORDER BY {order}"))
                .bind(filter.status.map(|s| s.as_str()))
                .fetch_all(&self.pool)
                .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
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
        // Hosts are updated in id order, so concurrent batches cannot deadlock on row locks.
        let mut sorted: Vec<&CheckResult> = checks.iter().collect();
        sorted.sort_by_key(|c| c.host_id);
        let ids: Vec<i64> = sorted.iter().map(|c| c.host_id).collect();
        let ats: Vec<i64> = sorted.iter().map(|c| c.at_ms).collect();
        let states: Vec<&str> = sorted.iter().map(|c| c.state.as_str()).collect();
        let latencies: Vec<f64> = sorted.iter().map(|c| c.latency_ms).collect();
        let errors: Vec<Option<String>> = sorted.iter().map(|c| c.error.clone()).collect();
        let components: Vec<Option<String>> = sorted.iter().map(|c| rows::components_json(c)).collect();
        let failures: Vec<i64> = sorted.iter().map(|c| i64::from(c.consecutive_failures)).collect();
        let seen: Vec<Option<i64>> = sorted.iter().map(|c| c.answered().then_some(c.at_ms)).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO health_checks ({CHECK_COLUMNS}) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::float8[], $5::text[], $6::text[], $7::bigint[])"
        ))
        .bind(&ids)
        .bind(&ats)
        .bind(&states)
        .bind(&latencies)
        .bind(&errors)
        .bind(&components)
        .bind(&failures)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE hosts h SET state = v.state, last_check_ms = v.at, last_seen_ms = COALESCE(v.seen, h.last_seen_ms), \
             consecutive_failures = v.cf \
             FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) AS v(id, state, at, seen, cf) \
             WHERE h.id = v.id",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&ats)
        .bind(&seen)
        .bind(&failures)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn health_history(&self, host_id: i64, query: &HistoryQuery) -> Result<Vec<CheckResult>, FleetError> {
        let rows: Vec<CheckTuple> =
            sqlx::query_as(&format!("SELECT {CHECK_COLUMNS} FROM health_checks WHERE host_id = $1 AND at_ms >= $2 ORDER BY at_ms DESC LIMIT $3"))
                .bind(host_id)
                .bind(query.since_ms.unwrap_or(i64::MIN))
                .bind(rows::limit(query.limit))
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(rows::check_from).collect()
    }

    async fn apply_history_retention(&self, older_than_ms: i64) -> Result<u64, FleetError> {
        let mut tx = self.pool.begin().await?;
        let a = sqlx::query("DELETE FROM health_checks WHERE at_ms < $1").bind(older_than_ms).execute(&mut *tx).await?;
        let b = sqlx::query("DELETE FROM state_events WHERE at_ms < $1").bind(older_than_ms).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(a.rows_affected() + b.rows_affected())
    }

    async fn insert_events(&self, events: &[StateChange]) -> Result<(), FleetError> {
        if events.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&StateChange) -> String| events.iter().map(f).collect::<Vec<String>>();
        sqlx::query(
            "INSERT INTO state_events (host_id, host, at_ms, from_state, to_state, reason) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])",
        )
        .bind(events.iter().map(|e| e.host_id).collect::<Vec<i64>>())
        .bind(col(|e| e.host.clone()))
        .bind(events.iter().map(|e| e.at_ms).collect::<Vec<i64>>())
        .bind(col(|e| e.from.as_str().to_owned()))
        .bind(col(|e| e.to.as_str().to_owned()))
        .bind(col(|e| e.reason.clone()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<StateChange>, FleetError> {
        let rows: Vec<EventTuple> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM state_events WHERE ($1::bigint IS NULL OR host_id = $1) AND at_ms >= $2 \
             ORDER BY at_ms DESC, id DESC LIMIT $3"
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
        let rows: Vec<MetricRow> = samples.iter().map(|(id, m)| MetricRow::new(*id, m.time_ms, m)).collect();
        let placeholders: String = (0..METRICS.len()).map(|i| format!(", ${}::float8[]", i + 3)).collect();
        let columns: String = METRICS.iter().map(|d| format!(", {}", d.name)).collect();
        let sql = format!(
            "INSERT INTO host_metrics (host_id, ts_ms{columns}, mounts) SELECT * FROM UNNEST($1::bigint[], $2::bigint[]{placeholders}, ${}::text[])",
            METRICS.len() + 3
        );
        let mut q = sqlx::query(&sql)
            .bind(rows.iter().map(|r| r.host_id).collect::<Vec<i64>>())
            .bind(rows.iter().map(|r| r.ts_ms).collect::<Vec<i64>>());
        for i in 0..METRICS.len() {
            q = q.bind(rows.iter().map(|r| r.values[i]).collect::<Vec<Option<f64>>>());
        }
        q = q.bind(rows.iter().map(|r| r.mounts.clone()).collect::<Vec<String>>());
        match q.execute(&self.pool).await {
            Ok(_) => Ok(rows.len()),
            Err(sqlx::Error::Database(db)) if db.message().contains("no partition") => {
                // Name the first month that has no partition.
                let existing = self.partitions().await?;
                let missing = rows.iter().map(|r| partition_name(month_of(r.ts_ms))).find(|n| !existing.contains(n));
                Err(FleetError::PartitionMissing(missing.unwrap_or_else(|| db.message().to_owned())))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn host_metrics_range(&self, host_id: i64, metric: &str, start_ms: i64, end_ms: i64) -> Result<Vec<(i64, f64)>, FleetError> {
        let selector = MetricSelector::parse(metric)?;
        if end_ms <= start_ms {
            return Ok(Vec::new());
        }
        match &selector {
            MetricSelector::Column(i) => {
                let col = METRICS[*i].name;
                Ok(sqlx::query_as(&format!(
                    "SELECT ts_ms, {col} FROM host_metrics WHERE host_id = $1 AND ts_ms >= $2 AND ts_ms < $3 AND {col} IS NOT NULL ORDER BY ts_ms"
                ))
                .bind(host_id)
                .bind(start_ms)
                .bind(end_ms)
                .fetch_all(&self.pool)
                .await?)
            }
            sel => {
                let rows: Vec<(i64, String)> =
                    sqlx::query_as("SELECT ts_ms, mounts FROM host_metrics WHERE host_id = $1 AND ts_ms >= $2 AND ts_ms < $3 ORDER BY ts_ms")
                        .bind(host_id)
                        .bind(start_ms)
                        .bind(end_ms)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().filter_map(|(ts, mounts)| sel.from_mounts(&mounts).map(|v| (ts, v))).collect())
            }
        }
    }

    async fn ensure_partitions(&self, now_ms: i64, months_ahead: u32) -> Result<Vec<String>, FleetError> {
        let existing = self.partitions().await?;
        let wanted: Vec<i32> = months_from(now_ms, months_ahead).into_iter().filter(|m| !existing.contains(&partition_name(*m))).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(self.ddl_lock_key()).execute(&mut *tx).await?;
        let mut created = Vec::new();
        for month in wanted {
            let name = partition_name(month);
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)",
            )
            .bind(&self.schema)
            .bind(&name)
            .fetch_one(&mut *tx)
            .await?;
            if !exists {
                sqlx::query(&format!(
                    "CREATE TABLE {name} PARTITION OF host_metrics FOR VALUES FROM ({}) TO ({})",
                    month_start(month),
                    month_start(month + 1)
                ))
                .execute(&mut *tx)
                .await?;
                created.push(name);
            }
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn partitions(&self) -> Result<Vec<String>, FleetError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
             JOIN pg_namespace n ON n.oid = p.relnamespace WHERE n.nspname = $1 AND p.relname = 'host_metrics'",
        )
        .bind(&self.schema)
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(self.ddl_lock_key()).execute(&mut *tx).await?;
        for name in &doomed {
            sqlx::query(&format!("DROP TABLE IF EXISTS {name}")).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(doomed)
    }
}

#[cfg(test)]
mod tests {
    use super::check_schema_name;
    use crate::metric_row::METRICS;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("gpufleet_fleet").is_ok());
        for bad in ["", "1a", "A", "a-b", "a\"b", &"a".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_migration_has_a_column_per_metric_in_order() {
        let sql = include_str!("../../migrations/postgres/0001_fleet.sql");
        let table = &sql[sql.find("CREATE TABLE host_metrics").expect("host_metrics table")..];
        let mut at = 0;
        for d in METRICS {
            let pos = table[at..].find(&format!("    {} ", d.name)).unwrap_or_else(|| panic!("column {} missing or out of order", d.name));
            at += pos + 1;
        }
    }
}
