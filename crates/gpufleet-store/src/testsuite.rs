//! The conformance suite every [`MetricStore`] backend passes.
//!
//! Each case is a `pub async fn` taking a [`StoreFactory`] that builds a fresh, empty store.
//! [`store_test_suite!`](crate::store_test_suite) expands to one `#[tokio::test]` per case:
//!
//! ```ignore
//! gpufleet_store::store_test_suite!(MyFactory::new());
//! ```
//! Cases assume nothing about files: only the trait's documented semantics. Values are chosen
//! so that any summation order gives the same float (small multiples of 1/4), hence hand
//! computations compare with `==`.

use crate::{Agg, AggregateQuery, MetricStore, RangeQuery, SeriesFilter};
use async_trait::async_trait;
use gpufleet_core::{BatchBuilder, GpuDesc, GpuUuid, MetricName, SampleBatch};
use std::{collections::BTreeMap, sync::Arc};

/// Builds fresh, empty stores.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// A new store with no data.
    async fn build(&self) -> Arc<dyn MetricStore>;
}

/// 2025-07-18T20:00:00Z.
pub const T0: i64 = 1_752_868_800_000;

/// A GPU description for tests.
pub fn gpu(host: &str, uuid: &str) -> GpuDesc {
    GpuDesc {
        host: host.into(),
        uuid: uuid.into(),
        index: Some(0),
        device: "nvidia0".into(),
        model: "NVIDIA H100 80GB HBM3".into(),
        labels: vec![],
    }
}

/// A batch from `(host, uuid, metric, ts, value)` rows.
pub fn batch(rows: &[(&str, &str, &str, i64, f64)]) -> SampleBatch {
    let mut b = BatchBuilder::new();
    for (h, u, m, ts, v) in rows {
        let g = b.gpu(&gpu(h, u));
        let m = b.metric(&MetricName::new(m));
        b.push(g, m, *ts, *v);
    }
    b.finish()
}

/// A raw query of one GPU.
pub fn raw_query(uuid: &str, metrics: &[&str], start_ms: i64, end_ms: i64) -> RangeQuery {
    RangeQuery {
        uuid: GpuUuid::new(uuid),
        host: None,
        metrics: metrics.iter().copied().map(MetricName::new).collect(),
        start_ms,
        end_ms,
        step_ms: None,
        agg: Agg::Avg,
        limit: 1_000_000,
        cursor: None,
    }
}

/// Every point of a query, paging with the cursor, as `metric → [(ts, value)]`.
pub async fn query_all(
    store: &dyn MetricStore,
    q: &RangeQuery,
) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    let mut q = q.clone();
    for _ in 0..10_000 {
        let r = store.query_range(&q).await.expect("query");
        for s in r.series {
            out.entry(s.key.metric.to_string())
                .or_default()
                .extend(s.points);
        }
        match r.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
    panic!("paging did not end");
}

fn grid(
    uuids: &[(&'static str, &'static str)],
    metrics: &[&'static str],
    n: i64,
    value: impl Fn(usize, usize, i64) -> f64,
) -> Vec<(&'static str, &'static str, &'static str, i64, f64)> {
    let mut rows = Vec::new();
    for i in 0..n {
        for (gi, (h, u)) in uuids.iter().enumerate() {
            for (mi, m) in metrics.iter().enumerate() {
                rows.push((*h, *u, *m, T0 + i * 1000, value(gi, mi, i)));
            }
        }
    }
    rows
}

/// Written points come back, per metric in name order, only for the asked GPU and metrics.
pub async fn write_query_round_trip(f: &dyn StoreFactory) {
    let store = f.build().await;
    let rows = grid(
        &[("h1", "GPU-a"), ("h2", "GPU-b")],
        &["M_B", "M_A"],
        20,
        |g, m, i| (g * 100 + m * 10) as f64 + i as f64 * 0.25,
    );
    let r = store.write(&batch(&rows), T0).await.expect("write");
    assert_eq!(r.inserted, rows.len() as u64);
    assert_eq!(r.duplicates, 0);
    let res = store
        .query_range(&raw_query("GPU-a", &[], T0, T0 + 20_000))
        .await
        .expect("query");
    let metrics: Vec<&str> = res.series.iter().map(|s| s.key.metric.as_str()).collect();
    assert_eq!(metrics, vec!["M_A", "M_B"]);
    assert!(res.next_cursor.is_none());
    for s in &res.series {
        assert_eq!(s.key.host.as_str(), "h1");
        assert_eq!(s.key.uuid.as_str(), "GPU-a");
        let m = if s.key.metric.as_str() == "M_A" {
            1.0
        } else {
            0.0
        };
        let want: Vec<(i64, f64)> = (0..20)
            .map(|i| (T0 + i * 1000, m * 10.0 + i as f64 * 0.25))
            .collect();
        assert_eq!(s.points, want);
    }
    let res = store
        .query_range(&raw_query("GPU-b", &["M_B"], T0 + 5_000, T0 + 7_000))
        .await
        .expect("query");
    assert_eq!(res.series.len(), 1);
    assert_eq!(
        res.series[0].points,
        vec![(T0 + 5_000, 101.25), (T0 + 6_000, 101.5)]
    );
    let mut q = raw_query("GPU-b", &[], T0, T0 + 20_000);
    q.host = Some("h1".into());
    assert!(store
        .query_range(&q)
        .await
        .expect("query")
        .series
        .is_empty());
    assert!(store
        .query_range(&raw_query("GPU-zzz", &[], T0, T0 + 20_000))
        .await
        .expect("query")
        .series
        .is_empty());
}

/// The same batch twice stores once and counts duplicates, before and after a flush.
pub async fn idempotent_write(f: &dyn StoreFactory) {
    let store = f.build().await;
    let rows = grid(&[("h1", "GPU-a")], &["M"], 10, |_, _, i| i as f64);
    let b = batch(&rows);
    assert_eq!(store.write(&b, T0).await.expect("write").inserted, 10);
    let again = store.write(&b, T0).await.expect("write");
    assert_eq!((again.inserted, again.duplicates), (0, 10));
    store.flush().await.expect("flush");
    let third = store.write(&b, T0).await.expect("write");
    assert_eq!((third.inserted, third.duplicates), (0, 10));
    let pts = query_all(&*store, &raw_query("GPU-a", &[], T0, T0 + 60_000)).await;
    assert_eq!(pts["M"].len(), 10);
    assert!(store.stats().await.expect("stats").duplicates >= 20);
}

/// A second value for the same key and timestamp is dropped, in later writes and within one batch.
pub async fn first_value_wins(f: &dyn StoreFactory) {
    let store = f.build().await;
    store
        .write(&batch(&[("h", "GPU-a", "M", T0, 1.0)]), T0)
        .await
        .expect("write");
    let r = store
        .write(
            &batch(&[
                ("h", "GPU-a", "M", T0, 2.0),
                ("h", "GPU-a", "M", T0 + 1, 3.0),
                ("h", "GPU-a", "M", T0 + 1, 4.0),
            ]),
            T0,
        )
        .await
        .expect("write");
    assert_eq!((r.inserted, r.duplicates), (1, 2));
    store.flush().await.expect("flush");
    store
        .write(&batch(&[("h", "GPU-a", "M", T0 + 1, 5.0)]), T0)
        .await
        .expect("write");
    let pts = query_all(&*store, &raw_query("GPU-a", &["M"], T0, T0 + 10)).await;
    assert_eq!(pts["M"], vec![(T0, 1.0), (T0 + 1, 3.0)]);
}

fn hand(points: &[(i64, f64)], start: i64, end: i64, step: i64, agg: Agg) -> Vec<(i64, f64)> {
    let mut b: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
    for (t, v) in points.iter().filter(|(t, _)| *t >= start && *t < end) {
        b.entry(t.div_euclid(step) * step)
            .or_default()
            .push((*t, *v));
    }
    b.into_iter()
        .map(|(k, ps)| {
            let vals: Vec<f64> = ps.iter().map(|p| p.1).collect();
            let sum: f64 = vals.iter().sum();
            let v = match agg {
                Agg::Avg => sum / vals.len() as f64,
                Agg::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
                Agg::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Agg::Last => ps.iter().max_by_key(|p| p.0).map_or(f64::NAN, |p| p.1),
                Agg::Sum => sum,
                Agg::Count => vals.len() as f64,
            };
            (k, v)
        })
        .collect()
}

/// Step buckets with every aggregation equal a hand computation, for raw-only steps and
/// minute/hour steps, over data split between flushed storage and memory.
pub async fn step_buckets(f: &dyn StoreFactory) {
    let store = f.build().await;
    // 2.5 hours of 10 s samples, written out of order in two halves with a flush between.
    let pts: Vec<(i64, f64)> = (0..900)
        .map(|i| {
            (
                T0 - 1_800_000 + i * 10_000 + 3,
                ((i * 37) % 101) as f64 * 0.25,
            )
        })
        .collect();
    let rows: Vec<_> = pts
        .iter()
        .map(|(t, v)| ("h", "GPU-a", "M", *t, *v))
        .collect();
    store.write(&batch(&rows[450..]), T0).await.expect("write");
    store.flush().await.expect("flush");
    store.write(&batch(&rows[..450]), T0).await.expect("write");
    for (start, end, step) in [
        (T0 - 1_800_000, T0 + 7_200_000, 60_000),
        (T0 - 1_234_567, T0 + 5_000_001, 3_600_000),
        (T0 - 1_000_000, T0 + 1_000_000, 7_000),
        (T0 - 1_799_000, T0 + 6_000_000, 300_000),
    ] {
        for agg in [
            Agg::Avg,
            Agg::Min,
            Agg::Max,
            Agg::Last,
            Agg::Sum,
            Agg::Count,
        ] {
            let mut q = raw_query("GPU-a", &["M"], start, end);
            q.step_ms = Some(step);
            q.agg = agg;
            let got = store.query_range(&q).await.expect("query");
            assert_eq!(got.series.len(), 1);
            assert_eq!(
                got.series[0].points,
                hand(&pts, start, end, step, agg),
                "step {step} agg {agg:?} from {start}"
            );
        }
    }
}

/// Paging with a small limit returns every point exactly once, raw and bucketed.
pub async fn limit_and_cursor_paging(f: &dyn StoreFactory) {
    let store = f.build().await;
    let rows = grid(&[("h", "GPU-a")], &["M_C", "M_A", "M_B"], 25, |_, m, i| {
        (m * 1000) as f64 + i as f64
    });
    store.write(&batch(&rows[..40]), T0).await.expect("write");
    store.flush().await.expect("flush");
    store.write(&batch(&rows[40..]), T0).await.expect("write");
    let mut q = raw_query("GPU-a", &[], T0, T0 + 25_000);
    q.limit = 7;
    let first = store.query_range(&q).await.expect("query");
    assert_eq!(
        first.series.iter().map(|s| s.points.len()).sum::<usize>(),
        7
    );
    assert!(first.next_cursor.is_some());
    let all = query_all(&*store, &q).await;
    for (mi, m) in ["M_C", "M_A", "M_B"].iter().enumerate() {
        let want: Vec<(i64, f64)> = (0..25)
            .map(|i| (T0 + i * 1000, (mi * 1000) as f64 + i as f64))
            .collect();
        assert_eq!(all[*m], want, "{m}");
    }
    q.step_ms = Some(5_000);
    q.agg = Agg::Count;
    q.limit = 4;
    let buckets = query_all(&*store, &q).await;
    for m in ["M_A", "M_B", "M_C"] {
        assert_eq!(
            buckets[m],
            (0..5).map(|b| (T0 + b * 5_000, 5.0)).collect::<Vec<_>>(),
            "{m}"
        );
    }
}

/// One value per series of a metric, over in-memory and flushed data and partial ranges.
pub async fn aggregate(f: &dyn StoreFactory) {
    let store = f.build().await;
    let gpus = [("h1", "GPU-a"), ("h1", "GPU-b"), ("h2", "GPU-c")];
    let rows = grid(&gpus, &["U", "V"], 40, |g, _, i| {
        (g as f64) * 10.0 + (i % 8) as f64 * 0.5
    });
    store.write(&batch(&rows[..120]), T0).await.expect("write");
    store.flush().await.expect("flush");
    store.write(&batch(&rows[120..]), T0).await.expect("write");
    let (start, end) = (T0 + 3_000, T0 + 33_000);
    for agg in [
        Agg::Avg,
        Agg::Max,
        Agg::Count,
        Agg::Sum,
        Agg::Last,
        Agg::Min,
    ] {
        let got = store
            .aggregate(&AggregateQuery {
                metric: "U".into(),
                host: None,
                start_ms: start,
                end_ms: end,
                agg,
            })
            .await
            .expect("aggregate");
        assert_eq!(got.len(), 3);
        for (row, (g, (_, uuid))) in got.iter().zip(gpus.iter().enumerate()) {
            assert_eq!(row.key.uuid.as_str(), *uuid);
            let pts: Vec<(i64, f64)> = (0..40)
                .map(|i| (T0 + i * 1000, (g as f64) * 10.0 + (i % 8) as f64 * 0.5))
                .collect();
            let want = hand(&pts, start, end, 1 << 40, agg);
            assert_eq!(row.value, want[0].1, "{agg:?} {uuid}");
            assert_eq!(row.count, 30);
        }
    }
    let h2 = store
        .aggregate(&AggregateQuery {
            metric: "U".into(),
            host: Some("h2".into()),
            start_ms: T0,
            end_ms: T0 + 40_000,
            agg: Agg::Max,
        })
        .await
        .expect("aggregate");
    assert_eq!(h2.len(), 1);
    assert_eq!(h2[0].value, 23.5);
    assert!(store
        .aggregate(&AggregateQuery {
            metric: "nope".into(),
            host: None,
            start_ms: T0,
            end_ms: T0 + 1,
            agg: Agg::Avg
        })
        .await
        .expect("aggregate")
        .is_empty());
}

/// `series` filters by host, GPU and metric and sorts by key.
pub async fn series_filter(f: &dyn StoreFactory) {
    let store = f.build().await;
    let rows = grid(
        &[("h2", "GPU-b"), ("h1", "GPU-a")],
        &["Y", "X"],
        1,
        |_, _, _| 1.0,
    );
    store.write(&batch(&rows), T0).await.expect("write");
    let all = store
        .series(&SeriesFilter::default())
        .await
        .expect("series");
    let keys: Vec<String> = all
        .iter()
        .map(|(k, _)| format!("{}/{}/{}", k.host, k.uuid, k.metric))
        .collect();
    assert_eq!(
        keys,
        vec!["h1/GPU-a/X", "h1/GPU-a/Y", "h2/GPU-b/X", "h2/GPU-b/Y"]
    );
    assert_eq!(all[0].1, gpu("h1", "GPU-a"));
    let by_host = store
        .series(&SeriesFilter {
            host: Some("h2".into()),
            ..Default::default()
        })
        .await
        .expect("series");
    assert_eq!(by_host.len(), 2);
    let by_uuid_metric = store
        .series(&SeriesFilter {
            uuid: Some("GPU-a".into()),
            metric: Some("Y".into()),
            ..Default::default()
        })
        .await
        .expect("series");
    assert_eq!(by_uuid_metric.len(), 1);
    assert_eq!(by_uuid_metric[0].0.metric.as_str(), "Y");
}

/// `gpus` reports the latest description, first and last sample time, last ingest time and
/// the latest value per metric, whatever order samples arrived in.
pub async fn gpus_latest_and_seen(f: &dyn StoreFactory) {
    let store = f.build().await;
    store
        .write(
            &batch(&[
                ("h", "GPU-a", "U", T0 + 5_000, 50.0),
                ("h", "GPU-a", "T", T0 + 2_000, 40.0),
            ]),
            T0 + 10,
        )
        .await
        .expect("write");
    store.flush().await.expect("flush");
    store
        .write(
            &batch(&[
                ("h", "GPU-a", "U", T0 + 1_000, 10.0),
                ("h", "GPU-a", "U", T0 + 9_000, 90.0),
            ]),
            T0 + 20,
        )
        .await
        .expect("write");
    let mut relabelled = gpu("h", "GPU-a");
    relabelled.labels = vec![("pod".into(), "trainer-0".into())];
    let mut b = BatchBuilder::new();
    let g = b.gpu(&relabelled);
    let m = b.metric(&"T".into());
    b.push(g, m, T0 + 3_000, 41.0);
    store.write(&b.finish(), T0 + 15).await.expect("write");
    let gpus = store.gpus().await.expect("gpus");
    assert_eq!(gpus.len(), 1);
    let g = &gpus[0];
    assert_eq!(g.desc, relabelled);
    assert_eq!(g.first_seen_ms, T0 + 1_000);
    assert_eq!(g.last_seen_ms, T0 + 9_000);
    assert_eq!(g.last_ingest_ms, T0 + 20);
    assert_eq!(g.latest[&MetricName::new("U")], (T0 + 9_000, 90.0));
    assert_eq!(g.latest[&MetricName::new("T")], (T0 + 3_000, 41.0));
    // The single-GPU lookup agrees with the inventory and knows unknown uuids.
    assert_eq!(store.gpu(&"GPU-a".into()).await.expect("gpu").as_ref(), Some(g));
    assert_eq!(store.gpu(&"GPU-none".into()).await.expect("gpu"), None);
}

/// `stats` counts series, GPUs, samples and duplicates and knows the time span.
pub async fn stats_counts(f: &dyn StoreFactory) {
    let store = f.build().await;
    let rows = grid(
        &[("h", "GPU-a"), ("h", "GPU-b")],
        &["U", "V", "W"],
        10,
        |_, _, i| i as f64,
    );
    store.write(&batch(&rows), T0).await.expect("write");
    store.write(&batch(&rows[..5]), T0).await.expect("write");
    store.flush().await.expect("flush");
    let s = store.stats().await.expect("stats");
    assert_eq!(s.series, 6);
    assert_eq!(s.gpus, 2);
    assert_eq!(s.samples, 60);
    assert_eq!(s.duplicates, 5);
    assert_eq!(s.head_samples, 0);
    assert_eq!(s.oldest_ms, Some(T0));
    assert_eq!(s.newest_ms, Some(T0 + 9_000));
    assert!(s.bytes_on_disk > 0 || s.partitions == 0);
}

/// Runs the whole suite against one factory: `store_test_suite!(factory_expr);` expands to one
/// `#[tokio::test]` per case, each evaluating `factory_expr` afresh.
#[macro_export]
macro_rules! store_test_suite {
    ($factory:expr) => {
        $crate::store_test_suite!(@cases $factory;
            write_query_round_trip, idempotent_write, first_value_wins, step_buckets,
            limit_and_cursor_paging, aggregate, series_filter, gpus_latest_and_seen, stats_counts);
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let factory = $factory;
                $crate::testsuite::$case(&factory).await;
            }
        )*
    };
}
