//! [`Insight`]: the façade the API handlers and the workers share. It reads the fleet through the
//! [`crate::source`] traits and answers, as plain async methods returning serde types:
//!
//! | route | method |
//! |---|---|
//! | `GET /api/v1/hosts/{id}/score` | [`Insight::host_score`] |
//! | `GET /api/v1/fleet/score` | [`Insight::fleet_score`] |
//! | `GET /api/v1/hosts/{id}/trends?metric=&range=&threshold=` | [`Insight::trends`] |
//! | `GET /api/v1/alerts` | [`crate::alert::AlertService::alerts`] (via [`Insight::alerts`]) |
//! | `POST/GET/DELETE /api/v1/silences` | `AlertService::{create_silence, silences, delete_silence}` |
//!
//! It is also the [`ObservationSource`] of the alert worker and the [`DigestSource`] of the
//! digest worker (hosts in maintenance are left out of the digest).
//!
//! **Sample age.** A host's last metrics sample is used for its score when it is under
//! [`SCORE_SAMPLE_MAX_AGE_MS`] old and by alert rules when under [`ALERT_SAMPLE_MAX_AGE_MS`];
//! an older one counts as no sample (a host unreachable for a day does not keep its old score, and
//! metric alerts on it neither fire nor resolve on stale numbers).
//!
//! **Disk outlook** for `disk_full_soon`: the 7-day trend of `disk_used_pct`, recomputed per host
//! at most every [`OUTLOOK_TTL_MS`], at most [`OUTLOOK_REFRESH_PER_EVAL`] hosts per evaluation
//! (so 10,000 hosts cost ~3 range queries a second, not 10,000 at once), 16 at a time.

use crate::alert::{AlertService, DiskOutlook, HostHealth, HostObservation, ObservationSource, Observations, WorkerFailureTracker};
use crate::digest::worker::DigestSource;
use crate::digest::DigestInput;
use crate::metrics::{named_values, unhealthy_containers, CONTAINERS_UNHEALTHY, CPU_STEAL_PCT, DISK_USED_PCT, SWAP_USED_BYTES};
use crate::score::{fleet_score, score, FleetScore, ScoreCard, ScoreInput};
use crate::source::{FleetView, HostView, MetricHistory, SourceError, SystemView};
use crate::trend::{trend, Trend, TrendRange};
use async_trait::async_trait;
use futures::StreamExt;
use gpufleet_agent::wire::{ComponentKind, HostMetrics, Status};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

/// A sample older than this does not count for the score.
pub const SCORE_SAMPLE_MAX_AGE_MS: i64 = 3_600_000;
/// A sample older than this does not count for alert rules.
pub const ALERT_SAMPLE_MAX_AGE_MS: i64 = 300_000;
/// A disk outlook is recomputed after this long.
pub const OUTLOOK_TTL_MS: i64 = 3_600_000;
/// Disk outlooks recomputed per evaluation at most.
pub const OUTLOOK_REFRESH_PER_EVAL: usize = 500;
const WEEK_MS: i64 = 7 * 86_400_000;

/// Why a request failed; each variant maps to one HTTP status.
#[derive(Debug, Error)]
pub enum InsightError {
    /// No host with that id or name (404).
    #[error("no host {0:?}")]
    HostNotFound(String),
    /// A request parameter is invalid (400).
    #[error("{field}: {reason}")]
    Invalid {
        /// The parameter.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the fleet or its history failed (500).
    #[error(transparent)]
    Source(SourceError),
}

impl From<SourceError> for InsightError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Invalid { field, reason } => InsightError::Invalid { field, reason },
            other => InsightError::Source(other),
        }
    }
}

/// Query of `GET /api/v1/hosts/{id}/trends`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendQuery {
    /// Metric name ([`crate::metrics`]).
    pub metric: String,
    /// `7d` (default) or `30d`.
    #[serde(default)]
    pub range: Option<TrendRange>,
    /// Threshold to project to (default per metric: [`crate::trend::default_target`]).
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// The fleet workers' and partitions' view; `None` in [`Insight::new`] leaves `worker_failing`
/// and `partition_missing` without data.
pub type System = Option<Arc<dyn SystemView>>;

/// The façade.
pub struct Insight {
    fleet: Arc<dyn FleetView>,
    history: Arc<dyn MetricHistory>,
    system: System,
    alerts: Arc<AlertService>,
    outlooks: Mutex<HashMap<String, (i64, Option<DiskOutlook>)>>,
    workers: Mutex<WorkerFailureTracker>,
}

impl std::fmt::Debug for Insight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Insight").field("alerts", &self.alerts).finish_non_exhaustive()
    }
}

fn fresh(m: Option<&Arc<HostMetrics>>, now_ms: i64, max_age_ms: i64) -> Option<&HostMetrics> {
    m.map(Arc::as_ref).filter(|m| now_ms.saturating_sub(m.time_ms) < max_age_ms)
}

fn check_metric(metric: &str) -> Result<(), InsightError> {
    let ok = !metric.is_empty() && metric.len() <= 200 && metric.chars().all(|c| c.is_ascii_alphanumeric() || "_:/.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(InsightError::Invalid { field: "metric".into(), reason: "give a metric name such as disk_used_pct or disk_used_pct:/data".into() })
    }
}

impl Insight {
    /// A façade over these sources and alert service.
    pub fn new(fleet: Arc<dyn FleetView>, history: Arc<dyn MetricHistory>, system: System, alerts: Arc<AlertService>) -> Self {
        Self { fleet, history, system, alerts, outlooks: Mutex::new(HashMap::new()), workers: Mutex::new(WorkerFailureTracker::new()) }
    }

    /// The alert service (alerts and silences routes).
    pub fn alerts(&self) -> &Arc<AlertService> {
        &self.alerts
    }

    async fn host(&self, id: &str) -> Result<HostView, InsightError> {
        self.fleet.host(id).await?.ok_or_else(|| InsightError::HostNotFound(id.to_owned()))
    }

    fn card(h: &HostView, now_ms: i64) -> ScoreCard {
        let m = fresh(h.metrics.as_ref(), now_ms, SCORE_SAMPLE_MAX_AGE_MS);
        score(&h.id, &ScoreInput::from_metrics(m, h.last_cleanup_ms, h.largest_model_bytes), now_ms)
    }

    /// `GET /api/v1/hosts/{id}/score`.
    pub async fn host_score(&self, id: &str, now_ms: i64) -> Result<ScoreCard, InsightError> {
        Ok(Self::card(&self.host(id).await?, now_ms))
    }

    /// `GET /api/v1/fleet/score`.
    pub async fn fleet_score(&self, now_ms: i64) -> Result<FleetScore, InsightError> {
        let hosts = self.fleet.hosts().await?;
        let cards: Vec<(ScoreCard, bool)> = hosts.iter().map(|h| (Self::card(h, now_ms), h.maintenance)).collect();
        let mut f = fleet_score(cards.iter().map(|(c, m)| (c, *m)));
        // Name the lowest hosts by name rather than id.
        let names: HashMap<&str, &str> = hosts.iter().map(|h| (h.id.as_str(), h.name.as_str())).collect();
        for (host, _) in &mut f.lowest {
            if let Some(n) = names.get(host.as_str()) {
                *host = (*n).to_owned();
            }
        }
        Ok(f)
    }

    /// `GET /api/v1/hosts/{id}/trends?metric=&range=&threshold=`.
    pub async fn trends(&self, id: &str, q: &TrendQuery, now_ms: i64) -> Result<Trend, InsightError> {
        check_metric(&q.metric)?;
        if q.threshold.is_some_and(|t| !t.is_finite()) {
            return Err(InsightError::Invalid { field: "threshold".into(), reason: "must be a finite number".into() });
        }
        let host = self.host(id).await?;
        let range = q.range.unwrap_or(TrendRange::Days7);
        let points = self.history.range(&host.id, &q.metric, now_ms - range.ms(), now_ms.saturating_add(1)).await?;
        Ok(trend(&host.id, &q.metric, range, &points, q.threshold, now_ms))
    }

    async fn outlook(&self, h: &HostView, now_ms: i64) -> Option<DiskOutlook> {
        let points = match self.history.range(&h.id, DISK_USED_PCT, now_ms - WEEK_MS, now_ms.saturating_add(1)).await {
            Ok(p) => p,
            Err(error) => {
                tracing::debug!(%error, host = %h.name, "disk history unavailable");
                return None;
            }
        };
        let t = trend(&h.id, DISK_USED_PCT, TrendRange::Days7, &points, Some(90.0), now_ms);
        t.fit?;
        let mount = h
            .metrics
            .as_ref()
            .and_then(|m| m.disks.iter().max_by(|a, b| a.used_percent().total_cmp(&b.used_percent())))
            .map_or_else(|| "(fullest)".to_owned(), |d| d.mount.clone());
        Some(DiskOutlook { mount, days_to_90: t.projection.and_then(|p| p.days()) })
    }

    /// Disk outlooks of `hosts`, refreshing the oldest stale entries (bounded per call).
    async fn outlooks(&self, hosts: &[HostView], now_ms: i64) -> HashMap<String, Option<DiskOutlook>> {
        let stale: Vec<HostView> = {
            let cache = self.outlooks.lock();
            let mut stale: Vec<(i64, &HostView)> = hosts
                .iter()
                .filter(|h| h.metrics.is_some())
                .filter_map(|h| match cache.get(&h.id) {
                    Some((at, _)) if now_ms.saturating_sub(*at) < OUTLOOK_TTL_MS => None,
                    Some((at, _)) => Some((*at, h)),
                    None => Some((i64::MIN, h)),
                })
                .collect();
            stale.sort_by_key(|(at, _)| *at);
            stale.into_iter().take(OUTLOOK_REFRESH_PER_EVAL).map(|(_, h)| h.clone()).collect()
        };
        let fresh: Vec<(String, Option<DiskOutlook>)> = futures::stream::iter(stale)
            .map(|h: HostView| async move {
                let o = self.outlook(&h, now_ms).await;
                (h.id, o)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut cache = self.outlooks.lock();
        for (id, o) in fresh {
            cache.insert(id, (now_ms, o));
        }
        let ids: std::collections::HashSet<&str> = hosts.iter().map(|h| h.id.as_str()).collect();
        cache.retain(|id, _| ids.contains(id.as_str()));
        hosts.iter().map(|h| (h.id.clone(), cache.get(&h.id).and_then(|(_, o)| o.clone()))).collect()
    }

    /// One host as the alert engine sees it.
    pub fn observe_host(h: &HostView, outlook: Option<DiskOutlook>, now_ms: i64) -> HostObservation {
        let answered = !matches!(h.state, HostHealth::Unreachable | HostHealth::Unknown);
        let sample = fresh(h.metrics.as_ref(), now_ms, ALERT_SAMPLE_MAX_AGE_MS).filter(|_| answered);
        let report = h.report.as_ref().filter(|_| answered);
        let unhealthy_containers = match (report, sample) {
            (Some(r), _) => Some(r.components.iter().filter(|c| c.kind == ComponentKind::Container && c.status != Status::Ok).map(|c| c.name.trim_start_matches("container:").to_owned()).collect()),
            (None, Some(m)) => Some(unhealthy_containers(m)),
            (None, None) => None,
        };
        let critical_reasons = report.map_or_else(Vec::new, |r| r.components.iter().filter(|c| c.status == Status::Critical).map(|c| format!("{}: {}", c.name, c.message)).collect());
        HostObservation {
            id: h.id.clone(),
            name: h.name.clone(),
            groups: h.groups.clone(),
            maintenance: h.maintenance,
            state: h.state,
            metrics: sample.map(named_values).unwrap_or_default(),
            unhealthy_containers,
            disk_outlook: outlook.filter(|_| answered),
            critical_reasons,
        }
    }
}

#[async_trait]
impl ObservationSource for Insight {
    async fn observe(&self, now_ms: i64) -> Result<Observations, SourceError> {
        let hosts = self.fleet.hosts().await?;
        let outlooks = self.outlooks(&hosts, now_ms).await;
        let observed = hosts.iter().map(|h| Self::observe_host(h, outlooks.get(&h.id).cloned().flatten(), now_ms)).collect();
        let (missing_partitions, workers) = match &self.system {
            None => (Vec::new(), None),
            Some(s) => (s.missing_partitions().await?, Some(self.workers.lock().observe(&s.workers()))),
        };
        Ok(Observations { hosts: observed, missing_partitions, workers })
    }
}

#[async_trait]
impl DigestSource for Insight {
    async fn digest_inputs(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DigestInput>, SourceError> {
        let hosts = self.fleet.hosts().await?;
        let one = |h: HostView| async move {
            let series = |m: &'static str| {
                let id = h.id.clone();
                async move { self.history.range(&id, m, from_ms, to_ms).await }
            };
            let steal = series(CPU_STEAL_PCT).await?;
            let disk_used = series(DISK_USED_PCT).await?;
            let swap_used = series(SWAP_USED_BYTES).await?;
            let containers_unhealthy = series(CONTAINERS_UNHEALTHY).await?;
            let t = trend(&h.id, DISK_USED_PCT, TrendRange::Days7, &disk_used, Some(90.0), to_ms);
            let unhealthy_now = fresh(h.metrics.as_ref(), to_ms, SCORE_SAMPLE_MAX_AGE_MS).map(unhealthy_containers).unwrap_or_default();
            Ok::<_, SourceError>(DigestInput {
                host_id: h.id.clone(),
                host: h.name.clone(),
                score: Some(Self::card(&h, to_ms)),
                steal,
                disk_used,
                swap_used,
                containers_unhealthy,
                unhealthy_now,
                freed_bytes: h.freed_bytes_7d,
                disk_days_to_90: t.projection.and_then(|p| p.days()),
            })
        };
        let results: Vec<Result<DigestInput, SourceError>> = futures::stream::iter(hosts.into_iter().filter(|h| !h.maintenance)).map(one).buffer_unordered(16).collect().await;
        results.into_iter().collect()
    }
}
