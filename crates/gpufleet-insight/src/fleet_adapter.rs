//! The [`crate::source`] traits over `gpufleet-fleet`: [`FleetSource`] (the registry, the latest
//! metrics and health components, stored metric series), [`FleetSystem`] (missing partition,
//! supervisor worker statuses) and [`FleetWatchSource`] (the watchdog fed by the health worker's
//! check batches, so it sends no request of its own).
//!
//! - **Reports**: the fleet keeps the latest metrics sample per host but not the latest health
//!   report; [`CheckCacheWorker`] keeps the components that are not `ok` of each host's last
//!   answered check from `Fleet::subscribe_checks` (so alerts see unhealthy containers and
//!   critical components). `ok` components are not kept: nothing reads them, and they were most
//!   of this cache (7.8 KB of RSS per simulated 8-GPU host, against ~3 KB now); a host whose
//!   components are all `ok` keeps a report with none, which still says that it answered.
//! - **Inactive** hosts are left out of [`FleetView::hosts`] (they are decommissioned or not yet
//!   installed); `host(id)` still finds them.
//! - **Inputs the fleet does not model yet** are read from host tags: `cleanup.last_ms` (epoch ms
//!   of the last cleanup job), `cleanup.freed_7d_bytes` (bytes it freed in the last 7 days) and
//!   `models.largest_bytes` (size of the largest model configured for the host).

use crate::alert::HostHealth;
use crate::source::{FleetView, HostView, MetricHistory, SourceError, SystemView};
use crate::watchdog::{containers_of, WatchSource, WatchedHost, WatchdogSettings};
use async_trait::async_trait;
use gpufleet_agent::wire::{Component, HealthReport, Status};
use gpufleet_fleet::{CheckResult, Fleet, FleetError, Host, HostFilter, HostState, HostStatus};
use gpufleet_runtime::supervisor::StatusHandle;
use gpufleet_runtime::{Worker, WorkerContext, WorkerError, WorkerStatus};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tracing::warn;

/// Tag holding the last cleanup job's end, epoch ms.
pub const TAG_LAST_CLEANUP_MS: &str = "cleanup.last_ms";
/// Tag holding the bytes freed by cleanup jobs in the last 7 days.
pub const TAG_FREED_7D_BYTES: &str = "cleanup.freed_7d_bytes";
/// Tag holding the size of the largest configured model, bytes.
pub const TAG_LARGEST_MODEL_BYTES: &str = "models.largest_bytes";
/// How long [`FleetWatchSource`] reuses its host list.
pub const HOST_LIST_TTL: Duration = Duration::from_secs(10);

fn source_error(what: &str, e: FleetError) -> SourceError {
    match e {
        FleetError::Invalid { field, problem } => SourceError::Invalid { field, reason: problem },
        other => SourceError::Backend { what: what.to_owned(), error: other.to_string() },
    }
}

/// The host state as this crate names it.
pub fn health_of(s: HostState) -> HostHealth {
    match s {
        HostState::Healthy => HostHealth::Healthy,
        HostState::Degraded => HostHealth::Degraded,
        HostState::Critical => HostHealth::Critical,
        HostState::Unreachable => HostHealth::Unreachable,
        HostState::Unknown => HostHealth::Unknown,
    }
}

/// The components that are not `ok` of each host's last answered check.
#[derive(Debug, Default)]
pub struct ReportCache(RwLock<HashMap<i64, Arc<HealthReport>>>);

impl ReportCache {
    /// Records one batch of checks.
    pub fn record(&self, checks: &[CheckResult]) {
        let mut map = self.0.write();
        for c in checks {
            if c.answered() {
                let mut problems: Vec<Component> = c.components.iter().filter(|x| x.status != Status::Ok).cloned().collect();
                problems.shrink_to_fit();
                map.insert(c.host_id, Arc::new(HealthReport::new(c.host_id.to_string(), "", c.at_ms, problems)));
            } else {
                map.remove(&c.host_id);
            }
        }
    }

    /// The last report of a host: its components that are not `ok` (with their detail).
    pub fn get(&self, host_id: i64) -> Option<Arc<HealthReport>> {
        self.0.read().get(&host_id).cloned()
    }
}

/// Fills a [`ReportCache`] from the fleet's check batches.
pub struct CheckCacheWorker {
    rx: broadcast::Receiver<Arc<[CheckResult]>>,
    cache: Arc<ReportCache>,
}

#[async_trait]
impl Worker for CheckCacheWorker {
    fn name(&self) -> String {
        "insight.checks".into()
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        loop {
            let batch = tokio::select! {
                _ = ctx.shutdown.wait() => return Ok(()),
                b = self.rx.recv() => b,
            };
            match batch {
                Ok(b) => self.cache.record(&b),
                Err(broadcast::error::RecvError::Lagged(n)) => warn!(skipped = n, "check cache fell behind; the next cycle fills it again"),
                Err(broadcast::error::RecvError::Closed) => {
                    ctx.shutdown.wait().await;
                    return Ok(());
                }
            }
        }
    }
}

/// The registry, latest samples and stored series of a [`Fleet`].
pub struct FleetSource {
    fleet: Arc<Fleet>,
    reports: Arc<ReportCache>,
}

impl FleetSource {
    /// The source and the worker that keeps its health components current (spawn it).
    pub fn new(fleet: Arc<Fleet>) -> (Arc<Self>, CheckCacheWorker) {
        let reports = Arc::new(ReportCache::default());
        let worker = CheckCacheWorker { rx: fleet.subscribe_checks(), cache: reports.clone() };
        (Arc::new(Self { fleet, reports }), worker)
    }

    fn view(&self, h: Host) -> HostView {
        let tag = |k: &str| h.tags.get(k).and_then(|v| v.trim().parse::<i64>().ok());
        let utag = |k: &str| h.tags.get(k).and_then(|v| v.trim().parse::<u64>().ok());
        HostView {
            id: h.id.to_string(),
            metrics: self.fleet.latest_metrics(h.id),
            report: self.reports.get(h.id),
            last_cleanup_ms: tag(TAG_LAST_CLEANUP_MS),
            freed_bytes_7d: utag(TAG_FREED_7D_BYTES),
            largest_model_bytes: utag(TAG_LARGEST_MODEL_BYTES),
            maintenance: h.status == HostStatus::Maintenance,
            watchdog: h.watchdog,
            state: health_of(h.state),
            agent_url: Some(h.agent_url),
            groups: h.groups,
            name: h.name,
        }
    }
}

#[async_trait]
impl FleetView for FleetSource {
    async fn hosts(&self) -> Result<Vec<HostView>, SourceError> {
        let hosts = self.fleet.hosts(&HostFilter::default()).await.map_err(|e| source_error("listing hosts", e))?;
        Ok(hosts.into_iter().filter(|h| h.status != HostStatus::Inactive).map(|h| self.view(h)).collect())
    }

    async fn host(&self, id: &str) -> Result<Option<HostView>, SourceError> {
        match self.fleet.resolve(id).await {
            Ok(h) => Ok(Some(self.view(h))),
            Err(FleetError::NotFound(_)) => Ok(None),
            Err(e) => Err(source_error("reading a host", e)),
        }
    }
}

#[async_trait]
impl MetricHistory for FleetSource {
    async fn range(&self, host: &str, metric: &str, start_ms: i64, end_ms: i64) -> Result<Vec<(i64, f64)>, SourceError> {
        let id = match host.parse::<i64>() {
            Ok(id) => id,
            Err(_) => match self.fleet.resolve(host).await {
                Ok(h) => h.id,
                Err(FleetError::NotFound(_)) => return Ok(Vec::new()),
                Err(e) => return Err(source_error("reading a host", e)),
            },
        };
        self.fleet.store().host_metrics_range(id, metric, start_ms, end_ms).await.map_err(|e| source_error("reading host metrics", e))
    }
}

/// Partitions and worker statuses for the built-in rules.
pub struct FleetSystem {
    fleet: Arc<Fleet>,
    statuses: StatusHandle,
}

impl FleetSystem {
    /// Over `fleet` and the supervisor's `statuses`.
    pub fn new(fleet: Arc<Fleet>, statuses: StatusHandle) -> Self {
        Self { fleet, statuses }
    }
}

#[async_trait]
impl SystemView for FleetSystem {
    async fn missing_partitions(&self) -> Result<Vec<String>, SourceError> {
        let now = gpufleet_core::time::now_ms();
        Ok(match self.fleet.partition_problem(now).await {
            None => Vec::new(),
            Some(_) => vec![gpufleet_fleet::month::partition_name(gpufleet_fleet::month::month_of(now))],
        })
    }

    fn workers(&self) -> Vec<WorkerStatus> {
        self.statuses.snapshot()
    }
}

/// The watchdog's observations from the health worker's check batches.
pub struct FleetWatchSource {
    fleet: Arc<Fleet>,
    rx: broadcast::Receiver<Arc<[CheckResult]>>,
    settings: WatchdogSettings,
    hosts: HashMap<i64, Host>,
    listed: Option<Instant>,
}

impl FleetWatchSource {
    /// A source subscribed to `fleet`'s checks, keeping only hosts opted in under `settings`.
    pub fn new(fleet: Arc<Fleet>, settings: WatchdogSettings) -> Self {
        let rx = fleet.subscribe_checks();
        Self { fleet, rx, settings, hosts: HashMap::new(), listed: None }
    }

    async fn refresh(&mut self) {
        if self.listed.is_some_and(|t| t.elapsed() < HOST_LIST_TTL) {
            return;
        }
        match self.fleet.hosts(&HostFilter::default()).await {
            Ok(list) => {
                self.hosts = list.into_iter().map(|h| (h.id, h)).collect();
                self.listed = Some(Instant::now());
            }
            Err(error) => warn!(%error, "watchdog cannot list hosts; using the last list"),
        }
    }

    fn watched(&self, c: &CheckResult) -> Option<WatchedHost> {
        if !c.answered() {
            return None;
        }
        let h = self.hosts.get(&c.host_id)?;
        let w = WatchedHost {
            id: h.id.to_string(),
            name: h.name.clone(),
            groups: h.groups.clone(),
            maintenance: h.status == HostStatus::Maintenance,
            opted_in: h.watchdog,
            agent_url: h.agent_url.clone(),
            containers: Vec::new(),
        };
        if !self.settings.opted_in(&w) {
            return None;
        }
        let report = HealthReport::new(h.name.clone(), "", c.at_ms, c.components.clone());
        Some(WatchedHost { containers: containers_of(&report), ..w })
    }
}

#[async_trait]
impl WatchSource for FleetWatchSource {
    async fn next(&mut self) -> Option<Vec<WatchedHost>> {
        loop {
            match self.rx.recv().await {
                Ok(batch) => {
                    self.refresh().await;
                    let watched: Vec<WatchedHost> = batch.iter().filter_map(|c| self.watched(c)).collect();
                    if !watched.is_empty() {
                        return Some(watched);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => warn!(skipped = n, "watchdog fell behind the health checks"),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Insight;
    use gpufleet_agent::wire::ComponentKind;

    fn component(name: &str, kind: ComponentKind, status: Status) -> Component {
        Component { name: name.into(), kind, status, message: format!("{name} is {status:?}"), detail: serde_json::json!({"n": name}) }
    }

    fn check(host_id: i64, components: Vec<Component>, error: Option<&str>) -> CheckResult {
        let state = if error.is_some() { HostState::Unreachable } else { HostState::Healthy };
        CheckResult { host_id, at_ms: 7, state, latency_ms: 1.0, components, error: error.map(str::to_owned), consecutive_failures: 0 }
    }

    #[test]
    fn the_cache_keeps_what_is_not_ok_and_alerts_see_the_same() {
        let all = vec![
            component("cpu", ComponentKind::Cpu, Status::Ok),
            component("gpu:3", ComponentKind::Gpu, Status::Critical),
            component("container:web", ComponentKind::Container, Status::Warn),
            component("container:db", ComponentKind::Container, Status::Ok),
        ];
        let cache = ReportCache::default();
        cache.record(&[check(1, all.clone(), None), check(2, vec![component("cpu", ComponentKind::Cpu, Status::Ok)], None), check(3, all.clone(), None)]);
        let kept = cache.get(1).expect("answered");
        assert_eq!(kept.components.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["gpu:3", "container:web"]);
        assert_eq!((kept.status, kept.time_ms, kept.components[0].detail.clone()), (Status::Critical, 7, serde_json::json!({"n": "gpu:3"})));
        let healthy = cache.get(2).expect("an all-ok host still has a report");
        assert!(healthy.components.is_empty() && healthy.status == Status::Ok);
        cache.record(&[check(3, Vec::new(), Some("timeout"))]);
        assert!(cache.get(3).is_none(), "a host that did not answer has no report");

        // What the alert engine reads is the same as from the full report.
        let view = |report: Arc<HealthReport>| HostView { id: "1".into(), name: "h".into(), state: HostHealth::Critical, report: Some(report), ..HostView::default() };
        let full = Insight::observe_host(&view(Arc::new(HealthReport::new("1", "", 7, all))), None, 10);
        let cached = Insight::observe_host(&view(kept), None, 10);
        assert_eq!(cached, full);
        assert_eq!(cached.unhealthy_containers, Some(vec!["web".to_owned()]));
        assert_eq!(cached.critical_reasons.len(), 1);
    }
}
