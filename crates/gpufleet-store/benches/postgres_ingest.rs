//! Durable ingest rate of the PostgreSQL store: 1,000,000 synthetic DCGM-like samples (250 GPUs
//! × 10 metrics × 400 timestamps one second apart) in batches of 20,000 (8 timestamps of the
//! whole fleet, like a collector's batch), written by 1, 2 and 4 concurrent writers, each run
//! into a fresh schema. A write returns after COMMIT, so samples/s is the durable rate. A last
//! phase writes the first 200,000 samples again (all duplicates, as after a redelivery).
//!
//! `cargo bench -p gpufleet-store --bench postgres_ingest`
//! Server: `GPUFLEET_BENCH_POSTGRES_URL`, else `GPUFLEET_TEST_POSTGRES_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`. `GPUFLEET_BENCH_WRITERS=1,2` picks the phases.

use gpufleet_core::{BatchBuilder, GpuDesc, MetricName, SampleBatch};
use gpufleet_store::{MetricStore, PgStoreConfig, PostgresStore};
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
const STEPS_PER_BATCH: usize = 8;

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

/// The data set as batches, with the wall-clock second of its first timestamp.
fn batches(start_ms: i64) -> Vec<SampleBatch> {
    let gpus: Vec<GpuDesc> = (0..GPUS)
        .map(|g| GpuDesc {
            host: format!("node-{:03}", g / 8).into(),
            uuid: format!("GPU-{g:08x}-bench").into(),
            index: Some((g % 8) as u32),
            device: format!("nvidia{}", g % 8),
            model: "NVIDIA H100 80GB HBM3".into(),
            labels: vec![("cluster".into(), "bench".into())],
        })
        .collect();
    let metrics: Vec<MetricName> = METRICS.iter().map(|m| MetricName::new(*m)).collect();
    (0..STEPS / STEPS_PER_BATCH)
        .map(|b| {
            let mut bb = BatchBuilder::new();
            let gi: Vec<u32> = gpus.iter().map(|g| bb.gpu(g)).collect();
            let mi: Vec<u32> = metrics.iter().map(|m| bb.metric(m)).collect();
            for t in b * STEPS_PER_BATCH..(b + 1) * STEPS_PER_BATCH {
                let ts = start_ms + t as i64 * 1000;
                for (g, gid) in gi.iter().enumerate() {
                    for (m, mid) in mi.iter().enumerate() {
                        bb.push(*gid, *mid, ts, value(g, m, t));
                    }
                }
            }
            bb.finish()
        })
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

/// Writes every batch with `writers` tasks taking batches in turn; returns wall time and
/// per-batch latencies.
async fn ingest(
    store: &Arc<PostgresStore>,
    data: &Arc<Vec<SampleBatch>>,
    writers: usize,
) -> Result<(Duration, Vec<Duration>, u64, u64), BoxError> {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, data) = (store.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut ins, mut dup) = (0, 0);
            for b in data.iter().skip(w).step_by(writers) {
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let phases: Vec<usize> = std::env::var("GPUFLEET_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    // Start an hour ago, on a whole minute: all in one month except at a month's first hour.
    let start = (gpufleet_core::time::now_ms() - 3_600_000) / 60_000 * 60_000;
    let data = Arc::new(batches(start));
    let total: usize = data.iter().map(|b| b.len()).sum();
    println!(
        "postgres_ingest: {total} samples ({GPUS} GPUs x {} metrics x {STEPS} s), {} batches of {}",
        METRICS.len(),
        data.len(),
        data[0].len()
    );
    for &writers in &phases {
        let tag = format!("w{writers}");
        let s = Arc::new(store(&tag, writers).await?);
        let (wall, lat, ins, dup) = ingest(&s, &data, writers).await?;
        let st = s.stats().await?;
        println!(
            "writers={writers}: {:>9.0} samples/s durable ({ins} inserted, {dup} duplicates) in {:.2} s; \
             batch latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms; {:.1} bytes/sample on disk",
            ins as f64 / wall.as_secs_f64(),
            wall.as_secs_f64(),
            pct(&lat, 0.5).as_secs_f64() * 1e3,
            pct(&lat, 0.99).as_secs_f64() * 1e3,
            pct(&lat, 1.0).as_secs_f64() * 1e3,
            st.bytes_on_disk as f64 / st.samples.max(1) as f64,
        );
        if writers == phases[phases.len() - 1] {
            let again = Arc::new(data[..10].to_vec());
            let (wall, _, ins, dup) = ingest(&s, &again, 1).await?;
            println!(
                "rewrite (all duplicates): {:>9.0} samples/s ({ins} inserted, {dup} duplicates)",
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
