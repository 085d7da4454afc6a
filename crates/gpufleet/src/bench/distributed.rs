//! `gpufleet bench ingest --broker redis://… --database postgres://…`: the distributed-mode
//! figures of the issue, measured in one run:
//!
//! - Redis: raw `redis-benchmark` XADD (same payload size and pipeline depth) beside our
//!   `RedisBroker` publish + consume + ack rate, at each `--pipeline` depth ([`super::broker_redis`]);
//! - PostgreSQL: durable ingest into the partitioned telemetry table through `PostgresStore`, fed
//!   with collector-sized batches (`--db-batch-rows`) decoded from the seeded synthetic DCGM CSV, by 1 and 2
//!   concurrent writers (a collector process runs two by default), into a fresh schema that is
//!   dropped afterwards.

use super::broker_redis::{self, RedisBenchArgs};
use super::ingest::IngestBenchArgs;
use anyhow::{Context, Result};
use gpufleet_core::SampleBatch;
use gpufleet_store::{MetricStore, PgStoreConfig, PostgresStore};
use gpufleet_telemetry::source::{CsvDecoder, CsvFileReader, DecodeOptions, RowErrors};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writer counts measured.
const WRITERS: [usize; 2] = [1, 2];

/// Runs the Redis and/or PostgreSQL phases and prints the figures.
pub async fn run(args: &IngestBenchArgs) -> Result<()> {
    let mut json = serde_json::Map::new();
    if let Some(url) = &args.broker {
        let mut runs = Vec::new();
        for &pipeline in &args.pipeline {
            let a = RedisBenchArgs { url: url.clone(), messages: args.messages, payload_bytes: args.payload_bytes, pipeline, consumers: 2 };
            let report = broker_redis::run(&a).await.with_context(|| format!("Redis phase, pipeline {pipeline}"))?;
            if !args.json {
                report.print_human();
            }
            runs.push(report.to_json());
        }
        json.insert("redis".into(), serde_json::Value::Array(runs));
    }
    if let Some(url) = &args.database {
        let figures = postgres(url, args).await.context("PostgreSQL phase")?;
        json.insert("postgres".into(), figures);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::Value::Object(json))?);
    }
    Ok(())
}

/// Decodes the synthetic CSV into batches of `--db-batch-rows` rows.
fn batches(args: &IngestBenchArgs) -> Result<Vec<SampleBatch>> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let path = dir.path().join("dcgm.csv");
    gpufleet_telemetry::synth::write_dcgm_csv(std::fs::File::create(&path)?, args.rows, args.seed)?;
    let mut reader = CsvFileReader::open(&path)?;
    let mut dec = CsvDecoder::from_header(reader.header(), DecodeOptions { default_host: None, ingest_ms: 0 })?;
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk(args.db_batch_rows.max(1))? {
        let mut b = gpufleet_core::BatchBuilder::new();
        let mut errors = RowErrors::default();
        dec.decode(&chunk.bytes, chunk.first_line, &mut b, &mut errors);
        anyhow::ensure!(errors.count == 0, "the synthetic CSV has bad rows: {:?}", errors.first);
        out.push(b.finish());
    }
    Ok(out)
}

/// Durable samples/s into PostgreSQL with 1 and 2 writers.
async fn postgres(url: &str, args: &IngestBenchArgs) -> Result<serde_json::Value> {
    eprintln!("decoding {} synthetic rows into {}-row batches…", args.rows, args.db_batch_rows);
    let data = Arc::new(batches(args)?);
    let total: usize = data.iter().map(SampleBatch::len).sum();
    let mut phases = Vec::new();
    for writers in WRITERS {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let mut cfg = PgStoreConfig::new(url.to_owned());
        cfg.schema = format!("gfbench_w{writers}_{}_{nanos}", std::process::id());
        cfg.max_connections = writers as u32 + 1;
        // The synthetic capture is from 2025: keep everything (retention would drop it).
        cfg.raw_retention = None;
        let store = Arc::new(PostgresStore::connect(cfg).await.context("connecting to PostgreSQL")?);
        eprintln!("PostgreSQL durable ingest, {writers} writer(s), {total} samples…");
        let result = ingest(&store, &data, writers).await;
        let dropped = store.drop_schema().await;
        store.close().await.ok();
        let (took, inserted) = result?;
        dropped.context("dropping the benchmark schema")?;
        let rate = inserted as f64 / took.as_secs_f64().max(1e-9);
        if !args.json {
            println!("PostgreSQL durable ingest, {writers} writer(s): {rate:>10.0} samples/s ({inserted} samples in {:.2} s; target >= 200000)", took.as_secs_f64());
        }
        phases.push(serde_json::json!({ "writers": writers, "samples": inserted, "seconds": took.as_secs_f64(), "samples_per_s": rate }));
    }
    Ok(serde_json::json!({ "batch_rows": args.db_batch_rows, "phases": phases, "target_samples_per_s": 200_000 }))
}

/// Writes every batch with `writers` tasks taking batches in turn; `(wall time, inserted)`.
async fn ingest(store: &Arc<PostgresStore>, data: &Arc<Vec<SampleBatch>>, writers: usize) -> Result<(Duration, u64)> {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, data) = (store.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            let mut inserted = 0;
            for b in data.iter().skip(w).step_by(writers) {
                inserted += store.write(b, gpufleet_core::time::now_ms()).await?.inserted;
            }
            anyhow::Ok(inserted)
        }));
    }
    let mut inserted = 0;
    for t in tasks {
        inserted += t.await.context("writer task")??;
    }
    Ok((t0.elapsed(), inserted))
}
