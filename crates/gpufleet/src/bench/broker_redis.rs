//! `gpufleet bench ingest --broker redis://…`: the Redis broker backend against raw Redis on the
//! same server, payload size and pipeline depth.
//!
//! 1. Raw: `redis-benchmark -u <url> -n N -P <pipeline> -q -x XADD <key> * f` with the payload on
//!    stdin (its default 50 connections, no `MAXLEN`); its requests per second.
//! 2. Ours: N payloads published through [`RedisBroker`] in batches of `pipeline` (one pipelined
//!    `publish` each) by [`PUBLISHERS`] concurrent tasks, while `consumers` tasks fetch (up to
//!    [`FETCH_MAX`]) and ack concurrently. Publish rate = N / time until the last publish returned;
//!    end-to-end rate = N / time until the last ack returned.
//!
//! Both use keys under a fresh prefix (`gfbench-<pid>-<nanos>`), deleted afterwards (also the raw
//! stream, before our run starts, so both runs see the same server state). Every wait is bounded
//! ([`LIMIT`]); `redis-benchmark` is killed when it overruns. Note that `redis-benchmark -u` puts
//! the URL, password included, on its command line.

use super::proc::{on_path, ChildProc};
use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use gpufleet_broker::{Broker, RedisBroker, RedisBrokerConfig};
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Concurrent publishing tasks of our run.
pub(crate) const PUBLISHERS: usize = 16;
/// Most messages one fetch of our run asks for.
pub(crate) const FETCH_MAX: usize = 1000;
/// Longest each of the two runs may take.
pub(crate) const LIMIT: Duration = Duration::from_secs(600);
/// Largest accepted `messages`.
const MAX_MESSAGES: u64 = 50_000_000;

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct RedisBenchArgs {
    /// `redis://…` or `rediss://…` of the server to measure.
    pub url: String,
    /// Messages of each run.
    pub messages: u64,
    /// Bytes per payload.
    pub payload_bytes: usize,
    /// Pipeline depth: `-P` of the raw run, messages per `publish` of ours.
    pub pipeline: usize,
    /// Consuming tasks of our run.
    pub consumers: usize,
}

/// What was measured.
#[derive(Clone, Debug)]
pub(crate) struct RedisBenchReport {
    /// `redis-benchmark` XADD requests per second.
    pub raw_xadd_ops_s: f64,
    /// Our publish rate (messages per second until the last publish returned).
    pub ours_publish_s: f64,
    /// Our publish + consume + ack rate (messages per second until the last ack returned).
    pub ours_end_to_end_s: f64,
    /// `ours_end_to_end_s / raw_xadd_ops_s` (the target is at least 0.5).
    pub ratio: f64,
    /// How the figures were taken.
    pub notes: Vec<String>,
    args: RedisBenchArgs,
}

/// Runs both measurements.
pub(crate) async fn run(args: &RedisBenchArgs) -> Result<RedisBenchReport> {
    ensure!((1..=MAX_MESSAGES).contains(&args.messages), "messages must be 1..={MAX_MESSAGES}");
    ensure!((1..=16 << 20).contains(&args.payload_bytes), "payload bytes must be 1..=16 MiB");
    ensure!((1..=100_000).contains(&args.pipeline), "pipeline must be 1..=100000");
    ensure!((1..=1024).contains(&args.consumers), "consumers must be 1..=1024");
    if !on_path("redis-benchmark") {
        bail!("redis-benchmark is not on PATH (Debian/Ubuntu: apt-get install redis-tools)");
    }
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut cfg = RedisBrokerConfig::new(args.url.clone());
    cfg.key_prefix = format!("gfbench-{}-{nanos}", std::process::id());
    // No redelivery during a run: every message is acked long before.
    cfg.visibility_timeout = Duration::from_secs(300);
    let max_len = cfg.max_len;
    let broker = Arc::new(RedisBroker::connect(cfg.clone()).await.context("connecting the Redis broker")?);
    let result = measure(args, &broker, &format!("{}:raw", cfg.key_prefix)).await;
    let purged = broker.purge().await;
    broker.close().await.ok();
    let (raw, publish_s, end_to_end_s) = result?;
    purged.context("deleting the benchmark's keys")?;
    let notes = vec![
        format!(
            "raw: redis-benchmark -c 50 -P {} -n {} XADD <key> * f <{} bytes> (no MAXLEN)",
            args.pipeline, args.messages, args.payload_bytes
        ),
        format!(
            "ours: {PUBLISHERS} tasks publishing batches of {} (one pipeline each, XADD MAXLEN ~ {}), \
             {} tasks fetching up to {FETCH_MAX} and acking each batch with one XACK; four shared \
             connections plus dedicated ones for waiting fetches",
            args.pipeline,
            max_len.map_or("none".to_string(), |n| n.to_string()),
            args.consumers
        ),
        "target: ours end-to-end / raw XADD >= 0.5".to_string(),
    ];
    Ok(RedisBenchReport {
        raw_xadd_ops_s: raw,
        ours_publish_s: publish_s,
        ours_end_to_end_s: end_to_end_s,
        ratio: if raw > 0.0 { end_to_end_s / raw } else { 0.0 },
        notes,
        args: args.clone(),
    })
}

/// The raw run (then its key is deleted), then ours: `(raw ops/s, publish/s, end-to-end/s)`.
async fn measure(args: &RedisBenchArgs, broker: &Arc<RedisBroker>, raw_key: &str) -> Result<(f64, f64, f64)> {
    eprintln!("raw XADD with redis-benchmark ({} messages)…", args.messages);
    let raw = raw_xadd(args, raw_key).await?;
    broker.purge().await.context("deleting the raw run's stream")?;
    eprintln!("RedisBroker publish + fetch + ack ({} messages)…", args.messages);
    let (publish_s, end_to_end_s) = tokio::time::timeout(LIMIT, ours(args, broker.clone()))
        .await
        .with_context(|| format!("our run did not finish within {LIMIT:?}"))??;
    Ok((raw, publish_s, end_to_end_s))
}

/// Runs `redis-benchmark` and returns its requests per second.
async fn raw_xadd(args: &RedisBenchArgs, key: &str) -> Result<f64> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let (payload_path, out_path) = (dir.path().join("payload"), dir.path().join("out"));
    std::fs::write(&payload_path, vec![b'x'; args.payload_bytes]).context("writing the payload file")?;
    let stdin = std::fs::File::open(&payload_path).context("opening the payload file")?;
    let stdout = std::fs::File::create(&out_path).context("creating the output file")?;
    let mut cmd = Command::new("redis-benchmark");
    cmd.arg("-u")
        .arg(&args.url)
        .args(["-n", &args.messages.to_string(), "-P", &args.pipeline.to_string(), "-q", "-x"])
        .args(["XADD", key, "*", "f"])
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::null());
    if args.url.starts_with("rediss:") {
        cmd.arg("--tls");
    }
    let mut child = ChildProc::spawn(&mut cmd, "redis-benchmark")?;
    let status = child.wait_exit(LIMIT, |_| {}).await?;
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    ensure!(status.success(), "redis-benchmark failed ({status}): {}", tail(&output));
    parse_rps(&output).with_context(|| format!("no 'requests per second' in redis-benchmark's output: {}", tail(&output)))
}

/// Our run: `(publish msgs/s, end-to-end msgs/s)`.
async fn ours(args: &RedisBenchArgs, broker: Arc<RedisBroker>) -> Result<(f64, f64)> {
    let (topic, group) = (TopicName::new("bench"), GroupName::new("bench"));
    broker.create_group(&topic, &group).await?;
    let total = args.messages;
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let next_batch = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let last_ack: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let start = Instant::now();
    let deadline = start + LIMIT;

    let mut consumers = Vec::with_capacity(args.consumers);
    for i in 0..args.consumers {
        let (broker, topic, group) = (broker.clone(), topic.clone(), group.clone());
        let (acked, last_ack) = (acked.clone(), last_ack.clone());
        let me = ConsumerName::new(format!("bench-{i}"));
        consumers.push(tokio::spawn(async move {
            while acked.load(Ordering::Acquire) < total && Instant::now() < deadline {
                let got = broker.fetch(&topic, &group, &me, FETCH_MAX, Duration::from_millis(100)).await?;
                if got.is_empty() {
                    continue;
                }
                let ids: Vec<_> = got.iter().map(|m| m.id).collect();
                broker.ack(&topic, &group, &ids).await?;
                let done = acked.fetch_add(ids.len() as u64, Ordering::AcqRel) + ids.len() as u64;
                if done >= total {
                    last_ack.get_or_init(Instant::now);
                }
            }
            anyhow::Ok(())
        }));
    }
    let batch = args.pipeline as u64;
    let batches = total.div_ceil(batch);
    let mut publishers = Vec::with_capacity(PUBLISHERS);
    for _ in 0..PUBLISHERS {
        let (broker, topic, payload, next_batch) = (broker.clone(), topic.clone(), payload.clone(), next_batch.clone());
        publishers.push(tokio::spawn(async move {
            loop {
                let b = next_batch.fetch_add(1, Ordering::AcqRel);
                if b >= batches {
                    return anyhow::Ok(());
                }
                let n = batch.min(total - b * batch) as usize;
                broker.publish(&topic, &vec![payload.clone(); n]).await?;
            }
        }));
    }
    for p in publishers {
        p.await.context("publisher task")??;
    }
    let published_in = start.elapsed();
    for c in consumers {
        c.await.context("consumer task")??;
    }
    let acked_in = last_ack
        .get()
        .map(|at| at.duration_since(start))
        .with_context(|| format!("only {} of {total} messages acked within {LIMIT:?}", acked.load(Ordering::Acquire)))?;
    Ok((rate(total, published_in), rate(total, acked_in)))
}

fn rate(n: u64, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(1e-9)
}

/// The figure of the last `… N requests per second` line of `redis-benchmark -q`.
fn parse_rps(output: &str) -> Option<f64> {
    let line = output.split(['\r', '\n']).rev().find(|l| l.contains("requests per second"))?;
    let before = &line[..line.find("requests per second")?];
    before.split_whitespace().last()?.parse().ok()
}

/// The end of a command's output, for errors.
fn tail(output: &str) -> String {
    let from = output.len().saturating_sub(500);
    output.get(from..).unwrap_or(output).trim().to_string()
}

impl RedisBenchReport {
    /// Prints the figures as a small table.
    pub(crate) fn print_human(&self) {
        println!(
            "Redis broker benchmark: {} messages of {} bytes, pipeline {}, {} consumers",
            self.args.messages, self.args.payload_bytes, self.args.pipeline, self.args.consumers
        );
        println!("  raw XADD (redis-benchmark)        {:>12.0} msgs/s", self.raw_xadd_ops_s);
        println!("  RedisBroker publish               {:>12.0} msgs/s", self.ours_publish_s);
        println!("  RedisBroker publish+consume+ack   {:>12.0} msgs/s", self.ours_end_to_end_s);
        println!("  ratio end-to-end / raw            {:>12.2}   (target >= 0.5)", self.ratio);
        for note in &self.notes {
            println!("  note: {note}");
        }
    }

    /// The figures as one JSON object.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "messages": self.args.messages,
            "payload_bytes": self.args.payload_bytes,
            "pipeline": self.args.pipeline,
            "consumers": self.args.consumers,
            "publishers": PUBLISHERS,
            "raw_xadd_ops_s": self.raw_xadd_ops_s,
            "ours_publish_s": self.ours_publish_s,
            "ours_end_to_end_s": self.ours_end_to_end_s,
            "ratio": self.ratio,
            "notes": self.notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_second_are_read_from_quiet_output() {
        let out = "XADD k * f xxx: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\r\
                   XADD k * f xxx: 512820.53 requests per second, p50=1.223 msec\n";
        assert_eq!(parse_rps(out), Some(512_820.53));
        assert_eq!(parse_rps("ERROR: connection refused\n"), None);
    }
}
