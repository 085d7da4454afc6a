//! Embedded-only behaviour: crash recovery, dedup against flushed files after reopen, torn WAL
//! tails, retention, compaction, group commit, size-triggered flush, rollup exactness.

use gpufleet_store::testsuite::{batch, query_all, raw_query, T0};
use gpufleet_store::{Agg, EmbeddedStore, MetricStore, StoreConfig};
use proptest::prelude::*;
use std::{path::Path, sync::Arc, time::Duration};

const DAY: i64 = 86_400_000;

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(StoreConfig::new(dir)).expect("open")
}

fn rows(
    metric: &'static str,
    from: i64,
    n: i64,
) -> Vec<(&'static str, &'static str, &'static str, i64, f64)> {
    (from..from + n)
        .map(|i| ("h", "GPU-a", metric, T0 + i * 1000, i as f64 * 0.5))
        .collect()
}

fn wal_segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn crash_recovery_keeps_every_acknowledged_write_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.write(&batch(&rows("M", 0, 100)), T0).await.unwrap();
        s.flush().await.unwrap();
        s.write(&batch(&rows("M", 100, 100)), T0 + 5).await.unwrap();
        s.write(&batch(&rows("N", 0, 50)), T0 + 7).await.unwrap();
        // Dropped without close: the last two writes exist only in the WAL.
    }
    let s = open(dir.path());
    let all = query_all(&s, &raw_query("GPU-a", &[], T0, T0 + 1_000_000)).await;
    assert_eq!(
        all["M"],
        rows("M", 0, 200)
            .iter()
            .map(|r| (r.3, r.4))
            .collect::<Vec<_>>()
    );
    assert_eq!(all["N"].len(), 50);
    let st = s.stats().await.unwrap();
    assert_eq!(st.samples, 250);
    assert_eq!(st.head_samples, 150);
    assert_eq!(s.gpus().await.unwrap()[0].last_ingest_ms, T0 + 7);
    let again = s.write(&batch(&rows("M", 0, 200)), T0).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 200));
    // A second crash after a flush of the replayed data still shows everything once.
    s.flush().await.unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.stats().await.unwrap().samples, 250);
}

#[tokio::test]
async fn dedup_against_flushed_partitions_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let every_other: Vec<_> = rows("M", 0, 100).into_iter().step_by(2).collect();
    {
        let s = open(dir.path());
        s.write(&batch(&every_other), T0).await.unwrap();
        s.close().await.unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.stats().await.unwrap().head_samples, 0);
    let r = s.write(&batch(&every_other), T0).await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (0, 50));
    // Gaps inside the flushed range are new; a repeated old point keeps its first value.
    let r = s
        .write(
            &batch(&[
                ("h", "GPU-a", "M", T0 + 1000, 99.0),
                ("h", "GPU-a", "M", T0 + 2000, 99.0),
            ]),
            T0,
        )
        .await
        .unwrap();
    assert_eq!((r.inserted, r.duplicates), (1, 1));
    let pts = query_all(&s, &raw_query("GPU-a", &["M"], T0, T0 + 3000)).await;
    assert_eq!(
        pts["M"],
        vec![(T0, 0.0), (T0 + 1000, 99.0), (T0 + 2000, 1.0)]
    );
}

#[tokio::test]
async fn a_torn_wal_tail_is_cut_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        for k in 0..3 {
            s.write(&batch(&rows("M", k * 10, 10)), T0).await.unwrap();
        }
    }
    let seg = wal_segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let s = open(dir.path());
    let pts = query_all(&s, &raw_query("GPU-a", &["M"], T0, T0 + 1_000_000)).await;
    assert_eq!(
        pts["M"].len(),
        20,
        "the torn third record is gone, the first two are intact"
    );
    let r = s.write(&batch(&rows("M", 20, 10)), T0).await.unwrap();
    assert_eq!(r.inserted, 10);
    drop(s);
    // Garbage after the last record is cut too.
    let seg = wal_segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    std::fs::write(&seg, bytes).unwrap();
    let s = open(dir.path());
    assert_eq!(s.stats().await.unwrap().samples, 30);
}

#[tokio::test]
async fn retention_drops_old_day_partitions_and_keeps_rollups_longer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    cfg.raw_retention = Some(Duration::from_secs(86_400));
    cfg.rollup_1m_retention = Some(Duration::from_secs(3 * 86_400));
    cfg.rollup_1h_retention = None;
    let s = EmbeddedStore::open(cfg).unwrap();
    let d0 = T0.div_euclid(DAY) * DAY;
    let pts: Vec<_> = (0..4 * 24)
        .map(|h| ("h", "GPU-a", "M", d0 + h * 3_600_000 + 30_000, h as f64))
        .collect();
    s.write(&batch(&pts), T0).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.stats().await.unwrap().partitions, 4);
    let now = d0 + 4 * DAY + 1000;
    let rep = s.apply_retention(now).await.unwrap();
    assert_eq!(rep.raw_partitions_dropped, 3);
    assert_eq!(rep.rollup_partitions_dropped, 1);
    assert!(!dir.path().join("raw/2025-07-18").exists());
    assert!(dir.path().join("r1h/2025-07-18").exists());
    let raw = query_all(&s, &raw_query("GPU-a", &["M"], d0, d0 + 4 * DAY)).await;
    assert_eq!(raw["M"].len(), 24);
    assert_eq!(raw["M"][0].0, d0 + 3 * DAY + 30_000);
    let mut q = raw_query("GPU-a", &["M"], d0, d0 + 4 * DAY);
    q.step_ms = Some(3_600_000);
    q.agg = Agg::Last;
    let hourly = query_all(&s, &q).await;
    assert_eq!(hourly["M"].len(), 96, "1-hour rollups outlive raw data");
    assert_eq!(hourly["M"][5], (d0 + 5 * 3_600_000, 5.0));
    q.step_ms = Some(60_000);
    let minutely = query_all(&s, &q).await;
    assert_eq!(
        minutely["M"].len(),
        72,
        "1-minute rollups of the first day are gone"
    );
    assert_eq!(
        s.stats().await.unwrap().oldest_ms,
        Some(d0 + 3 * DAY + 30_000)
    );
    let again = s.apply_retention(now).await.unwrap();
    assert_eq!(
        (
            again.raw_partitions_dropped,
            again.rollup_partitions_dropped
        ),
        (0, 0)
    );
}

#[tokio::test]
async fn many_small_flushes_are_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for k in 0..12 {
        s.write(&batch(&rows("M", k * 50, 50)), T0).await.unwrap();
        s.flush().await.unwrap();
    }
    let day = std::fs::read_dir(dir.path().join("raw"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let files = std::fs::read_dir(&day).unwrap().count();
    assert!(files < 4, "{files} raw files left after 12 flushes");
    let mins = std::fs::read_dir(dir.path().join("r1m"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(std::fs::read_dir(mins).unwrap().count(), files);
    drop(s);
    let s = open(dir.path());
    let pts = query_all(&s, &raw_query("GPU-a", &["M"], T0, T0 + 1_000_000)).await;
    assert_eq!(
        pts["M"],
        rows("M", 0, 600)
            .iter()
            .map(|r| (r.3, r.4))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn missing_rollups_are_rebuilt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.write(&batch(&rows("M", 0, 300)), T0).await.unwrap();
        s.close().await.unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("r1m")).unwrap();
    std::fs::create_dir(dir.path().join("r1m")).unwrap();
    let s = open(dir.path());
    let mut q = raw_query("GPU-a", &["M"], T0, T0 + 300_000);
    q.step_ms = Some(60_000);
    q.agg = Agg::Count;
    assert_eq!(
        query_all(&s, &q).await["M"],
        (0..5).map(|m| (T0 + m * 60_000, 60.0)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_with_fsync_are_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..25 {
                let metric = ["A", "B", "C", "D"][w];
                s.write(&batch(&rows(metric, k * 4, 4)), T0).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(Arc::try_unwrap(s).expect("sole owner"));
    let s = open(dir.path());
    let all = query_all(&s, &raw_query("GPU-a", &[], T0, T0 + 1_000_000)).await;
    for m in ["A", "B", "C", "D"] {
        assert_eq!(all[m].len(), 100, "{m}");
    }
}

#[tokio::test]
async fn a_full_head_is_flushed_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    cfg.head_max_samples = 100;
    let s = EmbeddedStore::open(cfg).unwrap();
    s.write(&batch(&rows("M", 0, 150)), T0).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let st = s.stats().await.unwrap();
        if st.head_samples == 0 && st.partitions == 1 {
            assert_eq!(st.samples, 150);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "head was not flushed: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        wal_segments(dir.path()).len(),
        1,
        "flushed WAL segments are deleted"
    );
}

#[tokio::test]
async fn invalid_input_is_rejected_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut b = batch(&rows("M", 0, 1));
    b.points[0].gpu = 7;
    let e = s.write(&b, T0).await.unwrap_err().to_string();
    assert!(e.contains("gpu ref"), "{e}");
    let e = s
        .write(&batch(&[("h", "GPU-a", "M", i64::MAX, 1.0)]), T0)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside years"), "{e}");
    let mut q = raw_query("GPU-a", &[], T0, T0 + 1);
    q.step_ms = Some(0);
    assert!(s.query_range(&q).await.is_err());
    q.limit = 0;
    q.step_ms = None;
    assert!(s.query_range(&q).await.is_err());
    // The widest possible range with a rollup step neither overflows nor loses the point.
    s.write(&batch(&rows("M", 0, 1)), T0).await.unwrap();
    s.flush().await.unwrap();
    let mut q = raw_query("GPU-a", &[], i64::MIN, i64::MAX);
    q.step_ms = Some(60_000);
    q.agg = Agg::Count;
    assert_eq!(
        s.query_range(&q).await.unwrap().series[0].points,
        vec![(T0, 1.0)]
    );
    let agg = gpufleet_store::AggregateQuery {
        metric: "M".into(),
        host: None,
        start_ms: i64::MIN,
        end_ms: i64::MAX,
        agg: Agg::Count,
    };
    assert_eq!(s.aggregate(&agg).await.unwrap()[0].count, 1);
    s.close().await.unwrap();
    assert!(s.write(&batch(&rows("M", 0, 1)), T0).await.is_err());
}

/// Reference bucket of 3-decimal values: exact mantissa sum, as the store defines it.
fn reference(points: &[(i64, i64)], start: i64, end: i64, step: i64, agg: Agg) -> Vec<(i64, f64)> {
    let mut b: std::collections::BTreeMap<i64, Vec<(i64, i64)>> = Default::default();
    for (t, m) in points.iter().filter(|(t, _)| *t >= start && *t < end) {
        b.entry(t.div_euclid(step) * step)
            .or_default()
            .push((*t, *m));
    }
    b.into_iter()
        .map(|(k, ps)| {
            let sum = ps.iter().map(|p| p.1).sum::<i64>() as f64 / 1000.0;
            let v = |m: i64| m as f64 / 1000.0;
            let val = match agg {
                Agg::Avg => sum / ps.len() as f64,
                Agg::Sum => sum,
                Agg::Min => v(ps.iter().map(|p| p.1).min().unwrap()),
                Agg::Max => v(ps.iter().map(|p| p.1).max().unwrap()),
                Agg::Last => v(ps.iter().max_by_key(|p| p.0).unwrap().1),
                Agg::Count => ps.len() as f64,
            };
            (k, val)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn rollup_queries_equal_raw_computation(
        pts in proptest::collection::vec((0i64..2 * DAY, -1_000_000i64..1_000_000), 1..400),
        splits in proptest::collection::vec(0usize..400, 0..3),
        window in (0i64..2 * DAY, 0i64..2 * DAY),
        step_i in 0usize..5,
    ) {
        let step = [60_000, 120_000, 300_000, 3_600_000, 7_200_000][step_i];
        let (a, b) = (T0 + window.0.min(window.1), T0 + window.0.max(window.1) + 1);
        let mut first: std::collections::BTreeMap<i64, i64> = Default::default();
        for (t, m) in &pts {
            first.entry(T0 + *t).or_insert(*m);
        }
        let kept: Vec<(i64, i64)> = first.into_iter().collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = StoreConfig::new(dir.path());
            cfg.fsync = false;
            let s = EmbeddedStore::open(cfg).unwrap();
            let rows: Vec<_> = pts.iter().map(|(t, m)| ("h", "GPU-a", "M", T0 + t, *m as f64 / 1000.0)).collect();
            let mut cuts: Vec<usize> = splits.iter().map(|c| c % (rows.len() + 1)).collect();
            cuts.sort_unstable();
            let mut from = 0;
            for c in cuts {
                s.write(&batch(&rows[from..c]), T0).await.unwrap();
                s.flush().await.unwrap();
                from = c;
            }
            s.write(&batch(&rows[from..]), T0).await.unwrap();
            for agg in [Agg::Avg, Agg::Sum, Agg::Min, Agg::Max, Agg::Last, Agg::Count] {
                let mut q = raw_query("GPU-a", &["M"], a, b);
                q.step_ms = Some(step);
                q.agg = agg;
                let got = query_all(&s, &q).await.remove("M").unwrap_or_default();
                assert_eq!(got, reference(&kept, a, b, step, agg), "agg {agg:?} step {step}");
            }
        });
    }
}
