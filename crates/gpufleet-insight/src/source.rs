//! What this crate reads, as small traits the fleet wiring implements: [`FleetView`] (hosts with
//! their state, last health report and metrics), [`MetricHistory`] (stored host metric series),
//! [`SystemView`] (missing partitions, worker statuses). [`crate::fleet_adapter`] implements them
//! over `gpufleet-fleet`; tests implement them over plain data ([`StaticFleet`]).

use crate::alert::HostHealth;
use async_trait::async_trait;
use gpufleet_agent::wire::{HealthReport, HostMetrics};
use gpufleet_runtime::WorkerStatus;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use thiserror::Error;

/// A read that failed.
#[derive(Debug, Error)]
pub enum SourceError {
    /// The caller asked for something that cannot exist (an unknown metric name).
    #[error("{field}: {reason}")]
    Invalid {
        /// The parameter.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The backing store failed.
    #[error("{what}: {error}")]
    Backend {
        /// What was being read.
        what: String,
        /// The failure.
        error: String,
    },
}

/// One registered host with what is known about it now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostView {
    /// Registry id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Maintenance flag.
    pub maintenance: bool,
    /// Opted in to the watchdog on the host itself.
    pub watchdog: bool,
    /// Health state.
    pub state: HostHealth,
    /// Agent base URL (`http://10.0.0.7:9400`).
    pub agent_url: Option<String>,
    /// The last health report (or its components that are not `ok`).
    pub report: Option<Arc<HealthReport>>,
    /// The last metrics sample.
    pub metrics: Option<Arc<HostMetrics>>,
    /// When the last cleanup job finished, epoch ms.
    pub last_cleanup_ms: Option<i64>,
    /// Size of the largest model configured for this host, bytes.
    pub largest_model_bytes: Option<u64>,
    /// Bytes freed by cleanup jobs in the last 7 days (`None`: not recorded).
    pub freed_bytes_7d: Option<u64>,
}

/// The registry as this crate sees it.
#[async_trait]
pub trait FleetView: Send + Sync + 'static {
    /// Every registered host.
    async fn hosts(&self) -> Result<Vec<HostView>, SourceError>;
    /// One host by id (or name).
    async fn host(&self, id: &str) -> Result<Option<HostView>, SourceError>;
}

/// Stored host metric series, by the names of [`crate::metrics`].
#[async_trait]
pub trait MetricHistory: Send + Sync + 'static {
    /// `(ts_ms, value)` points of `metric` for `host` in `[start_ms, end_ms)`, any order.
    async fn range(&self, host: &str, metric: &str, start_ms: i64, end_ms: i64) -> Result<Vec<(i64, f64)>, SourceError>;
}

/// The rest of the server the built-in rules watch.
#[async_trait]
pub trait SystemView: Send + Sync + 'static {
    /// Names of metrics partitions that should exist now and do not.
    async fn missing_partitions(&self) -> Result<Vec<String>, SourceError>;
    /// Supervisor snapshots of the background workers.
    fn workers(&self) -> Vec<WorkerStatus>;
}

type Series = Vec<(i64, f64)>;

/// A fleet held in memory: tests, the demo, and a cache the wiring may fill.
#[derive(Debug, Default)]
pub struct StaticFleet {
    hosts: RwLock<BTreeMap<String, HostView>>,
    series: RwLock<BTreeMap<(String, String), Series>>,
    partitions: RwLock<Vec<String>>,
    workers: RwLock<Vec<WorkerStatus>>,
}

impl StaticFleet {
    /// An empty fleet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds or replaces a host.
    pub fn put_host(&self, h: HostView) {
        self.hosts.write().insert(h.id.clone(), h);
    }

    /// Changes a host in place; whether it exists.
    pub fn update_host(&self, id: &str, f: impl FnOnce(&mut HostView)) -> bool {
        self.hosts.write().get_mut(id).map(f).is_some()
    }

    /// Removes a host.
    pub fn remove_host(&self, id: &str) {
        self.hosts.write().remove(id);
    }

    /// Sets a metric series.
    pub fn put_series(&self, host: &str, metric: &str, points: Vec<(i64, f64)>) {
        self.series.write().insert((host.to_owned(), metric.to_owned()), points);
    }

    /// Sets the missing partitions.
    pub fn set_missing_partitions(&self, p: Vec<String>) {
        *self.partitions.write() = p;
    }

    /// Sets the worker statuses.
    pub fn set_workers(&self, w: Vec<WorkerStatus>) {
        *self.workers.write() = w;
    }
}

#[async_trait]
impl FleetView for StaticFleet {
    async fn hosts(&self) -> Result<Vec<HostView>, SourceError> {
        Ok(self.hosts.read().values().cloned().collect())
    }
    async fn host(&self, id: &str) -> Result<Option<HostView>, SourceError> {
        let hosts = self.hosts.read();
        Ok(hosts.get(id).or_else(|| hosts.values().find(|h| h.name == id)).cloned())
    }
}

#[async_trait]
impl MetricHistory for StaticFleet {
    async fn range(&self, host: &str, metric: &str, start_ms: i64, end_ms: i64) -> Result<Vec<(i64, f64)>, SourceError> {
        let series = self.series.read();
        let pts = series.get(&(host.to_owned(), metric.to_owned())).map(|v| v.iter().copied().filter(|(t, _)| *t >= start_ms && *t < end_ms).collect());
        Ok(pts.unwrap_or_default())
    }
}

#[async_trait]
impl SystemView for StaticFleet {
    async fn missing_partitions(&self) -> Result<Vec<String>, SourceError> {
        Ok(self.partitions.read().clone())
    }
    fn workers(&self) -> Vec<WorkerStatus> {
        self.workers.read().clone()
    }
}
