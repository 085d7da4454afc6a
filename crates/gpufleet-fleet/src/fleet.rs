//! [`Fleet`]: the facade the API, the CLI and the insight crate use — registry operations by id or
//! name, the summary, history and events, worker status, the event broadcasts and the latest host
//! metrics (a compact copy per host, [`crate::latest`]) — and [`FleetWorkers`], the three workers the binary spawns under its supervisor.

use crate::agent_http::AgentHttp;
use crate::check::{agent_client, Checker, IDLE_TIMEOUT};
use crate::config::{AgentToken, FleetSettings};
use crate::error::FleetError;
use crate::health_worker::HealthWorker;
use crate::maintenance_worker::{MaintenanceWorker, MAINTENANCE_INTERVAL};
use crate::metrics_worker::MetricsWorker;
use crate::model::{CheckResult, Host, StateChange};
use crate::spec::{HostInput, HostPatch, HostSpec};
use crate::stats::{WorkerReport, WorkerStats};
use crate::store::{EventQuery, FleetStore, HistoryQuery, HostFilter};
use crate::summary::{summarize, FleetSummary};
use gpufleet_agent::wire::HostMetrics;
use gpufleet_auth::LeaseStore;
use gpufleet_core::time::now_ms;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast;
use tracing::info;

/// Capacity of the state-change broadcast; a subscriber further behind loses the oldest events
/// (`RecvError::Lagged`) and can read them back from [`Fleet::events`].
pub const EVENT_CAPACITY: usize = 4096;
/// Capacity of the check-batch broadcast (batches of up to 1,000 checks; a subscriber further
/// behind gets `RecvError::Lagged` rather than holding the server's memory).
pub const CHECK_BATCH_CAPACITY: usize = 16;

/// The workers of one [`Fleet`]; spawn each under the supervisor.
pub struct FleetWorkers {
    /// `fleet.health`.
    pub health: HealthWorker,
    /// `fleet.metrics`.
    pub metrics: MetricsWorker,
    /// `fleet.maintenance`.
    pub maintenance: MaintenanceWorker,
}

/// The fleet registry and its workers' shared state.
pub struct Fleet {
    store: Arc<dyn FleetStore>,
    leases: Arc<dyn LeaseStore>,
    settings: FleetSettings,
    client: reqwest::Client,
    http: Arc<AgentHttp>,
    holder: String,
    events: broadcast::Sender<StateChange>,
    checks: broadcast::Sender<Arc<[CheckResult]>>,
    health: WorkerStats,
    metrics: WorkerStats,
    maintenance: WorkerStats,
    latest: RwLock<HashMap<i64, Arc<HostMetrics>>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("holder", &self.holder).field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Fleet {
    /// The fleet and its workers, without touching the store. `leases` decides which replica runs
    /// each cycle: the metadata store's leases when replicas share a database,
    /// [`crate::LocalLeases`] for a single server.
    pub fn new(store: Arc<dyn FleetStore>, leases: Arc<dyn LeaseStore>, settings: FleetSettings) -> Result<(Arc<Fleet>, FleetWorkers), FleetError> {
        let client = agent_client(&settings)?;
        let http = Arc::new(AgentHttp::new(IDLE_TIMEOUT, settings.agent_keepalive));
        let holder = format!("pid{}-{:016x}", std::process::id(), rand::random::<u64>());
        let fleet = Arc::new(Fleet {
            health: WorkerStats::new(crate::health_worker::HEALTH_LEASE, settings.health_interval),
            metrics: WorkerStats::new(crate::metrics_worker::METRICS_LEASE, settings.metrics_interval),
            maintenance: WorkerStats::new(crate::maintenance_worker::MAINTENANCE_LEASE, MAINTENANCE_INTERVAL),
            store,
            leases,
            settings,
            client,
            http,
            holder,
            events: broadcast::channel(EVENT_CAPACITY).0,
            checks: broadcast::channel(CHECK_BATCH_CAPACITY).0,
            latest: RwLock::default(),
        });
        let workers = FleetWorkers {
            health: HealthWorker::new(fleet.clone()),
            metrics: MetricsWorker::new(fleet.clone()),
            maintenance: MaintenanceWorker::new(fleet.clone()),
        };
        Ok((fleet, workers))
    }

    /// [`Fleet::new`], then creates this month's and next month's host metrics partitions when
    /// missing (so `/ready` passes before the first maintenance round) and registers (or
    /// updates, by name) the hosts of the config.
    pub async fn open(store: Arc<dyn FleetStore>, leases: Arc<dyn LeaseStore>, settings: FleetSettings) -> Result<(Arc<Fleet>, FleetWorkers), FleetError> {
        let (fleet, workers) = Self::new(store, leases, settings)?;
        fleet.store.ensure_partitions(now_ms(), 1).await?;
        let changed = fleet.upsert_config_hosts().await?;
        if changed > 0 {
            info!(changed, "config hosts registered or updated");
        }
        Ok((fleet, workers))
    }

    /// Registers the config's hosts, or updates the registry fields of those already registered
    /// under their name. Returns how many were created or changed.
    pub async fn upsert_config_hosts(&self) -> Result<usize, FleetError> {
        let mut changed = 0;
        for spec in &self.settings.hosts {
            let existing = match self.store.create_host(spec, now_ms()).await {
                Ok(_) => {
                    changed += 1;
                    continue;
                }
                Err(FleetError::DuplicateName(_)) => self.store.get_host_by_name(&spec.name).await?,
                Err(e) => return Err(e),
            };
            if let Some(h) = existing.filter(|h| HostSpec::of(h) != *spec) {
                self.store.update_host(h.id, spec, now_ms()).await?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn FleetStore> {
        &self.store
    }

    /// The lease store.
    pub fn leases(&self) -> &Arc<dyn LeaseStore> {
        &self.leases
    }

    /// The settings.
    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    /// The HTTP client shared with the agents (reuse it to call agents, e.g. for restarts).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A checker over this fleet's shared clients.
    pub fn checker(&self) -> Checker {
        Checker::new(self.http.clone(), self.client.clone(), &self.settings)
    }

    /// The shared client of `http://` agents.
    pub fn agent_http(&self) -> &Arc<AgentHttp> {
        &self.http
    }

    /// The agent token from the config.
    pub fn agent_token(&self) -> Option<&AgentToken> {
        self.settings.agent_token.as_ref()
    }

    /// This replica's lease holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Registers a host from a client's input.
    pub async fn register(&self, input: &HostInput) -> Result<Host, FleetError> {
        self.store.create_host(&input.validate()?, now_ms()).await
    }

    /// A host by id (all digits) or name.
    pub async fn resolve(&self, id_or_name: &str) -> Result<Host, FleetError> {
        let found = match id_or_name.parse::<i64>() {
            Ok(id) => self.store.get_host(id).await?,
            Err(_) => self.store.get_host_by_name(id_or_name).await?,
        };
        found.ok_or_else(|| FleetError::NotFound(format!("{id_or_name:?} (GET /api/v1/hosts lists the registered hosts)")))
    }

    /// Applies a patch to a host.
    pub async fn update(&self, id_or_name: &str, patch: &HostPatch) -> Result<Host, FleetError> {
        let host = self.resolve(id_or_name).await?;
        let spec: HostSpec = patch.apply(HostSpec::of(&host))?;
        if spec == HostSpec::of(&host) {
            return Ok(host);
        }
        self.store.update_host(host.id, &spec, now_ms()).await
    }

    /// Removes a host (and its history); returns it as it was.
    pub async fn remove(&self, id_or_name: &str) -> Result<Host, FleetError> {
        let host = self.resolve(id_or_name).await?;
        if !self.store.delete_host(host.id).await? {
            return Err(FleetError::NotFound(format!("{id_or_name:?}")));
        }
        self.latest.write().remove(&host.id);
        Ok(host)
    }

    /// Hosts passing `filter`.
    pub async fn hosts(&self, filter: &HostFilter) -> Result<Vec<Host>, FleetError> {
        self.store.list_hosts(filter).await
    }

    /// A host and its checks, newest first.
    pub async fn history(&self, id_or_name: &str, query: &HistoryQuery) -> Result<(Host, Vec<CheckResult>), FleetError> {
        let host = self.resolve(id_or_name).await?;
        let checks = self.store.health_history(host.id, query).await?;
        Ok((host, checks))
    }

    /// State-change events, newest first.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<StateChange>, FleetError> {
        self.store.events(query).await
    }

    /// Counts by state, status and group, and the top problems.
    pub async fn summary(&self) -> Result<FleetSummary, FleetError> {
        summarize(self.store.as_ref(), &self.store.list_hosts(&HostFilter::default()).await?).await
    }

    /// The status of the three fleet workers on this replica.
    pub fn workers_status(&self) -> Vec<WorkerReport> {
        vec![self.health.report(), self.metrics.report(), self.maintenance.report()]
    }

    /// State changes as they happen (sent after they are stored; the copies have `id` 0).
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.events.subscribe()
    }

    /// Every batch of checks with all components (the watchdog's input), after it is stored.
    pub fn subscribe_checks(&self) -> broadcast::Receiver<Arc<[CheckResult]>> {
        self.checks.subscribe()
    }

    /// The last host metrics sample read from a host by this replica, as the compact copy of
    /// [`crate::latest::compact`]: every number, disk, GPU reading, container and model server
    /// status the score card and alert rules read, without the strings nothing on the server
    /// reads (GPU uuids, container images, …); the full sample is in the store.
    pub fn latest_metrics(&self, host_id: i64) -> Option<Arc<HostMetrics>> {
        self.latest.read().get(&host_id).cloned()
    }

    /// `Some(problem)` when the current month's metrics partition is missing or cannot be checked
    /// (for `/ready` and the partition alert).
    pub async fn partition_problem(&self, now_ms: i64) -> Option<String> {
        match self.store.partition_status(now_ms).await {
            Ok(p) => p,
            Err(e) => Some(format!("host metrics partitions cannot be checked: {e}")),
        }
    }

    pub(crate) fn health_stats(&self) -> &WorkerStats {
        &self.health
    }

    pub(crate) fn metrics_stats(&self) -> &WorkerStats {
        &self.metrics
    }

    pub(crate) fn maintenance_stats(&self) -> &WorkerStats {
        &self.maintenance
    }

    /// Stores a batch of checks and its state changes, then broadcasts both.
    pub(crate) async fn record(&self, results: Vec<CheckResult>, events: Vec<StateChange>) -> Result<(), FleetError> {
        self.store.record_checks(&results).await?;
        self.store.insert_events(&events).await?;
        for e in events {
            // No subscriber is not an error.
            let _ = self.events.send(e);
        }
        let _ = self.checks.send(results.into());
        Ok(())
    }

    /// Stores host metrics and keeps the compact copy of each host's latest sample.
    pub(crate) async fn store_metrics(&self, batch: Vec<(i64, Arc<HostMetrics>)>) -> Result<usize, FleetError> {
        let n = self.store.write_host_metrics(&batch).await?;
        // Built before taking the lock; the full samples are dropped with `batch`.
        let compact: Vec<(i64, Arc<HostMetrics>)> = batch.iter().map(|(id, m)| (*id, Arc::new(crate::latest::compact(m)))).collect();
        self.latest.write().extend(compact);
        Ok(n)
    }
}
