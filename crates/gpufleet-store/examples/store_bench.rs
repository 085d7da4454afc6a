//! Benchmark of the embedded store on the synthetic DCGM data set (64 hosts × 8 GPUs ×
//! 12 metrics, 2,000,000 samples one second apart; see `common/dcgm_gen.rs`).
//!
//! Prints the write rate (single task, batches of 10k points, fsync off so only the store's
//! own work is timed), peak RSS with every sample in the head, flush time, bytes per sample
//! on disk after the flush, and the median of 5 runs of: one series over the whole range, and
//! the per-GPU average of GPU_UTIL over all 512 GPUs.
//!
//! `cargo run -p gpufleet-store --release --example store_bench [-- --fsync]`
//! With `--fsync`, a second phase writes another data set from 1 and then 4 concurrent tasks with fsync on
//! to show group commit.

#[path = "common/dcgm_gen.rs"]
mod dcgm_gen;

use dcgm_gen::{DcgmGen, METRICS, START_MS};
use gpufleet_store::{Agg, AggregateQuery, EmbeddedStore, MetricStore, RangeQuery, StoreConfig};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SAMPLES: usize = 2_000_000;
const BATCH: usize = 10_000;

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn du(p: &std::path::Path) -> u64 {
    let Ok(m) = std::fs::metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len();
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let fsync_phase = std::env::args().any(|a| a == "--fsync");
    let dir = tempfile::tempdir()?;
    // GPUFLEET_BENCH_DIR keeps the store for inspection (it must not exist yet).
    let root = std::env::var_os("GPUFLEET_BENCH_DIR")
        .map_or_else(|| dir.path().to_path_buf(), std::path::PathBuf::from);
    let mut cfg = StoreConfig::new(&root);
    cfg.fsync = false;
    cfg.head_max_samples = 10_000_000;
    cfg.head_max_age = Duration::from_secs(3600);
    let store = EmbeddedStore::open(cfg)?;
    let mut generator = DcgmGen::new(42, 64, SAMPLES);
    let first_uuid = generator.gpus()[0].uuid.clone();
    let mut write_time = Duration::ZERO;
    let mut written = 0u64;
    while let Some(batch) = generator.next_batch(BATCH) {
        let t = Instant::now();
        let r = store.write(&batch, START_MS).await?;
        write_time += t.elapsed();
        written += r.inserted;
    }
    let rss_head = vm_hwm_kib();
    println!("samples written        {written}");
    println!(
        "write rate             {:.2} M samples/s ({:.3} s, 1 task, batches of {BATCH}, fsync off)",
        written as f64 / write_time.as_secs_f64() / 1e6,
        write_time.as_secs_f64()
    );
    println!(
        "peak RSS, all in head  {:.1} MiB (VmHWM)",
        rss_head as f64 / 1024.0
    );
    let t = Instant::now();
    store.flush().await?;
    println!("flush                  {:.3} s", t.elapsed().as_secs_f64());
    let stats = store.stats().await?;
    println!(
        "bytes on disk          {} ({} samples, {} series)",
        stats.bytes_on_disk, stats.samples, stats.series
    );
    println!(
        "bytes per sample       {:.3}",
        stats.bytes_on_disk as f64 / stats.samples as f64
    );
    for part in ["raw", "r1m", "r1h", "catalog.log", "wal"] {
        println!("  {part:<20} {} bytes", du(&root.join(part)));
    }
    let end = START_MS + 3_600_000;
    let q = RangeQuery {
        uuid: first_uuid,
        host: None,
        metrics: vec![METRICS[0].into()],
        start_ms: START_MS,
        end_ms: end,
        step_ms: None,
        agg: Agg::Avg,
        limit: 1_000_000,
        cursor: None,
    };
    let mut times = Vec::new();
    let mut points = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let r = store.query_range(&q).await?;
        times.push(t.elapsed());
        points = r.series.iter().map(|s| s.points.len()).sum::<usize>();
    }
    println!(
        "one series, all range  {:.3} ms median of 5 ({points} points)",
        median(times).as_secs_f64() * 1e3
    );
    let aq = AggregateQuery {
        metric: METRICS[0].into(),
        host: None,
        start_ms: START_MS,
        end_ms: end,
        agg: Agg::Avg,
    };
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..5 {
        let t = Instant::now();
        rows = store.aggregate(&aq).await?.len();
        times.push(t.elapsed());
    }
    println!(
        "avg GPU_UTIL per GPU   {:.3} ms median of 5 ({rows} GPUs)",
        median(times).as_secs_f64() * 1e3
    );
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        store
            .query_range(&RangeQuery {
                step_ms: Some(60_000),
                metrics: vec![],
                ..q.clone()
            })
            .await?;
        times.push(t.elapsed());
    }
    println!(
        "one GPU, 12 metrics, 1m step (rollups)  {:.3} ms median of 5",
        median(times).as_secs_f64() * 1e3
    );
    store.close().await?;
    if fsync_phase {
        for writers in [1, 4] {
            fsync_group_commit(writers).await?;
        }
    }
    Ok(())
}

/// Concurrent writers with fsync on: group commit shares syncs between them.
async fn fsync_group_commit(writers: usize) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(StoreConfig::new(dir.path()))?);
    let mut generator = DcgmGen::new(7, 64, 400_000);
    let mut batches = Vec::new();
    while let Some(b) = generator.next_batch(2_000) {
        batches.push(b);
    }
    let n = batches.len();
    let t = Instant::now();
    let mut tasks = Vec::new();
    let chunks: Vec<Vec<_>> = (0..4)
        .map(|w| batches.iter().skip(w).step_by(4).cloned().collect())
        .collect();
    for chunk in chunks {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for b in chunk {
                store.write(&b, START_MS).await?;
            }
            Ok::<_, gpufleet_store::StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let el = t.elapsed().as_secs_f64();
    println!("fsync on, {writers} writer(s) {n} batches of 2000 in {el:.3} s = {:.0} batches/s, {:.2} M samples/s", n as f64 / el, 400_000.0 / el / 1e6);
    store.close().await?;
    Ok(())
}
