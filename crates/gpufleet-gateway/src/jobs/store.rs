//! [`JobStore`]: where job status and results are kept (the broker keeps the jobs themselves),
//! and which dead letters were already retried or discarded.

use super::JobId;
use crate::proxy::Endpoint;
use crate::queue::Priority;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a worker (also between failed runs).
    Queued,
    /// A worker is running it.
    Running,
    /// Done; `result` holds the answer.
    Completed,
    /// Given up; `error` says why (dead-lettered or refused by the backend).
    Failed,
}

impl JobStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            _ => return None,
        })
    }
}

/// One job's stored state.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    /// Id.
    pub id: JobId,
    /// Status.
    pub status: JobStatus,
    /// Model (after aliases).
    pub model: String,
    /// Route.
    pub endpoint: Endpoint,
    /// Priority.
    pub priority: Priority,
    /// Epoch ms of submission.
    pub created_ms: i64,
    /// Epoch ms of the last change.
    pub updated_ms: i64,
    /// Runs started.
    pub attempts: u32,
    /// The backend's answer body.
    pub result: Option<String>,
    /// Last failure.
    pub error: Option<String>,
    /// Epoch ms after which the record is gone (set when finished).
    pub expires_ms: Option<i64>,
}

/// A job store failure.
#[derive(Debug, Error)]
pub enum JobStoreError {
    /// The database failed.
    #[error("job store backend error: {0}")]
    Backend(String),
    /// A stored row that cannot be read back.
    #[error("job store row corrupt: {0}")]
    Corrupt(String),
}

/// Job status and results with TTL, and the dead letters already handled.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Inserts or replaces a job's record.
    async fn upsert(&self, job: &JobRecord) -> Result<(), JobStoreError>;
    /// A job's record, unless missing or expired at `now_ms`.
    async fn get(&self, id: &JobId, now_ms: i64) -> Result<Option<JobRecord>, JobStoreError>;
    /// Deletes records expired at `now_ms`; returns how many.
    async fn expire(&self, now_ms: i64) -> Result<u64, JobStoreError>;
    /// Marks a dead letter as handled (`retried` or `discarded`); false when it already was.
    async fn resolve_dead_letter(
        &self,
        id: &str,
        action: &str,
        now_ms: i64,
    ) -> Result<bool, JobStoreError>;
    /// Ids of handled dead letters.
    async fn resolved_dead_letters(&self) -> Result<Vec<String>, JobStoreError>;
}
