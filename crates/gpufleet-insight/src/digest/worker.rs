//! [`DigestWorker`]: once a week, at the configured weekday and hour (UTC), reads the past week
//! through a [`DigestSource`], builds the digest and sends it through its notifiers. A week
//! missed while the server was down is not sent late; the next slot is.

use super::{build, message, Digest, DigestInput};
use crate::config::DigestConfig;
use crate::notify::Notifiers;
use crate::source::SourceError;
use crate::Clock;
use async_trait::async_trait;
use gpufleet_runtime::{Worker, WorkerContext, WorkerError};
use std::time::{Duration, Instant};
use tracing::info;

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;

/// Reads one host input per host for the week `[from_ms, to_ms)`.
#[async_trait]
pub trait DigestSource: Send + Sync + 'static {
    /// Inputs of every host.
    async fn digest_inputs(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DigestInput>, SourceError>;
}

/// [`DigestConfig`] checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestSchedule {
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u32,
    /// 0–23, UTC.
    pub hour: u32,
}

impl DigestConfig {
    /// The schedule, or what is wrong (`None` when disabled).
    pub fn validate(&self) -> Result<Option<DigestSchedule>, String> {
        const DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
        let weekday = DAYS
            .iter()
            .position(|d| d.eq_ignore_ascii_case(self.weekday.trim()) || d[..3].eq_ignore_ascii_case(self.weekday.trim()))
            .ok_or_else(|| format!("digest.weekday: {:?} is not a day of the week (monday … sunday)", self.weekday))?;
        if self.hour > 23 {
            return Err(format!("digest.hour: {} is not an hour 0–23", self.hour));
        }
        Ok(self.enabled.then_some(DigestSchedule { weekday: weekday as u32, hour: self.hour }))
    }
}

/// The first slot strictly after `now_ms`.
pub fn next_slot(now_ms: i64, s: &DigestSchedule) -> i64 {
    let today = now_ms.div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
    for d in 0..=7 {
        let day = today + d;
        let wd = (day + 3).rem_euclid(7) as u32;
        let at = day * DAY_MS + i64::from(s.hour) * 3_600_000;
        if wd == s.weekday && at > now_ms {
            return at;
        }
    }
    // Unreachable for a valid schedule: one of 8 consecutive days has the weekday after now.
    now_ms + WEEK_MS
}

/// Sends the weekly digest.
pub struct DigestWorker {
    schedule: DigestSchedule,
    source: std::sync::Arc<dyn DigestSource>,
    notifiers: Notifiers,
    clock: Clock,
    /// The last slot handled, so a clock a little behind never sends one week twice.
    last_slot: i64,
}

impl DigestWorker {
    /// A worker on `schedule` reading `source` and sending through `notifiers`.
    pub fn new(schedule: DigestSchedule, source: std::sync::Arc<dyn DigestSource>, notifiers: Notifiers, clock: Clock) -> Self {
        Self { schedule, source, notifiers, clock, last_slot: i64::MIN }
    }

    /// Builds and sends the digest of the week ending `to_ms`; returns it.
    pub async fn send_week(&self, to_ms: i64) -> Result<Digest, String> {
        let inputs = self.source.digest_inputs(to_ms - WEEK_MS, to_ms).await.map_err(|e| e.to_string())?;
        let digest = build(to_ms - WEEK_MS, to_ms, &inputs);
        let reports = self.notifiers.send_all(&message(&digest)).await;
        let failed: Vec<String> = reports.iter().filter_map(|r| r.error.clone()).collect();
        info!(hosts = digest.hosts.len(), notifiers = reports.len(), failed = failed.len(), "weekly digest sent");
        if failed.is_empty() {
            Ok(digest)
        } else {
            Err(failed.join("; "))
        }
    }
}

#[async_trait]
impl Worker for DigestWorker {
    fn name(&self) -> String {
        "digest".into()
    }

    fn interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(WEEK_MS as u64))
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        loop {
            let now = (self.clock)().max(self.last_slot);
            let slot = next_slot(now, &self.schedule);
            let wait = Duration::from_millis(u64::try_from(slot - now).unwrap_or(0));
            tokio::select! {
                _ = ctx.shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
            self.last_slot = slot;
            let started = Instant::now();
            let r = self.send_week(slot).await;
            ctx.record(r.is_ok(), started.elapsed(), r.err());
        }
    }
}
