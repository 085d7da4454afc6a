//! [`WatchdogWorker`]: takes batches of [`WatchedHost`] from a [`WatchSource`], asks the
//! [`Watchdog`] what is due, restarts through a [`Restarter`], and reports every restart as an
//! [`AuditEvent`] (to the audit sink the wiring gives) and a [`WatchdogEvent`] (broadcast).
//! Skips are broadcast once per container and reason, not every cycle.
//!
//! [`PollSource`] is a source that reads opted-in hosts' `GET /health` itself every interval;
//! the fleet wiring may instead feed the health worker's check batches (same data, no extra
//! requests).

use super::agent::{containers_of, RestartFailed, Restarter};
use super::decide::{Decision, SkipReason, WatchedHost, Watchdog};
use super::WatchdogSettings;
use crate::source::FleetView;
use crate::Clock;
use async_trait::async_trait;
use futures::StreamExt;
use gpufleet_agent::wire::HealthReport;
use gpufleet_runtime::{Worker, WorkerContext, WorkerError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

/// One audited watchdog action, for the audit log (the wiring maps it to `gpufleet-auth`'s
/// `AuditEntry::new(time_ms, action, outcome)` with `target`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Epoch ms.
    pub time_ms: i64,
    /// Always `watchdog.container_restart`.
    pub action: String,
    /// `<host name>/<container name>`.
    pub target: String,
    /// Whether the agent restarted it.
    pub success: bool,
    /// Failure streak and, on failure, the error.
    pub detail: String,
}

/// Where audit events go.
pub type AuditSink = Arc<dyn Fn(AuditEvent) + Send + Sync>;

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WatchdogEventKind {
    /// Restarted through the agent.
    Restarted,
    /// The agent did not restart it.
    RestartFailed {
        /// Why.
        error: String,
    },
    /// Due but left alone.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
}

/// A watchdog event (broadcast to subscribers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogEvent {
    /// Epoch ms.
    pub time_ms: i64,
    /// Host id.
    pub host_id: String,
    /// Host name.
    pub host: String,
    /// Container name.
    pub container: String,
    /// Its failure streak.
    pub failures: u32,
    /// What happened.
    #[serde(flatten)]
    pub kind: WatchdogEventKind,
}

/// Gives the worker its observations.
#[async_trait]
pub trait WatchSource: Send + 'static {
    /// The next batch (waits for it); `None` when no more will come.
    async fn next(&mut self) -> Option<Vec<WatchedHost>>;
}

/// Reads `GET {agent_url}/health` of every opted-in host every `interval`.
pub struct PollSource {
    fleet: Arc<dyn FleetView>,
    settings: WatchdogSettings,
    client: reqwest::Client,
    tick: tokio::time::Interval,
}

impl PollSource {
    /// A source over `fleet`'s hosts with `settings`' interval, concurrency and timeout.
    pub fn new(fleet: Arc<dyn FleetView>, settings: WatchdogSettings, client: reqwest::Client) -> Self {
        let mut tick = tokio::time::interval(settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { fleet, settings, client, tick }
    }

    async fn read(&self, mut host: WatchedHost) -> Option<WatchedHost> {
        let url = format!("{}/health", host.agent_url.trim_end_matches('/'));
        let resp = self.client.get(url).timeout(self.settings.timeout).send().await.ok()?.error_for_status().ok()?;
        let report: HealthReport = resp.json().await.ok()?;
        host.containers = containers_of(&report);
        Some(host)
    }
}

#[async_trait]
impl WatchSource for PollSource {
    async fn next(&mut self) -> Option<Vec<WatchedHost>> {
        self.tick.tick().await;
        let hosts = match self.fleet.hosts().await {
            Ok(h) => h,
            Err(error) => {
                warn!(%error, "watchdog cannot list hosts");
                return Some(Vec::new());
            }
        };
        let targets: Vec<WatchedHost> = hosts
            .into_iter()
            .filter_map(|h| {
                let w = WatchedHost { id: h.id, name: h.name, groups: h.groups, maintenance: h.maintenance, opted_in: h.watchdog, agent_url: h.agent_url?, containers: Vec::new() };
                self.settings.opted_in(&w).then_some(w)
            })
            .collect();
        let this = &*self;
        Some(futures::stream::iter(targets).map(|h| this.read(h)).buffer_unordered(self.settings.concurrency).filter_map(|h| async move { h }).collect().await)
    }
}

/// A restart to do.
struct Due {
    host_id: String,
    host: String,
    agent_url: String,
    container_id: String,
    container: String,
    failures: u32,
}

/// The watchdog under a supervisor.
pub struct WatchdogWorker {
    source: Box<dyn WatchSource>,
    dog: Watchdog,
    restarter: Arc<dyn Restarter>,
    audit: AuditSink,
    events: broadcast::Sender<WatchdogEvent>,
    clock: Clock,
    last_skip: HashMap<(String, String), SkipReason>,
}

impl WatchdogWorker {
    /// A worker deciding with `settings`, restarting through `restarter`.
    pub fn new(settings: WatchdogSettings, source: Box<dyn WatchSource>, restarter: Arc<dyn Restarter>, audit: AuditSink, clock: Clock) -> Self {
        let (events, _) = broadcast::channel(256);
        Self { source, dog: Watchdog::new(settings), restarter, audit, events, clock, last_skip: HashMap::new() }
    }

    /// Subscribes to watchdog events.
    pub fn subscribe(&self) -> broadcast::Receiver<WatchdogEvent> {
        self.events.subscribe()
    }

    /// A sender that subscribes later (keep it before spawning the worker).
    pub fn events(&self) -> broadcast::Sender<WatchdogEvent> {
        self.events.clone()
    }

    /// Handles one batch at `now_ms`: decisions, restarts, audit and events. Returns the number of
    /// restarts attempted and how many failed.
    pub async fn handle(&mut self, now_ms: i64, batch: &[WatchedHost]) -> (usize, usize) {
        let mut restarts = Vec::new();
        for host in batch {
            for d in self.dog.observe(now_ms, host) {
                match d {
                    Decision::Restart { host_id, container_id, container, failures } => {
                        self.last_skip.remove(&(host_id.clone(), container.clone()));
                        restarts.push(Due { host_id, host: host.name.clone(), agent_url: host.agent_url.clone(), container_id, container, failures });
                    }
                    Decision::Skip { host_id, container, failures, reason } => {
                        let key = (host_id.clone(), container.clone());
                        let same = self.last_skip.get(&key).is_some_and(|r| std::mem::discriminant(r) == std::mem::discriminant(&reason));
                        if !same {
                            debug!(host = %host.name, %container, ?reason, "watchdog skip");
                            self.last_skip.insert(key, reason.clone());
                            let _ = self.events.send(WatchdogEvent { time_ms: now_ms, host_id, host: host.name.clone(), container, failures, kind: WatchdogEventKind::Skipped { reason } });
                        }
                    }
                }
            }
        }
        let results: Vec<(Due, Result<(), RestartFailed>)> = futures::stream::iter(restarts)
            .map(|due| {
                let restarter = self.restarter.clone();
                async move {
                    let r = restarter.restart(&due.agent_url, &due.container_id).await;
                    (due, r)
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let attempted = results.len();
        let mut failed = 0;
        for (Due { host_id, host, container, failures, .. }, r) in results {
            let target = format!("{host}/{container}");
            let (success, detail, kind) = match r {
                Ok(()) => {
                    info!(%host, %container, failures, "watchdog restarted a container");
                    (true, format!("health check failed {failures} times in a row"), WatchdogEventKind::Restarted)
                }
                Err(e) => {
                    failed += 1;
                    warn!(%host, %container, error = %e, "watchdog restart failed");
                    let error = e.to_string();
                    let detail = format!("health check failed {failures} times in a row; restart failed: {error}");
                    (false, detail, WatchdogEventKind::RestartFailed { error })
                }
            };
            (self.audit)(AuditEvent { time_ms: now_ms, action: "watchdog.container_restart".into(), target, success, detail });
            let _ = self.events.send(WatchdogEvent { time_ms: now_ms, host_id, host, container, failures, kind });
        }
        (attempted, failed)
    }
}

#[async_trait]
impl Worker for WatchdogWorker {
    fn name(&self) -> String {
        "watchdog".into()
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.dog.settings().interval)
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        loop {
            let batch = tokio::select! {
                _ = ctx.shutdown.wait() => return Ok(()),
                b = self.source.next() => b,
            };
            let Some(batch) = batch else {
                // The source ended (its sender was dropped): nothing more to watch.
                ctx.shutdown.wait().await;
                return Ok(());
            };
            let started = Instant::now();
            let now = (self.clock)();
            let (attempted, failed) = self.handle(now, &batch).await;
            let error = (failed > 0).then(|| format!("{failed} of {attempted} restarts failed"));
            ctx.record(failed == 0, started.elapsed(), error);
        }
    }
}

/// A source fed through a channel (e.g. from the fleet's check batches).
pub struct ChannelSource(pub tokio::sync::mpsc::Receiver<Vec<WatchedHost>>);

#[async_trait]
impl WatchSource for ChannelSource {
    async fn next(&mut self) -> Option<Vec<WatchedHost>> {
        self.0.recv().await
    }
}
