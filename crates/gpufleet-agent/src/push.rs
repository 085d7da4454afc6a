//! Pushing GPU samples into the server's telemetry pipeline, so GPU charts need no dcgm-exporter.
//!
//! Each sample's GPUs become JSON lines in the format `POST /api/v1/telemetry` accepts
//! (`Content-Type: application/x-ndjson`; see `gpufleet-telemetry`'s `ingest::decode_jsonl`), one
//! line per GPU and metric, with the canonical DCGM names of `gpufleet_core::metric_names`
//! (frame buffer in MiB, power in W, clocks in MHz, `DCGM_FI_DEV_XID_ERRORS` = the last XID code,
//! 0 when none, as DCGM reports it). Lines wait in a bounded [`PushBuffer`] (oldest dropped and
//! counted when full); the [`PushWorker`] sends them every `push_interval` with
//! `Authorization: Bearer <api key>`, at most [`MAX_LINES_PER_POST`] per request, and retries a
//! failed push with capped exponential backoff. An answer of 400/413/422 means the lines can never
//! be accepted: they are dropped and logged. The server drops samples it already holds, so a retry
//! after a lost answer duplicates nothing.

use crate::wire::GpuState;
use async_trait::async_trait;
use gpufleet_runtime::{Backoff, Worker, WorkerContext, WorkerError};
use parking_lot::Mutex;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Lines sent in one request at most.
pub const MAX_LINES_PER_POST: usize = 20_000;

/// The JSON lines of one sample's GPUs.
pub fn gpu_lines(host: &str, time_ms: i64, gpus: &[GpuState]) -> Vec<String> {
    let mut out = Vec::new();
    for g in gpus {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let readings: [(&str, Option<f64>); 11] = [
            ("DCGM_FI_DEV_GPU_UTIL", g.util_percent),
            ("DCGM_FI_DEV_MEM_COPY_UTIL", g.mem_util_percent),
            ("DCGM_FI_DEV_FB_USED", g.memory_used_bytes.map(mib)),
            ("DCGM_FI_DEV_FB_FREE", g.memory_used_bytes.zip(g.memory_total_bytes).map(|(u, t)| mib(t.saturating_sub(u)))),
            ("DCGM_FI_DEV_FB_TOTAL", g.memory_total_bytes.map(mib)),
            ("DCGM_FI_DEV_GPU_TEMP", g.temperature_c),
            ("DCGM_FI_DEV_POWER_USAGE", g.power_w),
            ("DCGM_FI_DEV_ENFORCED_POWER_LIMIT", g.power_limit_w),
            ("DCGM_FI_DEV_SM_CLOCK", g.sm_clock_mhz.map(f64::from)),
            ("DCGM_FI_DEV_MEM_CLOCK", g.mem_clock_mhz.map(f64::from)),
            ("DCGM_FI_DEV_XID_ERRORS", Some(g.last_xid.unwrap_or(0) as f64)),
        ];
        for (metric, value) in readings {
            let Some(value) = value.filter(|v| v.is_finite()) else { continue };
            out.push(
                json!({
                    "timestamp": time_ms,
                    "host": host,
                    "gpu_uuid": g.uuid,
                    "gpu_index": g.index,
                    "device": format!("nvidia{}", g.index),
                    "model": g.name,
                    "metric": metric,
                    "value": value,
                })
                .to_string(),
            );
        }
    }
    out
}

/// Lines waiting to be pushed; bounded.
#[derive(Debug)]
pub struct PushBuffer {
    lines: Mutex<VecDeque<String>>,
    cap: usize,
    dropped: AtomicU64,
    pushed: AtomicU64,
}

impl PushBuffer {
    /// A buffer of at most `cap` lines.
    pub fn new(cap: usize) -> Self {
        Self { lines: Mutex::new(VecDeque::new()), cap: cap.max(1), dropped: AtomicU64::new(0), pushed: AtomicU64::new(0) }
    }

    /// Appends lines, dropping the oldest beyond the cap.
    pub fn extend(&self, new: Vec<String>) {
        let mut q = self.lines.lock();
        q.extend(new);
        let over = q.len().saturating_sub(self.cap);
        if over > 0 {
            q.drain(..over);
            self.dropped.fetch_add(over as u64, Ordering::Relaxed);
        }
    }

    /// Lines waiting.
    pub fn len(&self) -> usize {
        self.lines.lock().len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lines dropped because the buffer was full or the server refused them for good.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lines the server accepted.
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    fn peek(&self, n: usize) -> Vec<String> {
        self.lines.lock().iter().take(n).cloned().collect()
    }

    /// Removes the first `n` lines (they were sent; new lines were only appended meanwhile).
    fn consume(&self, n: usize, accepted: bool) {
        let mut q = self.lines.lock();
        let n = n.min(q.len());
        q.drain(..n);
        if accepted {
            self.pushed.fetch_add(n as u64, Ordering::Relaxed);
        } else {
            self.dropped.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// What one push round did.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    Empty,
    Sent,
    Refused(u16),
    Failed(String),
}

/// Sends the buffer to `{server}/api/v1/telemetry` every interval.
pub struct PushWorker {
    client: reqwest::Client,
    url: String,
    api_key: String,
    interval: Duration,
    buffer: Arc<PushBuffer>,
}

impl PushWorker {
    /// A worker pushing `buffer` to `server_url` every `interval`.
    pub fn new(server_url: &str, api_key: &str, interval: Duration, buffer: Arc<PushBuffer>) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
        Self { client, url: format!("{}/api/v1/telemetry", server_url.trim_end_matches('/')), api_key: api_key.to_owned(), interval, buffer }
    }

    /// Sends everything waiting (several requests if needed); stops at the first failure.
    async fn round(&self) -> Round {
        let mut sent_any = false;
        loop {
            let batch = self.buffer.peek(MAX_LINES_PER_POST);
            if batch.is_empty() {
                return if sent_any { Round::Sent } else { Round::Empty };
            }
            let n = batch.len();
            let mut body = batch.join("\n");
            body.push('\n');
            let resp = self
                .client
                .post(&self.url)
                .bearer_auth(&self.api_key)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    self.buffer.consume(n, true);
                    sent_any = true;
                }
                Ok(r) if matches!(r.status().as_u16(), 400 | 413 | 422) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    warn!(status, lines = n, answer = %text.chars().take(300).collect::<String>(), "server refused GPU samples; dropping them");
                    self.buffer.consume(n, false);
                    return Round::Refused(status);
                }
                Ok(r) => return Round::Failed(format!("server answered {}", r.status())),
                Err(e) => return Round::Failed(e.to_string()),
            }
        }
    }
}

#[async_trait]
impl Worker for PushWorker {
    fn name(&self) -> String {
        "agent-push".into()
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let mut backoff = Backoff::new(Duration::from_secs(1), self.interval.max(Duration::from_secs(1)) * 8);
        let mut delay = self.interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = ctx.shutdown.wait() => {
                    // One last bounded attempt so a clean stop loses no buffered sample.
                    let _ = tokio::time::timeout(Duration::from_secs(5), self.round()).await;
                    return Ok(());
                }
            }
            let started = Instant::now();
            match self.round().await {
                Round::Empty => delay = self.interval,
                Round::Sent | Round::Refused(_) => {
                    ctx.record(true, started.elapsed(), None);
                    backoff.reset();
                    delay = self.interval;
                    debug!(pending = self.buffer.len(), pushed = self.buffer.pushed(), "GPU samples pushed");
                }
                Round::Failed(error) => {
                    ctx.record(false, started.elapsed(), Some(error.clone()));
                    delay = backoff.next_delay();
                    warn!(%error, retry_in = ?delay, pending = self.buffer.len(), "GPU sample push failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_is_bounded_and_counts_drops() {
        let b = PushBuffer::new(3);
        b.extend((0..5).map(|i| i.to_string()).collect());
        assert_eq!(b.len(), 3);
        assert_eq!(b.dropped(), 2);
        assert_eq!(b.peek(10), ["2", "3", "4"]);
        b.consume(2, true);
        assert_eq!((b.len(), b.pushed()), (1, 2));
    }
}
