//! [`AlertService`]: the engine behind a lock plus its [`AlertStore`], with the methods the API
//! calls (`GET /api/v1/alerts`, `POST/GET/DELETE /api/v1/silences`), and [`AlertWorker`], which
//! evaluates every `alerts.interval` over an [`ObservationSource`] and queues notifications.

use super::engine::{Alert, AlertEngine, AlertStatus, Notice};
use super::observe::Observations;
use super::rule::Severity;
use super::silence::{NewSilence, Silence};
use super::store::AlertStore;
use super::AlertError;
use crate::config::AlertSettings;
use crate::notify::{Message, NotifyQueue};
use crate::source::SourceError;
use crate::Clock;
use async_trait::async_trait;
use gpufleet_runtime::{Worker, WorkerContext, WorkerError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;

/// Filters of `GET /api/v1/alerts`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// Only this status (`pending`, `firing`, `resolved`); default: pending and firing, then
    /// recent resolved ones.
    #[serde(default)]
    pub status: Option<AlertStatus>,
    /// Only this host id.
    #[serde(default)]
    pub host: Option<String>,
    /// Only this severity.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Most alerts returned (default 500, at most 5000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The engine and its store.
pub struct AlertService {
    engine: Mutex<AlertEngine>,
    store: Arc<dyn AlertStore>,
    /// Serialises evaluations and silence changes so the store sees them in engine order.
    write: tokio::sync::Mutex<()>,
    history: usize,
}

impl std::fmt::Debug for AlertService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertService").field("active", &self.engine.lock().active().count()).finish()
    }
}

impl AlertService {
    /// An engine with `settings`' rules, restored from `store` as of `now_ms`.
    pub async fn open(settings: &AlertSettings, store: Arc<dyn AlertStore>, now_ms: i64) -> Result<Self, AlertError> {
        let repeat_ms = i64::try_from(settings.repeat_interval.as_millis()).unwrap_or(i64::MAX);
        let mut engine = AlertEngine::new(settings.rules.clone(), settings.builtins.clone(), repeat_ms, settings.history);
        let loaded = store.load(now_ms, settings.history).await?;
        engine.restore(loaded.active, loaded.silences, loaded.history);
        Ok(Self { engine: Mutex::new(engine), store, write: tokio::sync::Mutex::new(()), history: settings.history })
    }

    /// One evaluation at `now_ms`: the notices to send, and whether persisting the changes worked
    /// (the notices stand either way; the in-memory state is the truth until the next restart).
    pub async fn evaluate(&self, now_ms: i64, obs: &Observations) -> (Vec<Notice>, Result<(), AlertError>) {
        let _order = self.write.lock().await;
        let (evaluation, pruned) = {
            let mut e = self.engine.lock();
            let pruned = e.prune_silences(now_ms);
            (e.evaluate(now_ms, obs), pruned)
        };
        let mut result = self.store.apply(&evaluation.changes).await.map_err(AlertError::from);
        for id in pruned {
            if let Err(e) = self.store.delete_silence(&id).await {
                result = result.and(Err(e.into()));
            }
        }
        if let Err(error) = &result {
            warn!(%error, "alert changes not persisted");
        }
        (evaluation.notices, result)
    }

    /// Alerts matching `q`: active ones first (firing, then pending; by start), then resolved
    /// ones newest first.
    pub async fn alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>, AlertError> {
        let limit = q.limit.unwrap_or(500).min(5000);
        let keep = |a: &Alert| {
            q.status.is_none_or(|s| a.status == s) && q.host.as_deref().is_none_or(|h| a.host.as_deref() == Some(h)) && q.severity.is_none_or(|s| a.severity == s)
        };
        let mut out: Vec<Alert> = self.engine.lock().active().filter(|a| keep(a)).cloned().collect();
        out.sort_by_key(|a| (a.status != AlertStatus::Firing, a.started_ms));
        if q.status.is_none_or(|s| s == AlertStatus::Resolved) && out.len() < limit {
            let history = self.store.history(self.history).await?;
            out.extend(history.into_iter().filter(|a| keep(a)));
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Creates a silence from an API request; it applies from the next evaluation.
    pub async fn create_silence(&self, req: NewSilence, now_ms: i64) -> Result<Silence, AlertError> {
        let s = req.validate(now_ms)?;
        let _order = self.write.lock().await;
        self.store.put_silence(&s).await?;
        self.engine.lock().add_silence(s.clone());
        Ok(s)
    }

    /// Silences held: with `include_expired` false, only those not yet ended at `now_ms`.
    pub fn silences(&self, now_ms: i64, include_expired: bool) -> Vec<Silence> {
        self.engine.lock().silences().iter().filter(|s| include_expired || s.ends_ms > now_ms).cloned().collect()
    }

    /// Deletes a silence (`SilenceNotFound` when there is none with that id).
    pub async fn delete_silence(&self, id: &str) -> Result<(), AlertError> {
        let _order = self.write.lock().await;
        let held = self.engine.lock().remove_silence(id);
        let stored = self.store.delete_silence(id).await?;
        if held || stored {
            Ok(())
        } else {
            Err(AlertError::SilenceNotFound(id.to_owned()))
        }
    }

    /// Number of firing alerts now.
    pub fn firing(&self) -> usize {
        self.engine.lock().active().filter(|a| a.status == AlertStatus::Firing).count()
    }
}

/// Gives the engine its [`Observations`] (the fleet wiring implements it; see
/// [`crate::Insight`] for the one over [`crate::source`]).
#[async_trait]
pub trait ObservationSource: Send + Sync + 'static {
    /// Everything to evaluate at `now_ms`.
    async fn observe(&self, now_ms: i64) -> Result<Observations, SourceError>;
}

/// Evaluates every `interval` and queues what is to be sent.
pub struct AlertWorker {
    service: Arc<AlertService>,
    source: Arc<dyn ObservationSource>,
    queue: NotifyQueue,
    interval: Duration,
    clock: Clock,
}

impl AlertWorker {
    /// A worker evaluating `service` over `source` every `interval`, reading time from `clock`.
    pub fn new(service: Arc<AlertService>, source: Arc<dyn ObservationSource>, queue: NotifyQueue, interval: Duration, clock: Clock) -> Self {
        Self { service, source, queue, interval, clock }
    }

    /// One evaluation: observe, evaluate, queue messages. Returns the notices.
    pub async fn tick(&self) -> Result<Vec<Notice>, String> {
        let now = (self.clock)();
        let obs = self.source.observe(now).await.map_err(|e| e.to_string())?;
        let (notices, stored) = self.service.evaluate(now, &obs).await;
        for m in Message::from_notices(&notices) {
            self.queue.push(m);
        }
        stored.map_err(|e| e.to_string())?;
        Ok(notices)
    }
}

#[async_trait]
impl Worker for AlertWorker {
    fn name(&self) -> String {
        "alerts".into()
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ctx.shutdown.wait() => return Ok(()),
                _ = tick.tick() => {}
            }
            let started = Instant::now();
            let r = self.tick().await;
            ctx.record(r.is_ok(), started.elapsed(), r.err());
        }
    }
}
