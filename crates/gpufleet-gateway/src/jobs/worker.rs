//! The job workers (one consumer each in the jobs consumer group) and the sweeper that deletes
//! expired job records. Both are [`gpufleet_runtime::Worker`]s run by the integrator's supervisor.
//!
//! One delivery: decode → skip if already completed (a duplicate delivery) → a delivery beyond
//! `max_attempts` is nacked at once with the last error (it reaches the dead letters without
//! running again) → record `running` → forward like a non-streaming request (waiting for capacity
//! up to `jobs.max_wait`, no backpressure) → record the outcome → ack, or nack with the reason
//! when the failure may pass. A backend's 4xx or another non-retryable failure fails the job at
//! once (ack): running it again cannot help.

use super::{now_ms, JobMessage, JobRecord, JobStatus};
use crate::error::GatewayError;
use crate::proxy::{self, Answer, Outgoing};
use crate::Gateway;
use gpufleet_broker::Message;
use gpufleet_core::ConsumerName;
use gpufleet_runtime::{WorkerContext, WorkerError};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long one fetch waits for a message before checking shutdown again.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// How often a running job's message has its visibility extended.
const HEARTBEAT: Duration = Duration::from_millis(1000);

pub(crate) struct JobWorker {
    pub(crate) gw: Arc<Gateway>,
    pub(crate) n: u32,
}

enum Verdict {
    Ack,
    Nack(String),
}

impl JobWorker {
    pub(crate) fn name(&self) -> String {
        format!("gateway-job-{}", self.n)
    }

    pub(crate) async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let jobs = &self.gw.settings.jobs;
        let broker = &self.gw.broker;
        broker.create_group(&jobs.topic, &jobs.group).await?;
        let consumer = ConsumerName::new(format!("{}-{}", self.name(), std::process::id()));
        loop {
            let fetched = tokio::select! {
                _ = ctx.shutdown.wait() => return Ok(()),
                r = broker.fetch(&jobs.topic, &jobs.group, &consumer, 1, FETCH_WAIT) => r?,
            };
            for msg in fetched {
                let started = Instant::now();
                // On shutdown the job is abandoned unacked: it is redelivered after the
                // visibility timeout.
                // A job may run (queue wait + generation) far longer than the broker's visibility
                // timeout: keep its message in flight while it runs, so no other worker starts it
                // again and no delivery is counted.
                let work = self.process(&msg);
                tokio::pin!(work);
                let mut beat = tokio::time::interval(HEARTBEAT);
                beat.tick().await;
                let verdict = loop {
                    tokio::select! {
                        _ = ctx.shutdown.wait() => return Ok(()),
                        v = &mut work => break v,
                        _ = beat.tick() => {
                            if let Err(e) = broker.extend(&jobs.topic, &jobs.group, &consumer, &[msg.id]).await {
                                tracing::warn!(error = %e, "could not extend a running job's visibility");
                            }
                        }
                    }
                };
                let ok = matches!(verdict, Verdict::Ack);
                match verdict {
                    Verdict::Ack => broker.ack(&jobs.topic, &jobs.group, &[msg.id]).await?,
                    Verdict::Nack(ref reason) => {
                        broker
                            .nack(&jobs.topic, &jobs.group, msg.id, reason)
                            .await?
                    }
                }
                ctx.record(ok, started.elapsed(), None);
            }
        }
    }

    async fn process(&self, msg: &Message) -> Verdict {
        let gw = &self.gw;
        let job = match JobMessage::decode(&msg.payload) {
            Ok(j) => j,
            Err(reason) => return Verdict::Nack(reason),
        };
        let now = now_ms();
        let stored = gw.jobs.get(&job.id, now).await.ok().flatten();
        let mut rec = stored.unwrap_or_else(|| JobRecord {
            id: job.id.clone(),
            status: JobStatus::Queued,
            model: job.model.clone(),
            endpoint: job.endpoint,
            priority: job.priority,
            created_ms: now,
            updated_ms: now,
            attempts: 0,
            result: None,
            error: None,
            expires_ms: None,
        });
        if rec.status == JobStatus::Completed {
            return Verdict::Ack;
        }
        let max = gw.settings.jobs.max_attempts;
        if msg.attempt > max {
            return Verdict::Nack(
                rec.error
                    .unwrap_or_else(|| format!("more than {max} attempts")),
            );
        }
        rec.status = JobStatus::Running;
        rec.attempts = msg.attempt;
        rec.updated_ms = now;
        if let Err(e) = gw.jobs.upsert(&rec).await {
            return Verdict::Nack(format!("job store: {e}"));
        }
        let outcome = gw.run_job(&job).await;
        let now = now_ms();
        rec.updated_ms = now;
        let verdict = match outcome {
            Ok((status, body)) if status.is_success() => {
                rec.status = JobStatus::Completed;
                rec.result = Some(String::from_utf8_lossy(&body).into_owned());
                rec.error = None;
                gw.bal.metrics.job("completed");
                Verdict::Ack
            }
            Ok((status, body)) => {
                rec.status = JobStatus::Failed;
                rec.error = Some(format!(
                    "backend refused the job ({status}): {}",
                    String::from_utf8_lossy(&body)
                ));
                gw.bal.metrics.job("failed");
                Verdict::Ack
            }
            Err(e) if !e.retryable => {
                rec.status = JobStatus::Failed;
                rec.error = Some(e.message);
                gw.bal.metrics.job("failed");
                Verdict::Ack
            }
            Err(e) if msg.attempt >= max => {
                rec.status = JobStatus::Failed;
                rec.error = Some(format!(
                    "dead-lettered after {} attempts: {}",
                    msg.attempt, e.message
                ));
                gw.bal.metrics.job("dead_lettered");
                Verdict::Nack(e.message)
            }
            Err(e) => {
                rec.status = JobStatus::Queued;
                rec.error = Some(e.message.clone());
                Verdict::Nack(e.message)
            }
        };
        if matches!(rec.status, JobStatus::Completed | JobStatus::Failed) {
            rec.expires_ms = Some(now.saturating_add(gw.ttl_ms()));
        }
        if let Err(e) = gw.jobs.upsert(&rec).await {
            // Not recorded: do not ack, so the job is not lost.
            return Verdict::Nack(format!("job store: {e}"));
        }
        verdict
    }
}

impl Gateway {
    /// Runs a job once: status and body of the backend's answer.
    async fn run_job(
        &self,
        job: &JobMessage,
    ) -> Result<(axum::http::StatusCode, bytes::Bytes), GatewayError> {
        let pool = self.pool(&job.model)?;
        let out = Outgoing {
            endpoint: job.endpoint,
            body: job.body.clone(),
            stream: false,
            priority: job.priority,
            max_wait: self.settings.jobs.max_wait,
            admit: false,
        };
        match proxy::forward(self, &pool, out).await?.0 {
            Answer::Full { status, body, .. } => Ok((status, body)),
            Answer::Stream { .. } => Err(GatewayError::internal(
                crate::error::ErrorKind::Internal,
                "a job was answered as a stream",
            )),
        }
    }
}

/// Deletes expired job records every `interval`.
pub(crate) struct Sweeper {
    pub(crate) gw: Arc<Gateway>,
    pub(crate) interval: Duration,
}

impl Sweeper {
    pub(crate) async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ctx.shutdown.wait() => return Ok(()),
                _ = tick.tick() => {}
            }
            let started = Instant::now();
            match self.gw.jobs.expire(now_ms()).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(expired = n, "job records expired");
                    }
                    ctx.record(true, started.elapsed(), None);
                }
                Err(error) => {
                    tracing::warn!(%error, "job record expiry failed");
                    ctx.record(false, started.elapsed(), Some(error.to_string()));
                }
            }
        }
    }
}
