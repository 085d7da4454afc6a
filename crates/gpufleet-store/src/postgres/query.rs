//! Read paths with the embedded store's semantics: range queries (raw or bucketed, paged with
//! the cursor), fleet aggregates, series and GPU listings, counters.
//!
//! Aggregation happens in SQL over a union of raw points and rollup rows, so every answer is one
//! statement per series (range) or per query (aggregate). Sums are `numeric` sums of the values'
//! shortest decimal forms (`value::text::numeric`), exact and independent of the order in
//! which raw points and rollup rows are merged, and rounded once to `float8`: decimal values
//! give the same sums and averages as the embedded store's exact decimal sums. The last value
//! is `(max(ARRAY[ts::float8, value]))[2]` (timestamps are exact in a float8).
//! - Bucketed range queries whose step is a multiple of 1 h (1 min) read whole buckets from the
//!   1-hour (1-minute) rollups and the partial buckets at the edges from raw points.
//! - Aggregates read hour-aligned stretches from `rollup_1h`, minute-aligned edges from
//!   `rollup_1m` and the rest from raw points, but only from the oldest month all three tables
//!   still hold: rollups outlive raw data and an aggregate covers raw data only.

use super::conn::db_err;
use super::dict::parse_labels;
use super::partition::{self, MAX_TS, MIN_TS, TABLES};
use crate::{
    Agg, AggregateQuery, AggregateRow, Cursor, GpuInfo, RangeQuery, RangeResult, SeriesFilter,
    SeriesPoints, StoreError, StoreStats,
};
use gpufleet_core::{GpuDesc, GpuUuid, HostName, MetricName, SeriesKey};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};

const RES_1M: i64 = 60_000;
const RES_1H: i64 = 3_600_000;

/// One aggregated row: count, sum, min, max, last value.
type AccRow = (i64, f64, f64, f64, f64);

fn value_of(agg: Agg, (count, sum, min, max, last): AccRow) -> f64 {
    match agg {
        Agg::Avg => sum / count as f64,
        Agg::Min => min,
        Agg::Max => max,
        Agg::Last => last,
        Agg::Sum => sum,
        Agg::Count => count as f64,
    }
}

/// The columns an aggregation returns after its group key.
const ACC_COLS: &str =
    "sum(n)::int8, sum(s)::float8, min(mn), max(mx), (max(ARRAY[lt::float8, lv]))[2]";

/// Bucketed points of one series: raw points in `[$2, $3)` and `[$4, $6)`, rollup rows of
/// `table` in `[$3, $4)`, grouped into buckets of `$5` ms (floor division), at most `$7`.
fn buckets_sql(table: &str) -> String {
    format!(
        "SELECT b, {ACC_COLS} FROM (\
           SELECT ts - (CASE WHEN ts % $5 < 0 THEN ts % $5 + $5 ELSE ts % $5 END) AS b, \
                  1::int8 AS n, value::text::numeric AS s, value AS mn, value AS mx, \
                  ts AS lt, value AS lv \
           FROM samples WHERE series_id = $1 AND ((ts >= $2 AND ts < $3) OR (ts >= $4 AND ts < $6)) \
           UNION ALL \
           SELECT bucket - (CASE WHEN bucket % $5 < 0 THEN bucket % $5 + $5 ELSE bucket % $5 END), \
                  count, sum, min, max, last_ts, last \
           FROM {table} WHERE series_id = $1 AND bucket >= $3 AND bucket < $4\
         ) u GROUP BY b ORDER BY b LIMIT $7"
    )
}

/// `t` rounded down / up to a multiple of `step` (None on overflow).
fn floor_to(t: i64, step: i64) -> Option<i64> {
    t.div_euclid(step).checked_mul(step)
}

fn ceil_to(t: i64, step: i64) -> Option<i64> {
    let f = floor_to(t, step)?;
    if f == t {
        Some(f)
    } else {
        f.checked_add(step)
    }
}

fn limit_param(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn raw_points(
    pool: &PgPool,
    series: i32,
    a: i64,
    b: i64,
    limit: usize,
) -> Result<Vec<(i64, f64)>, StoreError> {
    sqlx::query_as(
        "SELECT ts, value FROM samples WHERE series_id = $1 AND ts >= $2 AND ts < $3 \
         ORDER BY ts LIMIT $4",
    )
    .bind(series)
    .bind(a)
    .bind(b)
    .bind(limit_param(limit))
    .fetch_all(pool)
    .await
    .map_err(db_err)
}

#[allow(clippy::too_many_arguments)]
async fn bucket_points(
    pool: &PgPool,
    series: i32,
    a: i64,
    b: i64,
    step: i64,
    agg: Agg,
    limit: usize,
) -> Result<Vec<(i64, f64)>, StoreError> {
    let table = if step % RES_1H == 0 {
        Some("rollup_1h")
    } else if step % RES_1M == 0 {
        Some("rollup_1m")
    } else {
        None
    };
    // Whole buckets inside the range come from rollups, the rest from raw points.
    let (ra, rb) = match (table, ceil_to(a, step), floor_to(b, step)) {
        (Some(_), Some(ra), Some(rb)) if ra < rb => (ra, rb),
        _ => (b, b),
    };
    let rows: Vec<(i64, i64, f64, f64, f64, f64)> =
        sqlx::query_as(&buckets_sql(table.unwrap_or("rollup_1m")))
            .bind(series)
            .bind(a)
            .bind(ra)
            .bind(rb)
            .bind(step)
            .bind(b)
            .bind(limit_param(limit))
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
    Ok(rows
        .into_iter()
        .map(|(t, n, s, mn, mx, lv)| (t, value_of(agg, (n, s, mn, mx, lv))))
        .collect())
}

/// Answers a [`RangeQuery`].
pub(crate) async fn range(pool: &PgPool, q: &RangeQuery) -> Result<RangeResult, StoreError> {
    if q.limit == 0 {
        return Err(StoreError::InvalidQuery("limit must be at least 1".into()));
    }
    if let Some(step) = q.step_ms {
        if step <= 0 {
            return Err(StoreError::InvalidQuery(format!(
                "step must be positive, got {step} ms"
            )));
        }
    }
    let (q_start, q_end) = (q.start_ms.max(MIN_TS), q.end_ms.min(MAX_TS));
    let metrics: Vec<&str> = q.metrics.iter().map(|m| m.as_str()).collect();
    let found: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT s.id, g.host, m.name FROM series s \
         JOIN gpus g ON g.id = s.gpu_id JOIN metrics m ON m.id = s.metric_id \
         WHERE g.uuid = $1 AND ($2::text IS NULL OR g.host = $2) \
           AND (cardinality($3::text[]) = 0 OR m.name = ANY($3)) \
           AND EXISTS (SELECT 1 FROM series_months l WHERE l.series_id = s.id)",
    )
    .bind(q.uuid.as_str())
    .bind(q.host.as_ref().map(|h| h.as_str()))
    .bind(&metrics)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    let mut sel: Vec<(SeriesKey, i32)> = found
        .into_iter()
        .map(|(id, host, metric)| {
            let key = SeriesKey {
                host: HostName::new(host),
                uuid: q.uuid.clone(),
                metric: MetricName::new(metric),
            };
            (key, id)
        })
        .collect();
    sel.sort_by(|a, b| (&a.0.metric, &a.0.host).cmp(&(&b.0.metric, &b.0.host)));

    let mut result = RangeResult::default();
    let mut room = q.limit;
    for (key, id) in sel {
        let mut start = q_start;
        if let Some(c) = &q.cursor {
            if key.metric < c.metric {
                continue;
            }
            if key.metric == c.metric {
                start = start.max(c.ts_ms.saturating_add(q.step_ms.unwrap_or(1)));
            }
        }
        if start >= q_end {
            continue;
        }
        let points = match q.step_ms {
            None => raw_points(pool, id, start, q_end, room).await?,
            Some(step) => bucket_points(pool, id, start, q_end, step, q.agg, room).await?,
        };
        if points.is_empty() {
            continue;
        }
        room -= points.len().min(room);
        if room == 0 {
            let last = points.last().map_or(start, |p| p.0);
            result.next_cursor = Some(Cursor {
                metric: key.metric.clone(),
                ts_ms: last,
            });
            result.series.push(SeriesPoints { key, points });
            break;
        }
        result.series.push(SeriesPoints { key, points });
    }
    Ok(result)
}

/// Boundaries `[m0, h0, h1, m1]` of an aggregate over `[a, b)`: raw points in `[a, m0)` and
/// `[m1, b)`, 1-minute rollups in `[m0, h0)` and `[h1, m1)`, 1-hour rollups in `[h0, h1)`.
/// Rollups are used only from `floor` on (None: not at all).
fn regions(a: i64, b: i64, floor: Option<i64>) -> [i64; 4] {
    let raw_only = [b; 4];
    let Some(f) = floor else { return raw_only };
    let a = a.max(f);
    let (Some(m0), Some(m1)) = (ceil_to(a, RES_1M), floor_to(b, RES_1M)) else {
        return raw_only;
    };
    if m0 >= m1 {
        return raw_only;
    }
    match (ceil_to(m0, RES_1H), floor_to(m1, RES_1H)) {
        (Some(h0), Some(h1)) if h0 < h1 => [m0, h0, h1, m1],
        _ => [m0, m1, m1, m1],
    }
}

/// Start of the oldest month for which every partitioned table still has its partition.
async fn rollup_floor(pool: &PgPool, schema: &str) -> Result<Option<i64>, StoreError> {
    let parts = partition::attached(pool, schema).await?;
    let mut floor = i64::MIN;
    for table in TABLES {
        let oldest = parts
            .iter()
            .filter(|(p, _)| p == table)
            .filter_map(|(_, c)| partition::parse_month(table, c))
            .min();
        match oldest {
            Some(m) => floor = floor.max(partition::month_start(m)),
            None => return Ok(None),
        }
    }
    Ok(Some(floor))
}

const AGGREGATE_SQL: &str = "\
SELECT series_id, sum(n)::int8, sum(s)::float8, min(mn), max(mx), (max(ARRAY[lt::float8, lv]))[2]
FROM (
    SELECT series_id, 1::int8 AS n, value::text::numeric AS s, value AS mn, value AS mx,
           ts AS lt, value AS lv
    FROM samples WHERE series_id = ANY($1) AND ((ts >= $2 AND ts < $3) OR (ts >= $6 AND ts < $7))
    UNION ALL
    SELECT series_id, count, sum, min, max, last_ts, last FROM rollup_1m
    WHERE series_id = ANY($1) AND ((bucket >= $3 AND bucket < $4) OR (bucket >= $5 AND bucket < $6))
    UNION ALL
    SELECT series_id, count, sum, min, max, last_ts, last FROM rollup_1h
    WHERE series_id = ANY($1) AND bucket >= $4 AND bucket < $5
) u GROUP BY series_id";

/// Answers an [`AggregateQuery`].
pub(crate) async fn aggregate(
    pool: &PgPool,
    schema: &str,
    q: &AggregateQuery,
) -> Result<Vec<AggregateRow>, StoreError> {
    let (a, b) = (q.start_ms.max(MIN_TS), q.end_ms.min(MAX_TS));
    if a >= b {
        return Ok(Vec::new());
    }
    let found: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT s.id, g.host, g.uuid FROM series s \
         JOIN gpus g ON g.id = s.gpu_id JOIN metrics m ON m.id = s.metric_id \
         WHERE m.name = $1 AND ($2::text IS NULL OR g.host = $2) \
           AND EXISTS (SELECT 1 FROM series_months l WHERE l.series_id = s.id)",
    )
    .bind(q.metric.as_str())
    .bind(q.host.as_ref().map(|h| h.as_str()))
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i32> = found.iter().map(|f| f.0).collect();
    let [m0, h0, h1, m1] = regions(a, b, rollup_floor(pool, schema).await?);
    let rows: Vec<(i32, i64, f64, f64, f64, f64)> = sqlx::query_as(AGGREGATE_SQL)
        .bind(&ids)
        .bind(a)
        .bind(m0)
        .bind(h0)
        .bind(h1)
        .bind(m1)
        .bind(b)
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    let keys: HashMap<i32, SeriesKey> = found
        .into_iter()
        .map(|(id, host, uuid)| {
            let key = SeriesKey {
                host: HostName::new(host),
                uuid: GpuUuid::new(uuid),
                metric: q.metric.clone(),
            };
            (id, key)
        })
        .collect();
    let mut out: Vec<AggregateRow> = rows
        .into_iter()
        .filter(|r| r.1 > 0)
        .filter_map(|(id, n, s, mn, mx, lv)| {
            Some(AggregateRow {
                key: keys.get(&id)?.clone(),
                value: value_of(q.agg, (n, s, mn, mx, lv)),
                count: u64::try_from(n).unwrap_or(0),
            })
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// `gpus` columns as selected by the listings: host, uuid, idx, device, model, labels.
type DescCols = (String, String, Option<i64>, String, String, String);

fn desc_of((host, uuid, idx, device, model, labels): DescCols) -> Result<GpuDesc, StoreError> {
    let index = idx
        .map(u32::try_from)
        .transpose()
        .map_err(|_| StoreError::Corrupt(format!("postgres: gpu index {idx:?} out of range")))?;
    Ok(GpuDesc {
        host: HostName::new(host),
        uuid: GpuUuid::new(uuid),
        index,
        device,
        model,
        labels: parse_labels(&labels)?,
    })
}

/// [`DescCols`] and the metric name.
type SeriesRow = (String, String, Option<i64>, String, String, String, String);

/// Series with samples matching a filter, sorted by key.
pub(crate) async fn series(
    pool: &PgPool,
    f: &SeriesFilter,
) -> Result<Vec<(SeriesKey, GpuDesc)>, StoreError> {
    let rows: Vec<(DescCols, String)> = sqlx::query_as::<_, SeriesRow>(
        "SELECT g.host, g.uuid, g.idx, g.device, g.model, g.labels, m.name FROM series s \
             JOIN gpus g ON g.id = s.gpu_id JOIN metrics m ON m.id = s.metric_id \
             WHERE ($1::text IS NULL OR g.host = $1) AND ($2::text IS NULL OR g.uuid = $2) \
               AND ($3::text IS NULL OR m.name = $3) \
               AND EXISTS (SELECT 1 FROM series_months l WHERE l.series_id = s.id)",
    )
    .bind(f.host.as_ref().map(|h| h.as_str()))
    .bind(f.uuid.as_ref().map(|u| u.as_str()))
    .bind(f.metric.as_ref().map(|m| m.as_str()))
    .fetch_all(pool)
    .await
    .map_err(db_err)?
    .into_iter()
    .map(|(h, u, i, d, m, l, metric)| ((h, u, i, d, m, l), metric))
    .collect();
    let mut out = Vec::with_capacity(rows.len());
    for (cols, metric) in rows {
        let desc = desc_of(cols)?;
        let key = SeriesKey {
            host: desc.host.clone(),
            uuid: desc.uuid.clone(),
            metric: MetricName::new(metric),
        };
        out.push((key, desc));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

type GpuRow = (
    i32,
    String,
    String,
    Option<i64>,
    String,
    String,
    String,
    String,
    i64,
    i64,
    f64,
    i64,
);

/// Every GPU with samples (only those with `uuid` when given), sorted by (host, uuid).
pub(crate) async fn gpus(
    pool: &PgPool,
    uuid: Option<&GpuUuid>,
) -> Result<Vec<GpuInfo>, StoreError> {
    let rows: Vec<GpuRow> = sqlx::query_as(
        "SELECT g.id, g.host, g.uuid, g.idx, g.device, g.model, g.labels, m.name, \
                a.first_ts, a.last_ts, a.last_value, a.last_ingest_ms \
         FROM (SELECT series_id, min(first_ts) AS first_ts, max(last_ts) AS last_ts, \
                      (max(ARRAY[last_ts::float8, last_value]))[2] AS last_value, \
                      max(last_ingest_ms) AS last_ingest_ms \
               FROM series_months \
               WHERE $1::text IS NULL OR series_id IN \
                   (SELECT s.id FROM series s JOIN gpus g ON g.id = s.gpu_id WHERE g.uuid = $1) \
               GROUP BY series_id) a \
         JOIN series s ON s.id = a.series_id JOIN gpus g ON g.id = s.gpu_id \
         JOIN metrics m ON m.id = s.metric_id",
    )
    .bind(uuid.map(|u| u.as_str()))
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    let mut by_gpu: BTreeMap<i32, GpuInfo> = BTreeMap::new();
    for (id, host, uuid, idx, device, model, labels, metric, first, last, value, ingest) in rows {
        let info = match by_gpu.entry(id) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(GpuInfo {
                desc: desc_of((host, uuid, idx, device, model, labels))?,
                first_seen_ms: i64::MAX,
                last_seen_ms: i64::MIN,
                last_ingest_ms: i64::MIN,
                latest: BTreeMap::new(),
            }),
        };
        info.first_seen_ms = info.first_seen_ms.min(first);
        info.last_seen_ms = info.last_seen_ms.max(last);
        info.last_ingest_ms = info.last_ingest_ms.max(ingest);
        info.latest.insert(MetricName::new(metric), (last, value));
    }
    let mut out: Vec<GpuInfo> = by_gpu.into_values().collect();
    out.sort_by(|a, b| (&a.desc.host, &a.desc.uuid).cmp(&(&b.desc.host, &b.desc.uuid)));
    Ok(out)
}

/// Counters (all but `duplicates`, which the store handle counts).
pub(crate) async fn stats(pool: &PgPool, schema: &str) -> Result<StoreStats, StoreError> {
    let (series, gpus, samples, oldest, newest): (i64, i64, i64, Option<i64>, Option<i64>) =
        sqlx::query_as(
            "SELECT count(*)::int8, count(DISTINCT s.gpu_id)::int8, coalesce(sum(a.n), 0)::int8, \
                    min(a.ft), max(a.lt) \
             FROM (SELECT series_id, sum(samples) AS n, min(first_ts) AS ft, max(last_ts) AS lt \
                   FROM series_months GROUP BY series_id) a \
             JOIN series s ON s.id = a.series_id",
        )
        .fetch_one(pool)
        .await
        .map_err(db_err)?;
    let (partitions, bytes): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE i.inhparent = to_regclass($2))::int8, \
                coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_inherits i ON i.inhrelid = c.oid \
         WHERE n.nspname = $1 AND c.relkind = 'r'",
    )
    .bind(schema)
    .bind(format!("{}.{}", super::conn::ident(schema), TABLES[0]))
    .fetch_one(pool)
    .await
    .map_err(db_err)?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(StoreStats {
        series: n(series),
        gpus: n(gpus),
        samples: n(samples),
        duplicates: 0,
        head_samples: 0,
        bytes_on_disk: n(bytes),
        partitions: n(partitions),
        oldest_ms: oldest,
        newest_ms: newest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_split_a_range_into_raw_minute_and_hour_parts() {
        let h = RES_1H;
        let m = RES_1M;
        // Raw edges, minute edges, whole hours.
        assert_eq!(
            regions(5, 3 * h + 2 * m + 7, Some(0)),
            [m, h, 3 * h, 3 * h + 2 * m]
        );
        // No whole hour: minutes only.
        assert_eq!(regions(5, 30 * m + 1, Some(0)), [m, 30 * m, 30 * m, 30 * m]);
        // No whole minute, or no partitions: raw only.
        assert_eq!(regions(5, m + 1, Some(0)), [m + 1; 4]);
        assert_eq!(regions(5, 3 * h, None), [3 * h; 4]);
        // Rollups only from the floor on.
        assert_eq!(regions(-10 * h, 2 * h, Some(h)), [h, h, 2 * h, 2 * h]);
        // Negative times round like floor division.
        assert_eq!(regions(-h - 5, 0, Some(i64::MIN)), [-h, -h, 0, 0]);
    }

    #[test]
    fn rounding_to_steps_is_floor_division() {
        assert_eq!(floor_to(-1, 1000), Some(-1000));
        assert_eq!(ceil_to(-1, 1000), Some(0));
        assert_eq!(ceil_to(2000, 1000), Some(2000));
        assert_eq!(floor_to(-5, i64::MAX), Some(-i64::MAX));
        assert_eq!(ceil_to(MIN_TS - 1, i64::MAX), Some(0));
    }
}
