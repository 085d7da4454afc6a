//! Async jobs: `POST /v1/jobs` (or `"async": true` on a completion route) → `202 {"job_id"}`,
//! `GET /v1/jobs/{id}` → `queued | running | completed | failed` with the result or error.
//!
//! Durable through the [`gpufleet_broker::Broker`]: a job is one message on the jobs topic, read
//! by a consumer group of job workers ([`worker`]). The payload is one header line
//! (`gpufleet-job/1 <id> <endpoint> <priority> <model>`) followed by the exact body sent upstream.
//! A message is acked only after the job's outcome is recorded in the [`JobStore`]; a failed run
//! is nacked (redelivered), and after `max_attempts` the broker moves it to its dead letters with
//! the reason. Status and results live in a [`JobStore`] until their TTL ends ([`sqlite`] for
//! one process, [`postgres`] shared by several replicas). Dead-letter operations are in [`dlq`].
//!
//! # Layout
//! - this file: ids, records, the payload format, submitting and reading jobs.
//! - [`store`]: the [`JobStore`] trait. [`sqlite`]: [`SqliteJobStore`]. [`postgres`]:
//!   [`PostgresJobStore`]. [`testsuite`]: the conformance cases every store runs.
//! - [`worker`]: the job workers and the expiry sweeper.
//! - [`dlq`]: list, inspect, retry, discard dead letters.

pub mod dlq;
pub mod postgres;
pub mod sqlite;
pub mod store;
pub mod testsuite;
pub(crate) mod worker;

pub use postgres::PostgresJobStore;
pub use sqlite::SqliteJobStore;
pub use store::{JobRecord, JobStatus, JobStore, JobStoreError};

use crate::error::{ErrorKind, GatewayError};
use crate::proxy::Endpoint;
use crate::queue::Priority;
use crate::Gateway;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

/// A job id: `job_` and 32 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// A new random id.
    pub fn generate() -> Self {
        Self(format!("job_{:032x}", rand::random::<u128>()))
    }

    /// Parses an id given by a client.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("job_")?;
        (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A decoded job message.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct JobMessage {
    pub(crate) id: JobId,
    pub(crate) endpoint: Endpoint,
    pub(crate) priority: Priority,
    pub(crate) model: String,
    pub(crate) body: Bytes,
}

const MAGIC: &str = "gpufleet-job/1";

impl JobMessage {
    pub(crate) fn encode(&self) -> Bytes {
        let header = format!(
            "{MAGIC} {} {} {} {}\n",
            self.id,
            self.endpoint.as_str(),
            self.priority.as_str(),
            self.model
        );
        let mut out = Vec::with_capacity(header.len() + self.body.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }

    pub(crate) fn decode(payload: &Bytes) -> Result<Self, String> {
        let nl = memchr::memchr(b'\n', payload).ok_or("job payload has no header line")?;
        let header = std::str::from_utf8(&payload[..nl]).map_err(|_| "job header is not UTF-8")?;
        let mut parts = header.split(' ');
        if parts.next() != Some(MAGIC) {
            return Err(format!("not a job payload: {header:?}"));
        }
        let mut next = |what: &str| {
            parts
                .next()
                .filter(|s| !s.is_empty())
                .ok_or(format!("job header lacks {what}"))
        };
        let id = JobId::parse(next("id")?).ok_or("bad job id")?;
        let endpoint = match next("endpoint")? {
            "chat" => Endpoint::Chat,
            "completions" => Endpoint::Completions,
            "embeddings" => Endpoint::Embeddings,
            other => return Err(format!("unknown endpoint {other:?}")),
        };
        let priority = next("priority")?
            .parse()
            .map_err(|e: GatewayError| e.message)?;
        let model = next("model")?.to_owned();
        Ok(Self {
            id,
            endpoint,
            priority,
            model,
            body: payload.slice(nl + 1..),
        })
    }
}

/// A job as `GET /v1/jobs/{id}` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct JobView {
    /// Id.
    pub id: JobId,
    /// `queued`, `running`, `completed` or `failed`.
    pub status: JobStatus,
    /// Model (after aliases).
    pub model: String,
    /// Route it runs on.
    pub endpoint: Endpoint,
    /// Priority.
    pub priority: Priority,
    /// Runs started so far.
    pub attempts: u32,
    /// Epoch ms of submission.
    pub created_at_ms: i64,
    /// Epoch ms of the last change.
    pub updated_at_ms: i64,
    /// The backend's answer (JSON) when completed.
    pub result: Option<Value>,
    /// Why the last run failed.
    pub error: Option<String>,
}

impl From<JobRecord> for JobView {
    fn from(r: JobRecord) -> Self {
        let result = r
            .result
            .map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)));
        Self {
            id: r.id,
            status: r.status,
            model: r.model,
            endpoint: r.endpoint,
            priority: r.priority,
            attempts: r.attempts,
            created_at_ms: r.created_ms,
            updated_at_ms: r.updated_ms,
            result,
            error: r.error,
        }
    }
}

pub(crate) use gpufleet_core::time::now_ms;

fn store_error(e: JobStoreError) -> GatewayError {
    GatewayError::internal(ErrorKind::Unavailable, format!("job store: {e}"))
}

impl Gateway {
    /// Records a job as queued and publishes it; returns its id. `body` is what goes upstream.
    pub(crate) async fn submit_job(
        &self,
        endpoint: Endpoint,
        model: &str,
        priority: Priority,
        body: Bytes,
    ) -> Result<JobId, GatewayError> {
        let id = JobId::generate();
        let now = now_ms();
        let record = JobRecord {
            id: id.clone(),
            status: JobStatus::Queued,
            model: model.to_owned(),
            endpoint,
            priority,
            created_ms: now,
            updated_ms: now,
            attempts: 0,
            result: None,
            error: None,
            expires_ms: None,
        };
        self.jobs.upsert(&record).await.map_err(store_error)?;
        let msg = JobMessage {
            id: id.clone(),
            endpoint,
            priority,
            model: model.to_owned(),
            body,
        };
        if let Err(e) = self
            .broker
            .publish(&self.settings.jobs.topic, &[msg.encode()])
            .await
        {
            let failed = JobRecord {
                status: JobStatus::Failed,
                error: Some(format!("could not be queued: {e}")),
                expires_ms: Some(now + self.ttl_ms()),
                ..record
            };
            let _ = self.jobs.upsert(&failed).await;
            return Err(GatewayError::internal(
                ErrorKind::Unavailable,
                format!("job queue unavailable: {e}"),
            )
            .with_retry_after(5));
        }
        Ok(id)
    }

    /// A job's status and result, if it exists and has not expired.
    pub async fn job(&self, id: &str) -> Result<Option<JobView>, GatewayError> {
        let Some(id) = JobId::parse(id) else {
            return Ok(None);
        };
        Ok(self
            .jobs
            .get(&id, now_ms())
            .await
            .map_err(store_error)?
            .map(JobView::from))
    }

    pub(crate) fn ttl_ms(&self) -> i64 {
        self.settings
            .jobs
            .result_ttl
            .as_millis()
            .min(i64::MAX as u128) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_keeps_the_body_verbatim() {
        let msg = JobMessage {
            id: JobId::generate(),
            endpoint: Endpoint::Completions,
            priority: Priority::Low,
            model: "qwen3-8b".into(),
            body: Bytes::from_static(b"{\"prompt\":\"a\nb\"}"),
        };
        assert_eq!(JobMessage::decode(&msg.encode()).unwrap(), msg);
        assert!(JobMessage::decode(&Bytes::from_static(b"{}")).is_err());
        assert!(JobId::parse("job_xyz").is_none());
    }
}
