//! PostgreSQL store behaviour beyond the conformance suite: monthly partitions (placement,
//! maintenance, health, retention), rollups equal to raw aggregates, concurrent start-up and
//! writers, exact duplicate counting, and redacted connection errors. Needs a running server.

mod postgres_common;

use gpufleet_store::{
    testsuite::{batch, raw_query, T0},
    Agg, AggregateQuery, MetricStore, PgStoreConfig, PostgresStore, StoreError,
};
use postgres_common::{connect, raw_conn, Schemas};
use sqlx::PgConnection;
use std::{collections::BTreeMap, time::Duration};

const DAY: i64 = 86_400_000;
/// 2025-08-05T20:00:00Z, in the month after T0's.
const T_AUG: i64 = T0 + 18 * DAY;

async fn count(c: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Attached partitions of `table` in `schema`, by name.
async fn partitions(c: &mut PgConnection, schema: &str, table: &str) -> Vec<String> {
    let mut v: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = to_regclass($1)",
    )
    .bind(format!("\"{schema}\".{table}"))
    .fetch_all(c)
    .await
    .expect("partitions");
    v.sort();
    v
}

#[tokio::test]
async fn writes_in_two_months_land_in_two_partitions() {
    let schemas = Schemas::default();
    let store = schemas.store("months").await;
    let s = store.schema().to_string();
    let rows: Vec<_> = (0..5)
        .flat_map(|i| {
            [
                ("h", "GPU-a", "M", T0 + i * 1000, i as f64),
                ("h", "GPU-a", "M", T_AUG + i * 1000, i as f64),
                ("h", "GPU-a", "M", T_AUG + DAY + i * 1000, i as f64),
            ]
        })
        .collect();
    let r = store.write(&batch(&rows), T0).await.expect("write");
    assert_eq!((r.inserted, r.duplicates), (15, 0));
    let mut c = raw_conn().await;
    for table in ["samples", "rollup_1m", "rollup_1h"] {
        let parts = partitions(&mut c, &s, table).await;
        for month in ["2025_07", "2025_08"] {
            assert!(
                parts.contains(&format!("{table}_{month}")),
                "{table}: {parts:?}"
            );
        }
    }
    let jul = count(
        &mut c,
        &format!("SELECT count(*) FROM \"{s}\".samples_2025_07"),
    )
    .await;
    let aug = count(
        &mut c,
        &format!("SELECT count(*) FROM \"{s}\".samples_2025_08"),
    )
    .await;
    assert_eq!((jul, aug), (5, 10));
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.samples, 15);
    assert!(stats.partitions >= 2, "{stats:?}");
    assert!(stats.bytes_on_disk > 0);
}

#[tokio::test]
async fn maintain_partitions_creates_months_ahead_and_is_idempotent() {
    let schemas = Schemas::default();
    let mut cfg = schemas.config("maint");
    cfg.months_ahead = 5;
    let store = connect(cfg).await;
    let s = store.schema().to_string();
    // 2031-12-15: the months ahead cross a year (and take two DDL transactions).
    let now = 1_953_849_600_000 + 14 * DAY;
    let months = [
        "2031_12", "2032_01", "2032_02", "2032_03", "2032_04", "2032_05",
    ];
    let first = store.maintain_partitions(now).await.expect("maintain");
    let mut want: Vec<String> = ["samples", "rollup_1m", "rollup_1h"]
        .iter()
        .flat_map(|t| months.map(|m| format!("{t}_{m}")))
        .collect();
    want.sort();
    let mut created = first.created.clone();
    created.sort();
    assert_eq!(created, want);
    assert!(first.existing.is_empty());
    let again = store.maintain_partitions(now).await.expect("maintain");
    assert!(again.created.is_empty());
    assert_eq!(again.existing.len(), 18);
    let mut c = raw_conn().await;
    let raw = partitions(&mut c, &s, "samples").await;
    for m in months {
        assert!(raw.contains(&format!("samples_{m}")), "{raw:?}");
    }
    assert!(!raw.contains(&"samples_2032_06".to_string()));
    // A later month only adds what is new.
    let next = store
        .maintain_partitions(now + 31 * DAY)
        .await
        .expect("maintain");
    assert_eq!(next.created.len(), 3, "{next:?}");
    assert!(next.created.contains(&"samples_2032_06".to_string()));
}

#[tokio::test]
async fn a_batch_scattered_over_too_many_months_is_refused_whole() {
    let schemas = Schemas::default();
    let store = schemas.store("scatter").await;
    let rows: Vec<_> = (0..49)
        .map(|i| ("h", "GPU-a", "M", T0 + i * 31 * DAY, 1.0))
        .collect();
    let err = store.write(&batch(&rows), T0).await.expect_err("49 months");
    assert!(matches!(err, StoreError::InvalidQuery(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(store.stats().await.expect("stats").samples, 0);
    let r = store
        .write(&batch(&rows[..48]), T0)
        .await
        .expect("48 months");
    assert_eq!(r.inserted, 48);
}

#[tokio::test]
async fn dropped_current_partition_shows_in_health_and_write_recreates_it() {
    let schemas = Schemas::default();
    let store = schemas.store("health").await;
    let s = store.schema().to_string();
    let now = gpufleet_core::time::now_ms();
    assert!(store.health(now).await.expect("health").is_ok());
    let mut c = raw_conn().await;
    let current = partitions(&mut c, &s, "samples")
        .await
        .into_iter()
        .min()
        .expect("connect created the current month's partition");
    sqlx::query(&format!("DROP TABLE \"{s}\".{current}"))
        .execute(&mut c)
        .await
        .expect("drop partition");
    let h = store.health(now).await.expect("health");
    assert!(!h.is_ok());
    assert_eq!(h.problems.len(), 1, "{h:?}");
    assert!(
        h.problems[0].contains(&current) && h.problems[0].contains("missing"),
        "{h:?}"
    );
    // The store's cache still believes in the partition: the write must notice and recreate it.
    let r = store
        .write(&batch(&[("h", "GPU-a", "M", now, 1.0)]), now)
        .await
        .expect("write into a dropped month");
    assert_eq!(r.inserted, 1);
    assert!(store.health(now).await.expect("health").is_ok());
    assert_eq!(
        store.stats().await.expect("stats").samples,
        1,
        "nothing lost"
    );
}

#[tokio::test]
async fn retention_drops_old_months_and_keeps_the_rest() {
    let schemas = Schemas::default();
    let cfg = PgStoreConfig {
        raw_retention: Some(Duration::from_secs(30 * 86_400)),
        rollup_1m_retention: Some(Duration::from_secs(90 * 86_400)),
        rollup_1h_retention: Some(Duration::from_secs(730 * 86_400)),
        ..schemas.config("retention")
    };
    let store = connect(cfg).await;
    let s = store.schema().to_string();
    // 2015-02-10, 2015-04-10 and 2015-06-10 (20:00Z); "now" is 2015-06-15, long before the
    // real months whose partitions connect created (those must survive).
    let feb = 1_423_598_400_000;
    let apr = feb + 59 * DAY;
    let jun = apr + 61 * DAY;
    let now = jun + 5 * DAY;
    let rows: Vec<_> = [feb, apr, jun]
        .iter()
        .flat_map(|t| (0..120).map(move |i| ("h", "GPU-a", "M", t + i * 1000, 1.0 + i as f64)))
        .collect();
    store.write(&batch(&rows), now).await.expect("write");
    let r = store.apply_retention(now).await.expect("retention");
    // Raw: February and April end before now − 30 d; 1-minute rollups: February only.
    assert_eq!(
        (r.raw_partitions_dropped, r.rollup_partitions_dropped),
        (2, 1)
    );
    let mut c = raw_conn().await;
    let raw = partitions(&mut c, &s, "samples").await;
    assert!(raw.contains(&"samples_2015_06".to_string()), "{raw:?}");
    assert!(!raw
        .iter()
        .any(|p| p == "samples_2015_02" || p == "samples_2015_04"));
    let r1m = partitions(&mut c, &s, "rollup_1m").await;
    assert!(
        r1m.contains(&"rollup_1m_2015_04".to_string())
            && !r1m.contains(&"rollup_1m_2015_02".to_string())
    );
    assert_eq!(
        partitions(&mut c, &s, "rollup_1h").await.len(),
        raw.len() + 2
    );
    let st = store.stats().await.expect("stats");
    assert_eq!((st.samples, st.oldest_ms), (120, Some(jun)));
    assert_eq!(store.gpus().await.expect("gpus")[0].first_seen_ms, jun);
    let q = raw_query("GPU-a", &["M"], feb - DAY, jun + DAY);
    let got = store.query_range(&q).await.expect("query");
    assert_eq!(got.series[0].points.len(), 120);
    assert_eq!(got.series[0].points[0].0, jun);
    // April's hourly rollup outlives its raw data; an aggregate covers raw data only.
    let mut hourly = raw_query("GPU-a", &["M"], apr - DAY, apr + DAY);
    hourly.step_ms = Some(3_600_000);
    hourly.agg = Agg::Count;
    let got = store.query_range(&hourly).await.expect("query");
    assert_eq!(got.series[0].points, vec![(apr, 120.0)]);
    let agg = store
        .aggregate(&AggregateQuery {
            metric: "M".into(),
            host: None,
            start_ms: feb - DAY,
            end_ms: now,
            agg: Agg::Count,
        })
        .await
        .expect("aggregate");
    assert_eq!(agg[0].count, 120);
    let again = store.apply_retention(now).await.expect("retention");
    assert_eq!(
        (
            again.raw_partitions_dropped,
            again.rollup_partitions_dropped
        ),
        (0, 0)
    );
}

/// Values with three decimals (not binary fractions), so an inexact sum would show.
fn value(i: i64, series: i64) -> f64 {
    ((i * 7_919 + series * 104_729) % 100_000) as f64 / 1000.0
}

/// `(count, mantissa sum in thousandths, min, max, last)` per `step` bucket of `[a, b)`.
type Ref = BTreeMap<i64, (u64, i64, f64, f64, f64)>;

fn reference(points: &[(i64, f64)], a: i64, b: i64, step: i64) -> Ref {
    let mut out: Ref = BTreeMap::new();
    for &(t, v) in points.iter().filter(|p| p.0 >= a && p.0 < b) {
        let e = out.entry(t.div_euclid(step) * step).or_insert((
            0,
            0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ));
        e.0 += 1;
        e.1 += (v * 1000.0).round() as i64;
        e.2 = e.2.min(v);
        e.3 = e.3.max(v);
        e.4 = v; // points are time-ordered
    }
    out
}

fn pick(agg: Agg, (n, m, min, max, last): (u64, i64, f64, f64, f64)) -> f64 {
    let sum = m as f64 / 1000.0;
    match agg {
        Agg::Avg => sum / n as f64,
        Agg::Min => min,
        Agg::Max => max,
        Agg::Last => last,
        Agg::Sum => sum,
        Agg::Count => n as f64,
    }
}

const AGGS: [Agg; 6] = [
    Agg::Avg,
    Agg::Min,
    Agg::Max,
    Agg::Last,
    Agg::Sum,
    Agg::Count,
];

#[tokio::test]
async fn rollup_answers_equal_raw_aggregates() {
    let schemas = Schemas::default();
    let store = schemas.store("rollups").await;
    let s = store.schema().to_string();
    // 3 hours of 5 s samples for two GPUs, written out of order in three batches, each batch
    // twice: duplicates must not reach the rollups.
    let n = 3 * 720;
    let mut rows = Vec::new();
    for (g, uuid) in ["GPU-a", "GPU-b"].iter().enumerate() {
        for i in 0..n {
            rows.push(("h", *uuid, "U", T0 + i * 5_000 + 3, value(i, g as i64)));
        }
    }
    for part in [&rows[1000..3000], &rows[3000..], &rows[..1000]] {
        for _ in 0..2 {
            store.write(&batch(part), T0).await.expect("write");
        }
    }
    let mut c = raw_conn().await;
    let (buckets, counted): (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*), sum(count)::int8 FROM \"{s}\".rollup_1m"
    ))
    .fetch_one(&mut c)
    .await
    .expect("rollup rows");
    assert_eq!((buckets, counted), (2 * 180, 2 * n));
    let hours: i64 = sqlx::query_scalar(&format!("SELECT sum(count)::int8 FROM \"{s}\".rollup_1h"))
        .fetch_one(&mut c)
        .await
        .expect("rollup rows");
    assert_eq!(hours, 2 * n);

    for (g, uuid) in ["GPU-a", "GPU-b"].iter().enumerate() {
        let raw = store
            .query_range(&raw_query(uuid, &["U"], T0, T0 + 4 * 3_600_000))
            .await
            .expect("raw");
        let points = &raw.series[0].points;
        assert_eq!(points.len() as i64, n);
        assert!(points
            .iter()
            .enumerate()
            .all(|(i, p)| p.1 == value(i as i64, g as i64)));
        // Unaligned ends: partial edge buckets from raw points, whole ones from rollups.
        for (a, b, step) in [
            (T0 + 17_000, T0 + 3 * 3_600_000 - 29_000, 60_000),
            (T0 - 3_600_000, T0 + 2 * 3_600_000 + 1, 3_600_000),
            (T0 + 61_000, T0 + 7_000_000, 300_000),
        ] {
            let want = reference(points, a, b, step);
            for agg in AGGS {
                let mut q = raw_query(uuid, &["U"], a, b);
                q.step_ms = Some(step);
                q.agg = agg;
                let got = store.query_range(&q).await.expect("buckets");
                let want: Vec<(i64, f64)> = want.iter().map(|(t, r)| (*t, pick(agg, *r))).collect();
                assert_eq!(
                    got.series[0].points, want,
                    "{uuid} {agg:?} step {step} from {a}"
                );
            }
        }
        // Aggregates over hours, minutes and raw edges at once.
        let (a, b) = (T0 + 1_234, T0 + 2 * 3_600_000 + 150_001);
        let whole = reference(points, a, b, 1 << 50);
        let whole = *whole.values().next().expect("points in range");
        for agg in AGGS {
            let rows = store
                .aggregate(&AggregateQuery {
                    metric: "U".into(),
                    host: None,
                    start_ms: a,
                    end_ms: b,
                    agg,
                })
                .await
                .expect("aggregate");
            let row = rows
                .iter()
                .find(|r| r.key.uuid.as_str() == *uuid)
                .expect("row");
            assert_eq!(
                (row.value, row.count),
                (pick(agg, whole), whole.0),
                "{uuid} {agg:?}"
            );
        }
    }
}

#[tokio::test]
async fn concurrent_connects_on_a_fresh_schema_all_succeed() {
    let schemas = Schemas::default();
    let cfg = schemas.config("race");
    let (a, b, c, d) = tokio::join!(
        PostgresStore::connect(cfg.clone()),
        PostgresStore::connect(cfg.clone()),
        PostgresStore::connect(cfg.clone()),
        PostgresStore::connect(cfg.clone()),
    );
    let stores: Vec<PostgresStore> = [a, b, c, d]
        .into_iter()
        .map(|r| r.expect("concurrent connect"))
        .collect();
    let mut conn = raw_conn().await;
    let applied = count(
        &mut conn,
        &format!("SELECT count(*) FROM \"{}\"._sqlx_migrations", cfg.schema),
    )
    .await;
    assert_eq!(applied, 1);
    stores[0]
        .write(&batch(&[("h", "GPU-a", "M", T0, 1.0)]), T0)
        .await
        .expect("write");
    assert_eq!(stores[3].stats().await.expect("stats").samples, 1);
}

#[tokio::test]
async fn duplicates_across_writes_and_concurrent_writers_count_once() {
    let schemas = Schemas::default();
    let cfg = schemas.config("dups");
    let one = connect(cfg.clone()).await;
    let two = connect(cfg).await;
    let first: Vec<_> = (0..10)
        .map(|i| ("h", "GPU-a", "M", T0 + i, i as f64))
        .collect();
    let second: Vec<_> = (5..15).map(|i| ("h", "GPU-a", "M", T0 + i, -1.0)).collect();
    let r = one.write(&batch(&first), T0).await.expect("write");
    assert_eq!((r.inserted, r.duplicates), (10, 0));
    let r = one.write(&batch(&second), T0).await.expect("write");
    assert_eq!((r.inserted, r.duplicates), (5, 5));
    let st = one.stats().await.expect("stats");
    assert_eq!((st.samples, st.duplicates), (15, 5));
    let agg = one
        .aggregate(&AggregateQuery {
            metric: "M".into(),
            host: None,
            start_ms: T0,
            end_ms: T0 + 60_000,
            agg: Agg::Sum,
        })
        .await
        .expect("aggregate");
    assert_eq!((agg[0].count, agg[0].value), (15, 45.0 - 5.0));

    // Two stores writing the same overlapping batches at once: every sample stored once,
    // counted as inserted by exactly one of them, and no deadlock.
    let rows: Vec<_> = (0..4000)
        .map(|i| {
            (
                "h",
                ["GPU-b", "GPU-c"][i as usize % 2],
                "M",
                T0 + i * 10,
                0.5,
            )
        })
        .collect();
    let (fwd, rev) = (
        batch(&rows),
        batch(&rows.iter().rev().copied().collect::<Vec<_>>()),
    );
    let mut inserted = 0;
    for _ in 0..3 {
        let (x, y) = tokio::join!(one.write(&fwd, T0), two.write(&rev, T0));
        let (x, y) = (x.expect("write"), y.expect("write"));
        assert_eq!(x.inserted + x.duplicates, 4000);
        assert_eq!(y.inserted + y.duplicates, 4000);
        inserted += x.inserted + y.inserted;
    }
    assert_eq!(inserted, 4000);
    assert_eq!(two.stats().await.expect("stats").samples, 15 + 4000);
}

#[tokio::test]
async fn unreachable_server_is_retryable_and_the_password_is_not_shown() {
    let mut cfg = PgStoreConfig::new("postgres://alice:s3cret-pw@127.0.0.1:1/db");
    cfg.schema = "never_created".into();
    let err = PostgresStore::connect(cfg)
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    let msg = err.to_string();
    assert!(!msg.contains("s3cret-pw"), "{msg}");
    assert!(msg.contains("alice@127.0.0.1:1/db"), "{msg}");
}
