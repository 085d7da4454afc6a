//! Durable ingest rate of the PostgreSQL store: 1,000,000 synthetic DCGM-like samples (250 GPUs
//! × 10 metrics × 400 timestamps one second apart) in batches of about 20,000, each phase into a
//! fresh schema. A write returns after COMMIT, so samples/s is the durable rate. Phases:
//! - `1`, `2`, `4`: that many concurrent writers share fleet-wide batches (8 timestamps of all
//!   250 GPUs each), so concurrent transactions update the same rollup and `series_months` rows
//!   (the worst case: they queue on those row locks).
//! - `2d`, `4d`: each writer owns a disjoint slice of the GPUs (as when collectors' batches come
//!   from different hosts), batches of ~20,000 of its GPUs' samples.
//!
//! After the last phase: read-path timings and a rewrite of 200,000 samples (all duplicates, as
//! after a redelivery).
//!
//! `cargo bench -p gpufleet-store --bench postgres_ingest`
//! Server: `GPUFLEET_BENCH_POSTGRES_URL`, else `GPUFLEET_TEST_POSTGRES_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`. `GPUFLEET_BENCH_PHASES=1,2d` picks the phases
//! (default `1,2,2d,4d`); `GPUFLEET_BENCH_KEEP=1` keeps the schemas.

use gpufleet_core::{BatchBuilder, GpuDesc, MetricName, SampleBatch};
use gpufleet_store::{Agg, AggregateQuery, MetricStore, PgStoreConfig, PostgresStore, RangeQuery};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const GPUS: usize = 250;
const METRICS: [&str; 10] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
];
const STEPS: usize = 400;
/// Samples per batch, as a collector writes them.
const BATCH: usize = 20_000;

fn url() -> String {
    std::env::var("GPUFLEET_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("GPUFLEET_TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A value like DCGM's for metric `m` of GPU `g` at step `t`: integers, or 3 decimals.
fn value(g: usize, m: usize, t: usize) -> f64 {
    let x = (g * 7_919 + m * 104_729 + t * 31) % 1000;
    match m {
        4 => 80.0 + x as f64 * 0.617,  // watts, 3 decimals
        9 => x as f64 / 1000.0,        // ratio
        7 | 8 => (x * 81) as f64,      // MiB
        5 | 6 => (1000 + x) as f64,    // MHz
        2 | 3 => (30 + x % 60) as f64, // °C
        _ => (x % 101) as f64,         // %
    }
}

fn gpu(g: usize) -> GpuDesc {
    GpuDesc {
        host: format!("node-{:03}", g / 8).into(),
        uuid: format!("GPU-{g:08x}-bench").into(),
        index: Some((g % 8) as u32),
        device: format!("nvidia{}", g % 8),
        model: "NVIDIA H100 80GB HBM3".into(),
        labels: vec![("cluster".into(), "bench".into())],
    }
}

/// Every sample of the GPUs `gpus` as batches of about [`BATCH`] (whole timestamps).
fn batches(start_ms: i64, gpus: &[usize]) -> Vec<SampleBatch> {
    let descs: Vec<GpuDesc> = gpus.iter().map(|g| gpu(*g)).collect();
    let metrics: Vec<MetricName> = METRICS.iter().map(|m| MetricName::new(*m)).collect();
    let per_batch = (BATCH / (gpus.len() * METRICS.len())).max(1);
    (0..STEPS)
        .step_by(per_batch)
        .map(|first| {
            let mut bb = BatchBuilder::new();
            let gi: Vec<u32> = descs.iter().map(|g| bb.gpu(g)).collect();
            let mi: Vec<u32> = metrics.iter().map(|m| bb.metric(m)).collect();
            for t in first..(first + per_batch).min(STEPS) {
                let ts = start_ms + t as i64 * 1000;
                for (g, gid) in gpus.iter().zip(&gi) {
                    for (m, mid) in mi.iter().enumerate() {
                        bb.push(*gid, *mid, ts, value(*g, m, t));
                    }
                }
            }
            bb.finish()
        })
        .collect()
}

/// The batches of each writer of a phase (`"2"`: shared fleet-wide batches taken in turn,
/// `"2d"`: disjoint GPU slices).
fn plan(start_ms: i64, writers: usize, disjoint: bool) -> Vec<Vec<SampleBatch>> {
    let all: Vec<usize> = (0..GPUS).collect();
    if disjoint {
        return (0..writers)
            .map(|w| {
                let mine: Vec<usize> = all.iter().copied().filter(|g| g % writers == w).collect();
                batches(start_ms, &mine)
            })
            .collect();
    }
    let fleet = batches(start_ms, &all);
    (0..writers)
        .map(|w| fleet.iter().skip(w).step_by(writers).cloned().collect())
        .collect()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

async fn store(tag: &str, writers: usize) -> Result<PostgresStore, BoxError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut cfg = PgStoreConfig::new(url());
    cfg.schema = format!("gfbench_{tag}_{}_{nanos}", std::process::id());
    cfg.max_connections = writers as u32 + 1;
    PostgresStore::connect(cfg)
        .await
        .map_err(|e| format!("{e}\n(start PostgreSQL, or set GPUFLEET_BENCH_POSTGRES_URL)").into())
}

/// Runs one task per writer over its batches; returns wall time, per-batch latencies and
/// the inserted and duplicate counts.
async fn ingest(
    store: &Arc<PostgresStore>,
    plan: Vec<Vec<SampleBatch>>,
) -> Result<(Duration, Vec<Duration>, u64, u64), BoxError> {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for mine in plan {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut ins, mut dup) = (0, 0);
            for b in &mine {
                let t = Instant::now();
                let r = store.write(b, gpufleet_core::time::now_ms()).await?;
                lat.push(t.elapsed());
                ins += r.inserted;
                dup += r.duplicates;
            }
            Ok::<_, gpufleet_store::StoreError>((lat, ins, dup))
        }));
    }
    let mut lat = Vec::new();
    let (mut ins, mut dup) = (0, 0);
    for t in tasks {
        let (l, i, d) = t.await??;
        lat.extend(l);
        ins += i;
        dup += d;
    }
    lat.sort();
    Ok((t0.elapsed(), lat, ins, dup))
}

/// Median wall time of 5 runs of `f`, in ms.
async fn median_ms<F, Fut, T>(mut f: F) -> Result<f64, BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, gpufleet_store::StoreError>>,
{
    let mut v = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        f().await?;
        v.push(t.elapsed());
    }
    v.sort();
    Ok(v[2].as_secs_f64() * 1e3)
}

/// Read paths over the data just written.
async fn reads(s: &PostgresStore, start: i64) -> Result<(), BoxError> {
    let end = start + STEPS as i64 * 1000;
    let uuid: gpufleet_core::GpuUuid = format!("GPU-{:08x}-bench", 17).into();
    let raw = RangeQuery {
        uuid: uuid.clone(),
        host: None,
        metrics: vec![],
        start_ms: start,
        end_ms: end,
        step_ms: None,
        agg: Agg::Avg,
        limit: 100_000,
        cursor: None,
    };
    let stepped = RangeQuery {
        step_ms: Some(60_000),
        ..raw.clone()
    };
    let agg = AggregateQuery {
        metric: METRICS[0].into(),
        host: None,
        start_ms: start,
        end_ms: end,
        agg: Agg::Avg,
    };
    println!(
        "reads (median of 5): gpus() {:.1} ms, gpu(uuid) {:.1} ms, stats() {:.1} ms, \
         one GPU raw {} points {:.1} ms, one GPU 60 s buckets {:.1} ms, \
         fleet avg of {} over {} s {:.1} ms",
        median_ms(|| s.gpus()).await?,
        median_ms(|| s.gpu(&uuid)).await?,
        median_ms(|| s.stats()).await?,
        METRICS.len() * STEPS,
        median_ms(|| s.query_range(&raw)).await?,
        median_ms(|| s.query_range(&stepped)).await?,
        METRICS[0],
        STEPS,
        median_ms(|| s.aggregate(&agg)).await?,
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let phases: Vec<(usize, bool)> = std::env::var("GPUFLEET_BENCH_PHASES")
        .unwrap_or_else(|_| "1,2,2d,4d".into())
        .split(',')
        .filter_map(|p| {
            let p = p.trim();
            let (n, disjoint) = p.strip_suffix('d').map_or((p, false), |n| (n, true));
            n.parse().ok().filter(|n| *n > 0).map(|n| (n, disjoint))
        })
        .collect();
    // Start an hour ago, on a whole minute: all in one month except at a month's first hour.
    let start = (gpufleet_core::time::now_ms() - 3_600_000) / 60_000 * 60_000;
    println!(
        "postgres_ingest: {} samples ({GPUS} GPUs x {} metrics x {STEPS} s), batches of ~{BATCH}",
        GPUS * METRICS.len() * STEPS,
        METRICS.len(),
    );
    for (i, &(writers, disjoint)) in phases.iter().enumerate() {
        let plan = plan(start, writers, disjoint);
        let name = format!("{writers}{}", if disjoint { "d" } else { "" });
        let s = Arc::new(store(&name, writers).await?);
        let (wall, lat, ins, dup) = ingest(&s, plan).await?;
        let st = s.stats().await?;
        println!(
            "writers={name:<3} {:>7.0} samples/s durable ({ins} inserted, {dup} duplicates, {:.2} s); \
             batch p50 {:.0} ms p99 {:.0} ms; {:.0} bytes/sample on disk",
            ins as f64 / wall.as_secs_f64(),
            wall.as_secs_f64(),
            pct(&lat, 0.5).as_secs_f64() * 1e3,
            pct(&lat, 0.99).as_secs_f64() * 1e3,
            st.bytes_on_disk as f64 / st.samples.max(1) as f64,
        );
        if i + 1 == phases.len() {
            reads(&s, start).await?;
            let fleet = batches(start, &(0..GPUS).collect::<Vec<_>>());
            let again = vec![fleet[..10].to_vec()];
            let (wall, _, ins, dup) = ingest(&s, again).await?;
            println!(
                "rewrite (all duplicates): {:>7.0} samples/s ({ins} inserted, {dup} duplicates)",
                (ins + dup) as f64 / wall.as_secs_f64()
            );
        }
        if std::env::var_os("GPUFLEET_BENCH_KEEP").is_none() {
            s.drop_schema().await?;
        }
        s.close().await?;
    }
    Ok(())
}
