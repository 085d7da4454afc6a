//! Monthly partitions of `samples`, `rollup_1m` and `rollup_1h`: month arithmetic and names
//! (`samples_2026_11` holds `[2026-11-01, 2026-12-01)` UTC), creation (idempotent, serialised
//! across processes by a transaction-scoped advisory lock), the readiness check, and retention
//! (detach and drop whole months, with their `series_months` rows).

use super::conn::{db_err, ident};
use super::PgStoreConfig;
use crate::{RetentionReport, StoreError, StoreHealth};
use serde::Serialize;
use sqlx::PgPool;
use std::time::Duration;

/// The partitioned tables, in the order every transaction locks them.
pub(crate) const TABLES: [&str; 3] = ["samples", "rollup_1m", "rollup_1h"];
/// 0000-01-01T00:00:00Z: no sample lies before it.
pub(crate) const MIN_TS: i64 = -62_167_219_200_000;
/// 10000-01-01T00:00:00Z: no sample lies at or after it.
pub(crate) const MAX_TS: i64 = 253_402_300_800_000;
/// Month index of 9999-12.
pub(crate) const LAST_MONTH: i32 = 9999 * 12 + 11;
const DAY_MS: i64 = 86_400_000;

/// What [`PostgresStore::maintain_partitions`](super::PostgresStore::maintain_partitions) did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    /// Partitions created by this call (e.g. `samples_2026_11`).
    pub created: Vec<String>,
    /// Partitions that were already there.
    pub existing: Vec<String>,
}

/// `(year, month 1-12)` of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m)
}

/// Month index (`year * 12 + month - 1`) of a timestamp, clamped to years 0000-9999.
pub(crate) fn month_of(ts_ms: i64) -> i32 {
    let (y, m) = civil_month(ts_ms.clamp(MIN_TS, MAX_TS - 1).div_euclid(DAY_MS));
    // Years 0..=9999: the index fits easily.
    (y * 12 + m - 1) as i32
}

/// First millisecond of a month index (months up to `LAST_MONTH + 1`).
pub(crate) fn month_start(month: i32) -> i64 {
    let (y, m) = (month.div_euclid(12), month.rem_euclid(12) + 1);
    gpufleet_core::time::days_from_civil(i64::from(y), m as u32, 1) * DAY_MS
}

/// `YYYY-MM` of a month index.
fn month_label(month: i32) -> String {
    format!(
        "{:04}-{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

/// Name of a table's partition for a month.
pub(crate) fn partition_name(table: &str, month: i32) -> String {
    format!(
        "{table}_{:04}_{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

/// The month of a partition name of `table`, if it is one of ours.
pub(crate) fn parse_month(table: &str, name: &str) -> Option<i32> {
    let rest = name.strip_prefix(table)?.strip_prefix('_')?;
    let (y, m) = rest.split_once('_')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let (y, m): (i32, i32) = (y.parse().ok()?, m.parse().ok()?);
    (1..=12).contains(&m).then_some(y * 12 + m - 1)
}

/// Advisory lock key of partition DDL in one schema (FNV-1a of the schema name).
fn ddl_lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "gpufleet-store/partitions/".bytes().chain(schema.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// `(parent, partition)` names of the attached partitions of our tables.
pub(crate) async fn attached(
    ex: impl sqlx::PgExecutor<'_>,
    schema: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    sqlx::query_as(
        "SELECT p.relname::text, c.relname::text FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
         JOIN pg_namespace n ON n.oid = p.relnamespace \
         WHERE n.nspname = $1 AND p.relname = ANY($2)",
    )
    .bind(schema)
    .bind(TABLES.as_slice())
    .fetch_all(ex)
    .await
    .map_err(db_err)
}

/// Months whose partitions one transaction creates (each takes locks on three new tables and
/// their indexes; `max_locks_per_transaction` is 64 by default).
const MONTHS_PER_TX: usize = 4;

/// Creates the missing partitions of `months` for every table.
pub(crate) async fn ensure(
    pool: &PgPool,
    schema: &str,
    months: &[i32],
) -> Result<PartitionReport, StoreError> {
    let mut report = PartitionReport::default();
    for chunk in months.chunks(MONTHS_PER_TX) {
        ensure_tx(pool, schema, chunk, &mut report).await?;
    }
    Ok(report)
}

/// One transaction of [`ensure`], serialised with every other process by an advisory lock.
async fn ensure_tx(
    pool: &PgPool,
    schema: &str,
    months: &[i32],
    report: &mut PartitionReport,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ddl_lock_key(schema))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    let have: Vec<String> = attached(&mut *tx, schema)
        .await?
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    let mut created = Vec::new();
    for &month in months {
        for table in TABLES {
            let name = partition_name(table, month);
            if have.contains(&name) {
                report.existing.push(name);
                continue;
            }
            // Rollup rows are updated by every write of their bucket: room for HOT updates.
            let with = if table == "samples" {
                ""
            } else {
                " WITH (fillfactor = 50)"
            };
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {s}.{name} PARTITION OF {s}.{table} \
                 FOR VALUES FROM ({from}) TO ({to}){with}",
                s = ident(schema),
                from = month_start(month),
                to = month_start(month + 1),
            );
            sqlx::query(&sql).execute(&mut *tx).await.map_err(db_err)?;
            created.push(name);
        }
    }
    tx.commit().await.map_err(db_err)?;
    for name in &created {
        tracing::info!(partition = %name, schema, "created telemetry partition");
    }
    report.created.extend(created);
    Ok(())
}

/// The readiness check: one round trip that also tells whether the raw partition of the month
/// of `now_ms` is attached.
pub(crate) async fn health(
    pool: &PgPool,
    schema: &str,
    now_ms: i64,
) -> Result<StoreHealth, StoreError> {
    let month = month_of(now_ms);
    let name = partition_name(TABLES[0], month);
    let present: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = to_regclass($1) AND c.relname = $2)",
    )
    .bind(format!("{}.{}", ident(schema), TABLES[0]))
    .bind(&name)
    .fetch_one(pool)
    .await
    .map_err(db_err)?;
    let mut h = StoreHealth::default();
    if !present {
        h.problems.push(format!(
            "telemetry partition {name} for {} is missing; run partition maintenance",
            month_label(month)
        ));
    }
    Ok(h)
}

fn cutoff(now_ms: i64, keep: Option<Duration>) -> Option<i64> {
    keep.map(|d| now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

/// Detaches and drops every partition whose month ends at or before `now − retention` of its
/// table; a dropped raw month takes its `series_months` rows along (in the same transaction).
pub(crate) async fn retention(
    pool: &PgPool,
    cfg: &PgStoreConfig,
    now_ms: i64,
) -> Result<RetentionReport, StoreError> {
    let cuts = [
        cutoff(now_ms, cfg.raw_retention),
        cutoff(now_ms, cfg.rollup_1m_retention),
        cutoff(now_ms, cfg.rollup_1h_retention),
    ];
    let doomed_in = |parts: &[(String, String)]| -> Vec<(usize, String, i32)> {
        let mut out = Vec::new();
        for (parent, child) in parts {
            let Some(t) = TABLES.iter().position(|t| t == parent) else {
                continue;
            };
            let Some(month) = parse_month(parent, child) else {
                continue;
            };
            if cuts[t].is_some_and(|c| month_start(month + 1) <= c) {
                out.push((t, child.clone(), month));
            }
        }
        out.sort();
        out
    };
    if doomed_in(&attached(pool, &cfg.schema).await?).is_empty() {
        return Ok(RetentionReport::default());
    }
    let s = ident(&cfg.schema);
    let mut tx = pool.begin().await.map_err(db_err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ddl_lock_key(&cfg.schema))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    // Writers lock samples, rollup_1m, rollup_1h, series_months in this order; so do we.
    let lock =
        format!("LOCK TABLE {s}.samples, {s}.rollup_1m, {s}.rollup_1h IN ACCESS EXCLUSIVE MODE");
    sqlx::query(&lock).execute(&mut *tx).await.map_err(db_err)?;
    let doomed = doomed_in(&attached(&mut *tx, &cfg.schema).await?);
    let raw_months: Vec<i32> = doomed.iter().filter(|d| d.0 == 0).map(|d| d.2).collect();
    if !raw_months.is_empty() {
        sqlx::query("DELETE FROM series_months WHERE month = ANY($1)")
            .bind(&raw_months)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    let mut report = RetentionReport::default();
    for (t, child, _) in &doomed {
        for sql in [
            format!(
                "ALTER TABLE {s}.{} DETACH PARTITION {s}.{child}",
                TABLES[*t]
            ),
            format!("DROP TABLE {s}.{child}"),
        ] {
            sqlx::query(&sql).execute(&mut *tx).await.map_err(db_err)?;
        }
        match t {
            0 => report.raw_partitions_dropped += 1,
            _ => report.rollup_partitions_dropped += 1,
        }
    }
    tx.commit().await.map_err(db_err)?;
    tracing::info!(
        schema = %cfg.schema,
        raw = report.raw_partitions_dropped,
        rollup = report.rollup_partitions_dropped,
        "telemetry retention dropped partitions"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_round_trip_and_name_partitions() {
        // 2025-07-18T20:00:00Z
        let m = month_of(1_752_868_800_000);
        assert_eq!(m, 2025 * 12 + 6);
        assert_eq!(partition_name("samples", m), "samples_2025_07");
        assert_eq!(month_start(m), 1_751_328_000_000); // 2025-07-01
        assert_eq!(month_start(m + 1), 1_754_006_400_000); // 2025-08-01
        assert_eq!(month_of(month_start(m + 1) - 1), m);
        assert_eq!(month_of(month_start(m + 1)), m + 1);
        assert_eq!(month_of(0), 1970 * 12);
        assert_eq!(month_of(-1), 1969 * 12 + 11);
        assert_eq!(month_of(MIN_TS), 0);
        assert_eq!(month_of(MAX_TS - 1), LAST_MONTH);
        assert_eq!(month_start(LAST_MONTH + 1), MAX_TS);
        assert_eq!(month_start(0), MIN_TS);
        assert_eq!(month_label(2024 * 12 + 1), "2024-02");
    }

    #[test]
    fn partition_names_parse_back() {
        for m in [0, 2025 * 12 + 6, LAST_MONTH] {
            for t in TABLES {
                assert_eq!(parse_month(t, &partition_name(t, m)), Some(m));
            }
        }
        assert_eq!(parse_month("samples", "samples_2025_13"), None);
        assert_eq!(parse_month("samples", "rollup_1m_2025_01"), None);
        assert_eq!(parse_month("rollup_1m", "rollup_1m_2025_1"), None);
        assert_eq!(parse_month("samples", "samples_old"), None);
    }
}
