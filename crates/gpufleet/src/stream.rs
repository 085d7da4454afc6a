//! `gpufleet stream`: the streamer. It reads CSV files in chunks of `--batch` rows on a blocking
//! thread (constant memory), posts each chunk with its header to the server's ingest endpoint with
//! up to `--workers` requests in flight, and counts a chunk as done only when the server answered
//! that the broker holds it durably. A chunk whose request fails (server away, 5xx, 429) is retried
//! with backoff until it is acknowledged, so a server killed and restarted mid-replay ends with
//! every row stored exactly once (the store drops the duplicates a retry may create).
//!
//! With `--broker redis://…` (distributed mode) the streamer skips the API: it parses each chunk
//! itself (same decoder, same line-numbered errors) and publishes the batch straight to Redis
//! Streams; a chunk is done when Redis holds it, and retryable broker errors (Redis restarting)
//! are retried with the same backoff.

use crate::cli::StreamArgs;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use gpufleet_broker::{Broker, RedisBroker, RedisBrokerConfig};
use gpufleet_core::TopicName;
use gpufleet_runtime::{Backoff, Shutdown};
use gpufleet_telemetry::ingest::{self, IngestReport};
use gpufleet_telemetry::source::{CsvFileReader, DecodeOptions, RowError};
use gpufleet_telemetry::PipelineMetrics;
use std::sync::Arc;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::warn;

/// What a replay did.
#[derive(Debug, Default, Serialize)]
pub struct StreamSummary {
    /// Files replayed (per pass).
    pub files: usize,
    /// Passes over the files.
    pub passes: u64,
    /// Rows acknowledged (good + rejected).
    pub rows: u64,
    /// Rows the server rejected as malformed.
    pub rejected: u64,
    /// Samples the server published.
    pub samples: u64,
    /// Requests retried because the server was away or busy.
    pub retries: u64,
    /// Wall time.
    pub seconds: f64,
    /// Rows per second.
    pub rows_per_s: f64,
    /// The first rejected rows as `file:line: reason`.
    pub errors: Vec<String>,
}

struct Job {
    file: PathBuf,
    first_line: u64,
    rows: u64,
    body: Bytes,
    offset_ms: i64,
}

/// Runs the replay until done (or, with `--loop`, until `shutdown`).
pub async fn run(args: &StreamArgs, shutdown: Shutdown) -> Result<StreamSummary> {
    if args.batch == 0 || args.workers == 0 {
        bail!("--batch and --workers must be at least 1");
    }
    for f in &args.files {
        if !f.is_file() {
            bail!("{}: no such file", f.display());
        }
    }
    let sink = match &args.broker {
        None => {
            let api = crate::client::Client::new(&args.server)?;
            Sink::Http { client: api.http().clone(), url: api.url("/api/v1/telemetry") }
        }
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            let mut cfg = RedisBrokerConfig::new(url.clone());
            cfg.key_prefix = args.key_prefix.clone();
            let broker = RedisBroker::connect(cfg).await.context("--broker")?;
            Sink::Broker { broker: Arc::new(broker), topic: TopicName::new(&args.topic), metrics: PipelineMetrics::default() }
        }
        Some(other) => bail!("--broker: {:?} is not a Redis URL (redis://host:6379 or rediss://…)", crate::redact::redact(other)),
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let mut sum = StreamSummary { files: args.files.len(), ..Default::default() };
    let mut offset_ms = 0i64;
    loop {
        sum.passes += 1;
        let mut span: Option<(i64, i64)> = None;
        for file in &args.files {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Job>>(args.workers * 2);
            let reader_file = file.clone();
            let batch = args.batch;
            let reader = tokio::task::spawn_blocking(move || read_chunks(reader_file, batch, offset_ms, tx));
            let mut in_flight = FuturesUnordered::new();
            let mut dispatched_rows = 0u64;
            let mut eof = false;
            while !eof || !in_flight.is_empty() {
                tokio::select! {
                    biased;
                    _ = shutdown.wait() => bail!("interrupted; {} rows were acknowledged", sum.rows),
                    Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                        let (job, report, retries): (Job, IngestReport, u64) = done?;
                        account(&mut sum, &job, &report, retries, &mut span);
                        let secs = started.elapsed().as_secs_f64().max(1e-3);
                        bar.set_message(format!("{} rows acked ({:.0} rows/s), {} rejected, {} retries", sum.rows, sum.rows as f64 / secs, sum.rejected, sum.retries));
                    }
                    next = rx.recv(), if !eof && in_flight.len() < args.workers => match next {
                        None => eof = true,
                        Some(job) => {
                            let job = job?;
                            if args.rate > 0 {
                                dispatched_rows += job.rows;
                                let due = started + Duration::from_secs_f64(dispatched_rows as f64 / args.rate as f64);
                                tokio::time::sleep_until(due.into()).await;
                            }
                            in_flight.push(send(&sink, args.host.as_deref(), job, &shutdown));
                        }
                    },
                }
            }
            reader.await.context("reader thread")??;
        }
        if !args.loop_forever || shutdown.is_triggered() {
            break;
        }
        // The next pass continues the series: shift by the span of this pass plus one step.
        if let Some((lo, hi)) = span {
            offset_ms += hi - lo + 1000;
        }
    }
    bar.finish_and_clear();
    sum.seconds = started.elapsed().as_secs_f64();
    sum.rows_per_s = sum.rows as f64 / sum.seconds.max(1e-9);
    Ok(sum)
}

fn account(sum: &mut StreamSummary, job: &Job, r: &IngestReport, retries: u64, span: &mut Option<(i64, i64)>) {
    sum.rows += r.rows;
    sum.rejected += r.rejected;
    sum.samples += r.samples;
    sum.retries += retries;
    for RowError { line, reason } in &r.errors {
        if sum.errors.len() < 20 {
            sum.errors.push(format!("{}:{line}: {reason}", job.file.display()));
        }
    }
    if let (Some(lo), Some(hi)) = (r.min_ts_ms, r.max_ts_ms) {
        let (lo, hi) = (lo - job.offset_ms, hi - job.offset_ms);
        *span = Some(span.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    }
}

/// Reads a file into jobs of `batch` rows; runs on a blocking thread.
fn read_chunks(file: PathBuf, batch: usize, offset_ms: i64, tx: tokio::sync::mpsc::Sender<Result<Job>>) -> Result<()> {
    let mut reader = CsvFileReader::open(&file).with_context(|| format!("opening {}", file.display()))?;
    let mut header = reader.header().to_vec();
    if !header.ends_with(b"\n") {
        header.push(b'\n');
    }
    loop {
        let chunk = match reader.next_chunk(batch) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = tx.blocking_send(Err(anyhow::anyhow!("{}: {e}", file.display())));
                return Ok(());
            }
        };
        let mut body = Vec::with_capacity(header.len() + chunk.bytes.len());
        body.extend_from_slice(&header);
        body.extend_from_slice(&chunk.bytes);
        let job = Job { file: file.clone(), first_line: chunk.first_line, rows: chunk.rows, body: Bytes::from(body), offset_ms };
        if tx.blocking_send(Ok(job)).is_err() {
            return Ok(()); // the sender side stopped (interrupted)
        }
    }
}

/// Where chunks go.
enum Sink {
    /// The server's ingest endpoint.
    Http { client: reqwest::Client, url: String },
    /// Straight into the broker (distributed mode).
    Broker { broker: Arc<dyn Broker>, topic: TopicName, metrics: PipelineMetrics },
}

/// Delivers one chunk until it is acknowledged. Returns the report and the retries it took.
async fn send(sink: &Sink, host: Option<&str>, job: Job, shutdown: &Shutdown) -> Result<(Job, IngestReport, u64)> {
    match sink {
        Sink::Http { client, url } => post(client, url, host, job, shutdown).await,
        Sink::Broker { broker, topic, metrics } => publish(broker.as_ref(), topic, metrics, host, job, shutdown).await,
    }
}

/// Parses a chunk here and publishes it to the broker, retrying while the broker is away.
async fn publish(broker: &dyn Broker, topic: &TopicName, metrics: &PipelineMetrics, host: Option<&str>, job: Job, shutdown: &Shutdown) -> Result<(Job, IngestReport, u64)> {
    let opts = DecodeOptions { default_host: host.map(str::to_owned), ingest_ms: gpufleet_core::time::now_ms() };
    let (mut batch, rows, errors) = ingest::decode_csv(&job.body, job.first_line, opts).map_err(|e| anyhow::anyhow!("{}: {e}", job.file.display()))?;
    ingest::shift(&mut batch, job.offset_ms);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut retries = 0u64;
    loop {
        match ingest::publish(broker, topic, batch.clone(), rows, errors.clone(), metrics).await {
            Ok(report) => return Ok((job, report, retries)),
            Err(ingest::IngestError::Broker(e)) if e.is_retryable() => {
                retries += 1;
                let delay = backoff.next_delay();
                if retries == 1 || retries.is_multiple_of(10) {
                    warn!(error = %e, retry_in = ?delay, "broker unavailable; retrying chunk");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait() => bail!("interrupted while retrying"),
                }
            }
            Err(e) => bail!("{} (lines from {}): {e}", job.file.display(), job.first_line),
        }
    }
}

/// Posts one chunk until the server acknowledges it.
async fn post(client: &reqwest::Client, url: &str, host: Option<&str>, job: Job, shutdown: &Shutdown) -> Result<(Job, IngestReport, u64)> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut retries = 0u64;
    loop {
        let mut req = client
            .post(url)
            .header("content-type", "text/csv")
            .header("x-gpufleet-first-line", job.first_line.to_string())
            .body(job.body.clone());
        if let Some(h) = host {
            req = req.header("x-gpufleet-host", h);
        }
        if job.offset_ms != 0 {
            req = req.header("x-gpufleet-time-offset-ms", job.offset_ms.to_string());
        }
        let why = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() || status.as_u16() == 422 {
                    let report: IngestReport = resp.json().await.context("server answered with an unreadable report")?;
                    return Ok((job, report, retries));
                }
                let text = resp.text().await.unwrap_or_default();
                if status.as_u16() == 401 || status.as_u16() == 403 {
                    bail!("server refused the key ({status}): {} — pass --api-key or set GPUFLEET_API_KEY to a key allowed to ingest (TelemetryWrite)", text.trim());
                }
                if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
                    format!("server answered {status}: {}", text.trim())
                } else {
                    bail!("{} (lines from {}): server refused the chunk with {status}: {}", job.file.display(), job.first_line, text.trim());
                }
            }
            Err(e) => format!("server unreachable: {e}"),
        };
        retries += 1;
        let delay = backoff.next_delay();
        if retries == 1 || retries.is_multiple_of(10) {
            warn!(url, error = %why, retry_in = ?delay, "retrying chunk");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait() => bail!("interrupted while retrying"),
        }
    }
}

/// Prints the summary for people.
pub fn print_summary(s: &StreamSummary) {
    println!(
        "streamed {} rows ({} samples) from {} file(s) in {:.2}s — {:.0} rows/s; {} rejected; {} retries",
        s.rows, s.samples, s.files, s.seconds, s.rows_per_s, s.rejected, s.retries
    );
    for e in &s.errors {
        println!("  rejected {e}");
    }
    if s.rejected > s.errors.len() as u64 {
        println!("  … and {} more rejected rows", s.rejected - s.errors.len() as u64);
    }
}
