//! The single-component phases: generating the synthetic CSV, the CSV parse rate (one thread, file
//! in the page cache) and the embedded broker's publish + consume + ack rate.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use gpufleet_broker::{Broker, BrokerConfig, EmbeddedBroker, FsyncPolicy};
use gpufleet_core::{BatchBuilder, ConsumerName, GroupName, TopicName};
use gpufleet_telemetry::source::{CsvDecoder, CsvFileReader, DecodeOptions, RowErrors};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages the broker phase publishes.
pub(super) const BROKER_MESSAGES: usize = 500_000;
/// Bytes per broker message.
pub(super) const BROKER_MESSAGE_BYTES: usize = 200;
/// Messages per publish call and the most one fetch asks for.
const BROKER_BATCH: usize = 1000;
/// The broker phase gives up after this long.
const BROKER_LIMIT: Duration = Duration::from_secs(300);

/// Writes the seeded CSV to `path`; returns (seconds, file bytes).
pub(super) async fn generate(path: &Path, rows: u64, seed: u64) -> Result<(f64, u64)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        // write_dcgm_csv wraps the file in its own BufWriter.
        let n = gpufleet_telemetry::synth::write_dcgm_csv(file, rows, seed).with_context(|| format!("writing {}", path.display()))?;
        if n != rows {
            bail!("the generator wrote {n} rows instead of {rows}");
        }
        let secs = t.elapsed().as_secs_f64();
        Ok((secs, std::fs::metadata(&path)?.len()))
    })
    .await
    .context("generator thread")?
}

/// Decodes the whole file on one thread with the production reader and decoder; returns rows/s.
/// Every row must decode.
pub(super) async fn parse_rate(path: &Path, rows: u64) -> Result<f64> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let mut reader = CsvFileReader::open(&path)?;
        let mut decoder = CsvDecoder::from_header(reader.header(), DecodeOptions::default())?;
        let mut builder = BatchBuilder::new();
        let mut errors = RowErrors::default();
        let (mut records, mut points) = (0u64, 0u64);
        while let Some(chunk) = reader.next_chunk(10_000)? {
            records += decoder.decode(&chunk.bytes, chunk.first_line, &mut builder, &mut errors);
            points += builder.len() as u64;
            drop(builder.finish());
        }
        let secs = t.elapsed().as_secs_f64();
        if errors.count > 0 || records != rows || points != rows {
            let first = errors.first.first().map(|e| format!("; line {}: {}", e.line, e.reason)).unwrap_or_default();
            bail!("parse phase: {records} records, {points} samples, {} rejected (expected {rows} good rows){first}", errors.count);
        }
        Ok(rows as f64 / secs.max(1e-9))
    })
    .await
    .context("parser thread")?
}

/// Decodes the whole file with the reader (record splitting, file I/O) on one thread and the
/// decoder on another, as the streamer and the server split the work; returns rows/s.
pub(super) async fn parse_rate_pipelined(path: &Path, rows: u64) -> Result<f64> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let mut reader = CsvFileReader::open(&path)?;
        let mut decoder = CsvDecoder::from_header(reader.header(), DecodeOptions::default())?;
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let read = std::thread::spawn(move || -> Result<()> {
            while let Some(chunk) = reader.next_chunk(10_000)? {
                if tx.send(chunk).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut builder = BatchBuilder::new();
        let mut errors = RowErrors::default();
        let (mut records, mut points) = (0u64, 0u64);
        for chunk in rx {
            records += decoder.decode(&chunk.bytes, chunk.first_line, &mut builder, &mut errors);
            points += builder.len() as u64;
            drop(builder.finish());
        }
        read.join().map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
        let secs = t.elapsed().as_secs_f64();
        if errors.count > 0 || records != rows || points != rows {
            bail!("pipelined parse: {records} records, {points} samples, {} rejected (expected {rows})", errors.count);
        }
        Ok(rows as f64 / secs.max(1e-9))
    })
    .await
    .context("parser thread")?
}

/// Broker figures.
#[derive(Debug, Clone, Copy)]
pub(super) struct BrokerRate {
    /// Messages per second, publish start to last ack.
    pub(super) msgs_per_s: f64,
    /// Payload megabytes (10^6) per second.
    pub(super) mb_per_s: f64,
}

/// Publishes [`BROKER_MESSAGES`] messages of [`BROKER_MESSAGE_BYTES`] in batches of 1000 from one
/// task while one consumer task fetches up to 1000 at a time and acks each batch.
pub(super) async fn broker_rate(dir: &Path) -> Result<BrokerRate> {
    let mut cfg = BrokerConfig::new(dir);
    cfg.fsync = FsyncPolicy::PerBatch;
    let broker = Arc::new(EmbeddedBroker::open(cfg).with_context(|| format!("opening the bench broker in {}", dir.display()))?);
    let result = broker_phase(broker.clone()).await;
    broker.close().await.context("closing the bench broker")?;
    result
}

async fn broker_phase(broker: Arc<EmbeddedBroker>) -> Result<BrokerRate> {
    let topic = TopicName::new("bench");
    let group = GroupName::new("bench");
    broker.create_group(&topic, &group).await?;
    let payload = Bytes::from(vec![b'x'; BROKER_MESSAGE_BYTES]);
    let batch: Vec<Bytes> = vec![payload; BROKER_BATCH];
    let started = Instant::now();
    let deadline = started + BROKER_LIMIT;

    let publisher = {
        let (broker, topic) = (broker.clone(), topic.clone());
        tokio::spawn(async move {
            for _ in 0..BROKER_MESSAGES / BROKER_BATCH {
                broker.publish(&topic, &batch).await?;
            }
            anyhow::Ok(())
        })
    };
    let consumer = tokio::spawn(async move {
        let me = ConsumerName::new("bench-consumer");
        let mut acked = 0usize;
        while acked < BROKER_MESSAGES {
            if Instant::now() > deadline {
                bail!("only {acked} of {BROKER_MESSAGES} messages were acked within {BROKER_LIMIT:?}");
            }
            let msgs = broker.fetch(&topic, &group, &me, BROKER_BATCH, Duration::from_millis(200)).await?;
            let ids: Vec<_> = msgs.iter().map(|m| m.id).collect();
            broker.ack(&topic, &group, &ids).await?;
            acked += ids.len();
        }
        anyhow::Ok(Instant::now())
    });
    let (published, last_ack) = tokio::join!(publisher, consumer);
    published.context("publisher task")??;
    let secs = (last_ack.context("consumer task")?? - started).as_secs_f64().max(1e-9);
    Ok(BrokerRate { msgs_per_s: BROKER_MESSAGES as f64 / secs, mb_per_s: (BROKER_MESSAGES * BROKER_MESSAGE_BYTES) as f64 / secs / 1e6 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generate_then_parse_counts_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("x.csv");
        let (_, bytes) = generate(&csv, 7000, 42).await.unwrap();
        assert!(bytes > 7000 * 300, "about 400 bytes a row: {bytes}");
        assert!(parse_rate(&csv, 7000).await.unwrap() > 0.0);
        assert!(parse_rate_pipelined(&csv, 7000).await.unwrap() > 0.0);
        assert!(parse_rate_pipelined(&csv, 7001).await.is_err());
        let e = parse_rate(&csv, 7001).await.unwrap_err().to_string();
        assert!(e.contains("7000 records"), "{e}");
    }
}
