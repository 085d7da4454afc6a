//! The write path: validation, partitions for the batch's months, binary `COPY` into the
//! per-connection staging table and the one statement that inserts new samples and folds
//! exactly those (its `RETURNING` rows) into the rollups and `series_months`, then `COMMIT`
//! (see [`write_sql`] for the statement and its fast and safe first steps).

use super::conn::{db_err, is_missing_partition, is_transient, sqlstate};
use super::partition::{self, MAX_TS, MIN_TS};
use super::{dict, PostgresStore};
use crate::{StoreError, WriteReport};
use gpufleet_core::SampleBatch;
use std::collections::BTreeSet;

/// Most distinct months one write may touch: each may need three partitions created, and a
/// batch of scattered timestamps must not create thousands of tables (a collector's batch
/// spans seconds).
const MAX_MONTHS_PER_WRITE: usize = 48;

/// Runs of a transaction that hit a deadlock, a serialization failure or a missing partition.
const ATTEMPTS: usize = 4;

const COPY_SQL: &str =
    "COPY gpufleet_staging (seq, series_id, ts, value) FROM STDIN (FORMAT binary)";

/// The statement of a write, with one of two first steps (`ins`):
/// - [`FAST_INSERT`]: a staged row newer than its series' newest committed sample (from
///   `series_months`) is new without a look at `samples`; only older rows are probed. A plain
///   INSERT (no speculative insertion, a third fewer WAL records); if a concurrent writer
///   stored one of the rows meanwhile it fails with a unique violation and the write is run
///   again with [`SAFE_INSERT`].
/// - [`SAFE_INSERT`]: `ON CONFLICT DO NOTHING`.
///
/// Both insert in key order (concurrent writers lock keys in the same order); the batch holds
/// each key once (the first value of a key in the batch wins, see `write`). Then the inserted rows (`RETURNING`) are folded into the
/// 1-minute rollup, the 1-minute rows into the 1-hour rollup and the hourly rows into
/// `series_months`. `$1`/`$2`: start and index of every month the batch touches (ascending),
/// `$3`: ingest time. Buckets use floor division (`b - ((b % r) + r) % r`), right before 1970.
/// "Last value" is `(max(ARRAY[ts::float8, value]))[2]`: exact (|ts| < 2^53) and much cheaper
/// than an ordered `array_agg` (a sort per group).
macro_rules! write_sql {
    ($ins:literal) => {
        concat!(
            $ins,
            "
, m AS (
    SELECT series_id, ts - ((ts % 60000) + 60000) % 60000 AS bucket, count(*) AS n,
           sum(value::text::numeric) AS s, min(value) AS mn, max(value) AS mx,
           min(ts) AS ft, max(ts) AS lt, (max(ARRAY[ts::float8, value]))[2] AS lv
    FROM ins GROUP BY 1, 2
), w1m AS (
    INSERT INTO rollup_1m AS r (series_id, bucket, count, sum, min, max, last_ts, last)
    SELECT series_id, bucket, n, s, mn, mx, lt, lv FROM m ORDER BY series_id, bucket
    ON CONFLICT (series_id, bucket) DO UPDATE SET
        count = r.count + excluded.count, sum = r.sum + excluded.sum,
        min = least(r.min, excluded.min), max = greatest(r.max, excluded.max),
        last = CASE WHEN excluded.last_ts > r.last_ts THEN excluded.last ELSE r.last END,
        last_ts = greatest(r.last_ts, excluded.last_ts)
), h AS (
    SELECT series_id, bucket - ((bucket % 3600000) + 3600000) % 3600000 AS bucket,
           sum(n)::int8 AS n, sum(s) AS s, min(mn) AS mn, max(mx) AS mx, min(ft) AS ft,
           max(lt) AS lt, (max(ARRAY[lt::float8, lv]))[2] AS lv
    FROM m GROUP BY 1, 2
), w1h AS (
    INSERT INTO rollup_1h AS r (series_id, bucket, count, sum, min, max, last_ts, last)
    SELECT series_id, bucket, n, s, mn, mx, lt, lv FROM h ORDER BY series_id, bucket
    ON CONFLICT (series_id, bucket) DO UPDATE SET
        count = r.count + excluded.count, sum = r.sum + excluded.sum,
        min = least(r.min, excluded.min), max = greatest(r.max, excluded.max),
        last = CASE WHEN excluded.last_ts > r.last_ts THEN excluded.last ELSE r.last END,
        last_ts = greatest(r.last_ts, excluded.last_ts)
), mo AS (
    SELECT series_id, ($2::int4[])[width_bucket(bucket, $1::int8[])] AS month,
           sum(n)::int8 AS n, min(ft) AS ft, max(lt) AS lt,
           (max(ARRAY[lt::float8, lv]))[2] AS lv
    FROM h GROUP BY 1, 2
), wl AS (
    INSERT INTO series_months AS l
        (series_id, month, samples, first_ts, last_ts, last_value, last_ingest_ms)
    SELECT series_id, month, n, ft, lt, lv, $3 FROM mo ORDER BY series_id, month
    ON CONFLICT (series_id, month) DO UPDATE SET
        samples = l.samples + excluded.samples, first_ts = least(l.first_ts, excluded.first_ts),
        last_value = CASE WHEN excluded.last_ts > l.last_ts
                          THEN excluded.last_value ELSE l.last_value END,
        last_ts = greatest(l.last_ts, excluded.last_ts),
        last_ingest_ms = greatest(l.last_ingest_ms, excluded.last_ingest_ms)
)
SELECT count(*) FROM ins"
        )
    };
}

/// See [`write_sql`].
const FAST_INSERT: &str = write_sql!(
    "\
WITH known AS (
    SELECT series_id, max(last_ts) AS last_ts FROM series_months
    WHERE series_id IN (SELECT series_id FROM gpufleet_staging) GROUP BY series_id
), ins AS (
    INSERT INTO samples (series_id, ts, value)
    SELECT st.series_id, st.ts, st.value FROM gpufleet_staging st LEFT JOIN known k ON k.series_id = st.series_id
    WHERE k.last_ts IS NULL OR st.ts > k.last_ts
       OR NOT EXISTS (SELECT 1 FROM samples p WHERE p.series_id = st.series_id AND p.ts = st.ts)
    ORDER BY st.series_id, st.ts, st.seq
    RETURNING series_id, ts, value
)"
);

/// See [`write_sql`].
const SAFE_INSERT: &str = write_sql!(
    "\
WITH ins AS (
    INSERT INTO samples (series_id, ts, value)
    SELECT series_id, ts, value FROM gpufleet_staging ORDER BY series_id, ts, seq
    ON CONFLICT DO NOTHING
    RETURNING series_id, ts, value
)"
);

/// The binary `COPY` stream of `(seq, series_id, ts, value)` rows.
struct CopyBuf(Vec<u8>);

impl CopyBuf {
    fn with_rows(n: usize) -> Self {
        let mut b = Vec::with_capacity(19 + n * 42 + 2);
        b.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        b.extend_from_slice(&0i32.to_be_bytes()); // flags
        b.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        CopyBuf(b)
    }

    fn row(&mut self, seq: i32, series: i32, ts: i64, value: f64) {
        let b = &mut self.0;
        b.extend_from_slice(&4i16.to_be_bytes());
        b.extend_from_slice(&4i32.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&4i32.to_be_bytes());
        b.extend_from_slice(&series.to_be_bytes());
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&value.to_bits().to_be_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&(-1i16).to_be_bytes());
        self.0
    }
}

fn invalid(msg: String) -> StoreError {
    StoreError::InvalidQuery(format!("invalid batch: {msg}"))
}

/// Stores a batch; see the module doc.
pub(crate) async fn write(
    store: &PostgresStore,
    batch: &SampleBatch,
    ingest_ms: i64,
) -> Result<WriteReport, StoreError> {
    batch.validate().map_err(invalid)?;
    if let Some(p) = batch
        .points
        .iter()
        .find(|p| p.ts_ms < MIN_TS || p.ts_ms >= MAX_TS)
    {
        return Err(invalid(format!(
            "timestamp {} ms is outside years 0000-9999",
            p.ts_ms
        )));
    }
    if batch.points.is_empty() {
        return Ok(WriteReport::default());
    }
    let total = batch.points.len() as u64;
    let Ok(_) = i32::try_from(batch.points.len()) else {
        return Err(invalid(format!(
            "{total} points is more than one write takes"
        )));
    };
    let slots = dict::resolve(store, batch).await?;
    let n_metrics = batch.metrics.len();
    let mut rows: Vec<(i32, i64, i32, f64)> = batch
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let sid = slots[p.gpu as usize * n_metrics + p.metric as usize];
            (sid, p.ts_ms, i as i32, p.value)
        })
        .collect();
    // Already in the order the insert wants: the server's sort then finds it sorted. A key
    // repeated within the batch keeps its first value (lowest seq); the rest are duplicates.
    rows.sort_unstable_by_key(|r| (r.0, r.1, r.2));
    rows.dedup_by_key(|r| (r.0, r.1));
    let months: BTreeSet<i32> = months_of(rows.iter().map(|r| r.1));
    if months.len() > MAX_MONTHS_PER_WRITE {
        return Err(invalid(format!(
            "timestamps span {} months; one write takes at most {MAX_MONTHS_PER_WRITE}",
            months.len()
        )));
    }
    let starts: Vec<i64> = months.iter().map(|m| partition::month_start(*m)).collect();
    let month_ids: Vec<i32> = months.iter().copied().collect();
    let mut copy = CopyBuf::with_rows(rows.len());
    for (sid, ts, seq, v) in &rows {
        copy.row(*seq, *sid, *ts, *v);
    }
    let copy = copy.finish();

    ensure_months(store, &month_ids, false).await?;
    let mut attempt = 0;
    let mut sql = FAST_INSERT;
    let inserted = loop {
        attempt += 1;
        match insert(store, sql, &copy, &starts, &month_ids, ingest_ms).await {
            Ok(n) => break n,
            Err(e) if attempt < ATTEMPTS && is_unique_violation(&e) => {
                // A concurrent writer stored some of these samples after our snapshot.
                tracing::debug!(error = %e, "telemetry write raced another writer; using ON CONFLICT");
                sql = SAFE_INSERT;
            }
            Err(e) if attempt < ATTEMPTS && is_missing_partition(&e) => {
                // Dropped behind our cache's back (or by retention elsewhere): create it again.
                tracing::warn!(error = %e, "telemetry partition missing during write; creating it");
                ensure_months(store, &month_ids, true).await?;
            }
            Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                tracing::debug!(error = %e, attempt, "telemetry write conflicted; retrying");
            }
            Err(e) => return Err(db_err(e)),
        }
    };
    let inserted = u64::try_from(inserted).unwrap_or(0).min(total);
    Ok(WriteReport {
        inserted,
        duplicates: total - inserted,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    sqlstate(e).as_deref() == Some("23505")
}

/// The distinct months of timestamps (usually one: checked by its bounds first).
fn months_of(ts: impl Iterator<Item = i64> + Clone) -> BTreeSet<i32> {
    let (lo, hi) = ts
        .clone()
        .fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let (a, b) = (partition::month_of(lo), partition::month_of(hi));
    if a == b {
        return BTreeSet::from([a]);
    }
    ts.map(partition::month_of).collect()
}

/// Creates the partitions of `months` not known to exist (all of them with `recheck`).
async fn ensure_months(
    store: &PostgresStore,
    months: &[i32],
    recheck: bool,
) -> Result<(), StoreError> {
    let todo: Vec<i32> = {
        let known = store.months.lock();
        months
            .iter()
            .copied()
            .filter(|m| recheck || !known.contains(m))
            .collect()
    };
    if todo.is_empty() {
        return Ok(());
    }
    partition::ensure(&store.pool, &store.cfg.schema, &todo).await?;
    store.months.lock().extend(todo);
    Ok(())
}

/// One transaction: COPY, insert with rollups, COMMIT. Returns the rows inserted.
async fn insert(
    store: &PostgresStore,
    sql: &str,
    copy: &[u8],
    starts: &[i64],
    months: &[i32],
    ingest_ms: i64,
) -> Result<i64, sqlx::Error> {
    let mut tx = store.pool.begin().await?;
    let mut c = tx.copy_in_raw(COPY_SQL).await?;
    c.send(copy).await?;
    c.finish().await?;
    let n: i64 = sqlx::query_scalar(sql)
        .bind(starts)
        .bind(months)
        .bind(ingest_ms)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_are_42_bytes_after_the_header() {
        let mut c = CopyBuf::with_rows(2);
        c.row(0, 7, 1_752_868_800_000, 0.25);
        c.row(1, 7, -5, f64::NAN);
        let b = c.finish();
        assert_eq!(b.len(), 19 + 2 * 42 + 2);
        assert_eq!(&b[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(&b[19..21], &4i16.to_be_bytes());
        assert_eq!(&b[b.len() - 2..], &(-1i16).to_be_bytes());
    }

    #[test]
    fn months_of_spans() {
        let jul = 1_752_868_800_000; // 2025-07-18
        let aug = jul + 20 * 86_400_000;
        assert_eq!(months_of([jul, jul + 1].into_iter()).len(), 1);
        assert_eq!(
            months_of([aug, jul, jul + 5].into_iter()),
            BTreeSet::from([2025 * 12 + 6, 2025 * 12 + 7])
        );
    }
}
