//! Dead-letter operations on failed jobs: list, inspect, retry (re-publish with the same job id),
//! discard. The broker keeps dead letters in `<topic>.dead` and cannot delete one, so a handled
//! dead letter is recorded in the [`super::JobStore`] and hidden from then on. Lookups scan at
//! most [`MAX_SCAN`] dead letters, oldest first.

use super::{now_ms, store_error, JobId, JobMessage, JobStatus};
use crate::error::{ErrorKind, GatewayError};
use crate::proxy::Endpoint;
use crate::queue::Priority;
use crate::Gateway;
use gpufleet_broker::DeadLetter;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;

/// Most dead letters read to list or find one.
pub const MAX_SCAN: usize = 10_000;

/// A dead-lettered job.
#[derive(Clone, Debug, Serialize)]
pub struct DeadJob {
    /// Dead-letter id (use it in the DLQ routes).
    pub id: String,
    /// The job's id, when the payload could be decoded.
    pub job_id: Option<JobId>,
    /// Model.
    pub model: Option<String>,
    /// Route.
    pub endpoint: Option<Endpoint>,
    /// Priority.
    pub priority: Option<Priority>,
    /// Why the last run failed.
    pub reason: String,
    /// Deliveries attempted.
    pub attempts: u32,
    /// Epoch ms it was dead-lettered.
    pub dead_at_ms: i64,
    /// The request body (only when inspecting one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

fn broker_error(e: gpufleet_broker::BrokerError) -> GatewayError {
    GatewayError::internal(ErrorKind::Unavailable, format!("broker: {e}"))
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::downstream(ErrorKind::NotFound, format!("no dead letter {id:?}"))
}

fn view(d: &DeadLetter, with_body: bool) -> DeadJob {
    let msg = JobMessage::decode(&d.payload).ok();
    let body = with_body.then(|| {
        let raw = msg.as_ref().map_or(&d.payload[..], |m| &m.body[..]);
        serde_json::from_slice(raw)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()))
    });
    DeadJob {
        id: d.id.to_string(),
        job_id: msg.as_ref().map(|m| m.id.clone()),
        model: msg.as_ref().map(|m| m.model.clone()),
        endpoint: msg.as_ref().map(|m| m.endpoint),
        priority: msg.as_ref().map(|m| m.priority),
        reason: d.reason.clone(),
        attempts: d.attempts,
        dead_at_ms: d.dead_at_ms,
        body,
    }
}

impl Gateway {
    async fn open_dead_letters(&self) -> Result<Vec<DeadLetter>, GatewayError> {
        let resolved: HashSet<String> = self
            .jobs
            .resolved_dead_letters()
            .await
            .map_err(store_error)?
            .into_iter()
            .collect();
        let all = self
            .broker
            .dead_letters(&self.settings.jobs.topic, MAX_SCAN)
            .await
            .map_err(broker_error)?;
        Ok(all
            .into_iter()
            .filter(|d| !resolved.contains(&d.id.to_string()))
            .collect())
    }

    /// Dead-lettered jobs not yet retried or discarded, oldest first, at most `limit`.
    pub async fn dlq_list(&self, limit: usize) -> Result<Vec<DeadJob>, GatewayError> {
        Ok(self
            .open_dead_letters()
            .await?
            .iter()
            .take(limit)
            .map(|d| view(d, false))
            .collect())
    }

    /// One dead-lettered job with its request body.
    pub async fn dlq_get(&self, id: &str) -> Result<DeadJob, GatewayError> {
        let open = self.open_dead_letters().await?;
        open.iter()
            .find(|d| d.id.to_string() == id)
            .map(|d| view(d, true))
            .ok_or_else(|| not_found(id))
    }

    /// Publishes the job again (same job id, attempts start over) and hides the dead letter.
    pub async fn dlq_retry(&self, id: &str) -> Result<JobId, GatewayError> {
        let open = self.open_dead_letters().await?;
        let dead = open
            .iter()
            .find(|d| d.id.to_string() == id)
            .ok_or_else(|| not_found(id))?;
        let msg = JobMessage::decode(&dead.payload).map_err(|e| {
            GatewayError::downstream(
                ErrorKind::BadRequest,
                format!("dead letter {id} is not a job: {e}"),
            )
        })?;
        if !self
            .jobs
            .resolve_dead_letter(id, "retried", now_ms())
            .await
            .map_err(store_error)?
        {
            return Err(not_found(id));
        }
        let now = now_ms();
        let mut rec = self
            .jobs
            .get(&msg.id, now)
            .await
            .map_err(store_error)?
            .unwrap_or_else(|| super::JobRecord {
                id: msg.id.clone(),
                status: JobStatus::Queued,
                model: msg.model.clone(),
                endpoint: msg.endpoint,
                priority: msg.priority,
                created_ms: now,
                updated_ms: now,
                attempts: 0,
                result: None,
                error: None,
                expires_ms: None,
            });
        rec.status = JobStatus::Queued;
        rec.attempts = 0;
        rec.error = None;
        rec.expires_ms = None;
        rec.updated_ms = now;
        self.jobs.upsert(&rec).await.map_err(store_error)?;
        self.broker
            .publish(&self.settings.jobs.topic, &[msg.encode()])
            .await
            .map_err(broker_error)?;
        Ok(msg.id)
    }

    /// Hides a dead letter for good.
    pub async fn dlq_discard(&self, id: &str) -> Result<(), GatewayError> {
        let open = self.open_dead_letters().await?;
        if !open.iter().any(|d| d.id.to_string() == id) {
            return Err(not_found(id));
        }
        if !self
            .jobs
            .resolve_dead_letter(id, "discarded", now_ms())
            .await
            .map_err(store_error)?
        {
            return Err(not_found(id));
        }
        Ok(())
    }
}
