//! [`FleetStore`]: where the registry, the health-check history, state-change events and host
//! metrics live. One implementation per file: [`SqliteFleetStore`] (the embedded default, its own
//! `fleet.db`) and [`PostgresFleetStore`] (one schema of a shared database, for several
//! replicas). Both pass the conformance suite in [`crate::testsuite`].
//!
//! # Contract
//! - Host names are unique; ids are assigned by the store and never reused.
//! - [`FleetStore::record_checks`] is one transaction: every host row of the batch gets its new
//!   state, `last_check_ms`, `consecutive_failures` and (when it answered) `last_seen_ms`, and one
//!   history row per check is inserted. History rows keep only the components that are not `ok`.
//! - Host metrics go to monthly partitions (`host_metrics_YYYY_MM`, by sample time, UTC):
//!   PostgreSQL partitions of one partitioned table, SQLite one table per month. A write for a
//!   month whose partition does not exist fails with [`FleetError::PartitionMissing`] and writes
//!   nothing; [`FleetStore::ensure_partitions`] creates them ahead.
//!
//! # Layout
//! - `rows.rs`: row ↔ type conversions shared by both backends.
//! - `sqlite.rs`, `postgres.rs`: the backends.

mod postgres;
mod rows;
mod sqlite;

pub use postgres::PostgresFleetStore;
pub use sqlite::SqliteFleetStore;

use crate::error::FleetError;
use crate::model::{CheckResult, Host, HostState, HostStatus, StateChange};
use crate::spec::HostSpec;
use async_trait::async_trait;
use gpufleet_agent::wire::HostMetrics;
use std::sync::Arc;

/// Order of [`FleetStore::list_hosts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostOrder {
    /// By name.
    #[default]
    Name,
    /// Least recently checked first (never checked before all), then by id: the health worker's
    /// order.
    StaleFirst,
}

/// Which hosts [`FleetStore::list_hosts`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFilter {
    /// Only hosts in this group.
    pub group: Option<String>,
    /// Only hosts with this status.
    pub status: Option<HostStatus>,
    /// Only hosts in one of these states (`None`: any).
    pub states: Option<Vec<HostState>>,
    /// Order.
    pub order: HostOrder,
}

impl HostFilter {
    /// Whether `h` passes the group and state filters (stores filter `status` in SQL).
    pub(crate) fn keeps(&self, h: &Host) -> bool {
        self.group.as_ref().is_none_or(|g| h.groups.contains(g)) && self.states.as_ref().is_none_or(|s| s.contains(&h.state))
    }
}

/// A health-history query of one host: newest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only checks at or after this time (epoch ms).
    pub since_ms: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        Self { since_ms: None, limit: 100 }
    }
}

/// A state-change query: newest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this host's events.
    pub host_id: Option<i64>,
    /// Only events at or after this time (epoch ms).
    pub since_ms: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

impl Default for EventQuery {
    fn default() -> Self {
        Self { host_id: None, since_ms: None, limit: 100 }
    }
}

/// The registry, health history, events and host metrics.
#[async_trait]
pub trait FleetStore: Send + Sync + 'static {
    /// Registers a host (state `unknown`, never checked). [`FleetError::DuplicateName`] when the
    /// name is taken.
    async fn create_host(&self, spec: &HostSpec, now_ms: i64) -> Result<Host, FleetError>;

    /// One host by id.
    async fn get_host(&self, id: i64) -> Result<Option<Host>, FleetError>;

    /// One host by name.
    async fn get_host_by_name(&self, name: &str) -> Result<Option<Host>, FleetError>;

    /// Replaces a host's registry fields (its health fields stay). [`FleetError::NotFound`] for
    /// an unknown id, [`FleetError::DuplicateName`] when renaming onto a taken name.
    async fn update_host(&self, id: i64, spec: &HostSpec, now_ms: i64) -> Result<Host, FleetError>;

    /// Removes a host and its health history (its state-change events stay). Whether it existed.
    async fn delete_host(&self, id: i64) -> Result<bool, FleetError>;

    /// Hosts passing `filter`, in its order.
    async fn list_hosts(&self, filter: &HostFilter) -> Result<Vec<Host>, FleetError>;

    /// Records a batch of checks in one transaction (see the module contract). Checks of hosts
    /// deleted meanwhile update nothing.
    async fn record_checks(&self, checks: &[CheckResult]) -> Result<(), FleetError>;

    /// One host's checks, newest first.
    async fn health_history(&self, host_id: i64, query: &HistoryQuery) -> Result<Vec<CheckResult>, FleetError>;

    /// Deletes checks and state-change events older than `older_than_ms`; returns how many rows
    /// went.
    async fn apply_history_retention(&self, older_than_ms: i64) -> Result<u64, FleetError>;

    /// Stores state-change events (their `id` is assigned here; the given one is ignored).
    async fn insert_events(&self, events: &[StateChange]) -> Result<(), FleetError>;

    /// State-change events, newest first.
    async fn events(&self, query: &EventQuery) -> Result<Vec<StateChange>, FleetError>;

    /// Stores host metric samples `(host_id, sample)`, each at its `time_ms`, in the partition of
    /// its month. Returns the rows written.
    async fn write_host_metrics(&self, samples: &[(i64, Arc<HostMetrics>)]) -> Result<usize, FleetError>;

    /// One metric of one host in `[start_ms, end_ms)`, oldest first, samples without a reading
    /// left out. Names: [`crate::metric_row`]; an unknown name is [`FleetError::Invalid`].
    async fn host_metrics_range(&self, host_id: i64, metric: &str, start_ms: i64, end_ms: i64) -> Result<Vec<(i64, f64)>, FleetError>;

    /// Creates the partitions of `now_ms`'s month and the `months_ahead` after it when missing;
    /// returns the names it created. Safe to call from several replicas at once.
    async fn ensure_partitions(&self, now_ms: i64, months_ahead: u32) -> Result<Vec<String>, FleetError>;

    /// The names of the existing partitions, oldest first.
    async fn partitions(&self) -> Result<Vec<String>, FleetError>;

    /// Drops whole monthly partitions that end at or before `cutoff_ms`; returns their names.
    async fn drop_partitions_before(&self, cutoff_ms: i64) -> Result<Vec<String>, FleetError>;

    /// `Some(problem)` when the partition of `now_ms`'s month is missing (samples cannot be
    /// stored), `None` when it exists.
    async fn partition_status(&self, now_ms: i64) -> Result<Option<String>, FleetError> {
        let want = crate::month::partition_name(crate::month::month_of(now_ms));
        if self.partitions().await?.contains(&want) {
            return Ok(None);
        }
        Ok(Some(format!(
            "host metrics partition {want} for the current month is missing: host metrics cannot be stored \
             (the fleet.metrics worker creates it ahead; see its last error)"
        )))
    }
}
