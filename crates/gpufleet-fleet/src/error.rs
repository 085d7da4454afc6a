//! [`FleetError`]: every failure of the registry and its stores, with what the API needs to pick a
//! status (invalid field → 400, duplicate name → 409, unknown host → 404, backend → 503).

use thiserror::Error;

/// A registry or store failure.
#[derive(Debug, Error)]
pub enum FleetError {
    /// A field of a host or a query is invalid; `field` names it (`name`, `agent_url`, `tags.rack`).
    #[error("{field}: {problem}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Another host already has this name.
    #[error("a host named {0:?} is already registered")]
    DuplicateName(String),
    /// No host has this id or name.
    #[error("no host {0}")]
    NotFound(String),
    /// Host metrics were written for a month whose partition does not exist.
    #[error("host metrics partition {0} does not exist (the fleet.metrics worker creates partitions ahead; check its errors)")]
    PartitionMissing(String),
    /// A stored row cannot be read back.
    #[error("corrupt stored row: {0}")]
    Corrupt(String),
    /// The backend failed (I/O, connection, lock timeout); the call may be retried.
    #[error("fleet store backend: {0}")]
    Backend(String),
}

impl FleetError {
    /// An invalid-field error.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FleetError::Invalid { field: field.into(), problem: problem.into() }
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FleetError::Backend(_))
    }
}

impl From<sqlx::Error> for FleetError {
    fn from(e: sqlx::Error) -> Self {
        FleetError::Backend(e.to_string())
    }
}

impl From<gpufleet_auth::StoreError> for FleetError {
    fn from(e: gpufleet_auth::StoreError) -> Self {
        FleetError::Backend(format!("lease store: {e}"))
    }
}
