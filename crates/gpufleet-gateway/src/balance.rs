//! Live-state balancing: one [`Pool`] of backends per model, the [`Balancer`] that owns them,
//! and [`Lease`], one unit of a backend's capacity held by one request.
//!
//! # Policy
//! A backend is a *candidate* when its breaker admits, it is not loading, it has not just refused
//! us as busy, and our in-flight count is below its capacity (`max_concurrency`, lowered by slots
//! other clients occupy — see [`crate::backend`]). Backends whose GPU is thermally throttling
//! (a [`GpuHints`] report of throttling or a temperature above `max_gpu_temp_c`) are dropped from
//! the candidates while any other candidate remains. Among candidates, power of two choices:
//! two distinct random ones, the lower cost wins, where
//!
//! ```text
//! cost = (in_flight + 1 + waiting_inside) / capacity × (1 + latency_ewma_s) × vram / weight
//!        + 1 when an Ollama backend does not have the model loaded
//! vram = 2 when the GPU hint says less than 5 % VRAM is free, else 1
//! ```
//!
//! so an idle backend beats a busy one, a faster one beats a slower one at equal load, and stale
//! capacity information cannot send everybody to the same backend (the random pair). A backend
//! whose breaker closes starts with no latency average (its next answers seed it), so a recovered
//! backend is tried again even under light load. With one or
//! two candidates both are compared. When no backend is a candidate the request waits in the
//! pool's queue ([`crate::queue`]); each [`Lease`] that ends wakes the queues of its backend's
//! models, so waiters are dispatched the moment capacity returns.

use crate::backend::Backend;
use crate::breaker::{Admit, BreakerState};
use crate::metrics::{GatewayMetrics, RouteMetrics};
use crate::queue::{WaitQueue, Waiter};
use parking_lot::Mutex;
use rand::Rng;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use tokio::time::Instant;

/// What telemetry knows about the GPU(s) behind a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GpuHint {
    /// Free VRAM in bytes.
    pub vram_free_bytes: Option<u64>,
    /// Total VRAM in bytes.
    pub vram_total_bytes: Option<u64>,
    /// Hottest GPU temperature in °C.
    pub temperature_c: Option<f64>,
    /// The driver reports thermal throttling (clock event reasons).
    pub throttling: bool,
}

/// GPU state per backend, provided by whoever has telemetry (the integrator). Called on the
/// request path: answer from memory, never block.
pub trait GpuHints: Send + Sync + 'static {
    /// The state of the GPUs behind `backend` (`gpus` are its configured UUIDs), if known.
    fn hint(&self, backend: &str, gpus: &[String]) -> Option<GpuHint>;
}

/// The backends serving one model and the requests waiting for them.
pub(crate) struct Pool {
    pub(crate) model: String,
    pub(crate) backends: Vec<Arc<Backend>>,
    /// Metric handles per backend, same order as `backends`.
    pub(crate) route_metrics: Vec<RouteMetrics>,
    pub(crate) queue: Mutex<WaitQueue<Waiter>>,
    pub(crate) waiting: AtomicUsize,
}

/// Every pool, which pools each backend is in, and what scoring needs.
pub(crate) struct Balancer {
    pub(crate) pools: Vec<Arc<Pool>>,
    pub(crate) backends: Vec<Arc<Backend>>,
    /// Pool indices per backend index.
    by_backend: Vec<Vec<usize>>,
    pub(crate) metrics: GatewayMetrics,
    hints: Option<Arc<dyn GpuHints>>,
    max_gpu_temp_c: f64,
    /// Requests waiting in all pools.
    pub(crate) depth: AtomicUsize,
    pub(crate) queue: crate::config::QueueSettings,
}

impl Balancer {
    pub(crate) fn new(
        backends: Vec<Arc<Backend>>,
        metrics: GatewayMetrics,
        hints: Option<Arc<dyn GpuHints>>,
        max_gpu_temp_c: f64,
        queue: crate::config::QueueSettings,
    ) -> Self {
        let mut models: Vec<&str> = backends
            .iter()
            .flat_map(|b| b.settings.models.iter().map(String::as_str))
            .collect();
        models.sort_unstable();
        models.dedup();
        let mut by_backend = vec![Vec::new(); backends.len()];
        let pools = models
            .iter()
            .enumerate()
            .map(|(p, model)| {
                let members: Vec<Arc<Backend>> = backends
                    .iter()
                    .filter(|b| b.settings.models.iter().any(|m| m == model))
                    .cloned()
                    .collect();
                for b in &members {
                    by_backend[b.idx].push(p);
                }
                let route_metrics = members
                    .iter()
                    .map(|b| metrics.route(b.name(), model))
                    .collect();
                Arc::new(Pool {
                    model: (*model).to_owned(),
                    backends: members,
                    route_metrics,
                    queue: Mutex::new(WaitQueue::new(queue.aging)),
                    waiting: AtomicUsize::new(0),
                })
            })
            .collect();
        Self {
            pools,
            backends,
            by_backend,
            metrics,
            hints,
            max_gpu_temp_c,
            depth: AtomicUsize::new(0),
            queue,
        }
    }

    pub(crate) fn pool(&self, model: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.model == model)
    }

    /// Capacity of a backend may have returned: dispatch waiters of every pool it serves.
    pub(crate) fn wake_backend(self: &Arc<Self>, idx: usize) {
        for &p in self.by_backend.get(idx).map_or(&[][..], Vec::as_slice) {
            self.pools[p].dispatch(self);
        }
    }

    /// Counts a breaker state change (and wakes waiters when it closed).
    pub(crate) fn transition(self: &Arc<Self>, backend: &Backend, to: Option<BreakerState>) {
        let Some(to) = to else { return };
        self.metrics.breaker_transition(backend.name(), to);
        tracing::info!(
            backend = backend.name(),
            state = to.as_str(),
            "breaker state changed"
        );
        if to == BreakerState::Closed {
            backend.forget_latency();
            self.wake_backend(backend.idx);
        }
    }

    fn throttled(&self, b: &Backend) -> bool {
        self.gpu(b).is_some_and(|h| {
            h.throttling || h.temperature_c.is_some_and(|t| t > self.max_gpu_temp_c)
        })
    }

    fn gpu(&self, b: &Backend) -> Option<GpuHint> {
        self.hints.as_ref()?.hint(b.name(), &b.settings.gpus)
    }

    /// The balancing cost of sending one more request of `model` to `b` (lower is better).
    pub(crate) fn cost(&self, b: &Backend, model: &str) -> f64 {
        let load = f64::from(b.in_flight() + 1 + b.waiting()) / f64::from(b.limit().max(1));
        let latency = 1.0 + b.latency_ms() / 1000.0;
        let vram = match self.gpu(b) {
            Some(GpuHint {
                vram_free_bytes: Some(free),
                vram_total_bytes: Some(total),
                ..
            }) if total > 0 && (free as f64) < 0.05 * total as f64 => 2.0,
            _ => 1.0,
        };
        let cold = if b.has_loaded(model) { 0.0 } else { 1.0 };
        load * latency * vram / b.settings.weight + cold
    }
}

type Cands = smallvec::SmallVec<[usize; 16]>;

impl Pool {
    /// Picks a backend by the policy in the module docs and takes a lease on it, skipping the
    /// backends in `excluded` (indices into `Balancer::backends`).
    pub(crate) fn try_lease(
        self: &Arc<Self>,
        bal: &Arc<Balancer>,
        excluded: &[usize],
    ) -> Option<Lease> {
        let now = Instant::now();
        // On the stack for pools of up to 16 backends: no allocation per request.
        let mut cands: Cands = (0..self.backends.len())
            .filter(|&i| {
                !excluded.contains(&self.backends[i].idx) && self.backends[i].available(now)
            })
            .collect();
        if cands.len() > 1 && bal.hints.is_some() {
            let cool: Cands = cands
                .iter()
                .copied()
                .filter(|&i| !bal.throttled(&self.backends[i]))
                .collect();
            if !cool.is_empty() {
                cands = cool;
            }
        }
        while !cands.is_empty() {
            let pick = if cands.len() <= 2 {
                self.cheapest(bal, &cands)
            } else {
                let mut rng = rand::thread_rng();
                let a = rng.gen_range(0..cands.len());
                let mut b = rng.gen_range(0..cands.len() - 1);
                if b >= a {
                    b += 1;
                }
                self.cheapest(bal, &[cands[a], cands[b]])
            };
            if let Some(lease) = self.take(bal, pick, now) {
                return Some(lease);
            }
            // Lost a race for its last unit of capacity: drop it and choose again.
            cands.retain(|i| *i != pick);
        }
        None
    }

    fn cheapest(&self, bal: &Balancer, of: &[usize]) -> usize {
        let cost = |i: usize| bal.cost(&self.backends[i], &self.model);
        of.iter()
            .copied()
            .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
            .unwrap_or(of[0])
    }

    fn take(self: &Arc<Self>, bal: &Arc<Balancer>, i: usize, now: Instant) -> Option<Lease> {
        let backend = &self.backends[i];
        let (admit, changed) = backend.try_take(now)?;
        bal.transition(backend, changed);
        Some(Lease {
            backend: backend.clone(),
            slot: i,
            pool: self.clone(),
            bal: bal.clone(),
            probe: admit == Admit::Probe,
            decided: false,
            at: now,
        })
    }
}

/// One unit of a backend's capacity, held for one request. Report the outcome with
/// [`Lease::succeed`] / [`Lease::fail`] / [`Lease::neutral`]; dropping it without a verdict (the
/// client went away) frees the capacity and, if it was the half-open probe, lets another probe go.
pub(crate) struct Lease {
    pub(crate) backend: Arc<Backend>,
    /// Index of the backend inside the pool (for its metric handles).
    slot: usize,
    pool: Arc<Pool>,
    bal: Arc<Balancer>,
    probe: bool,
    decided: bool,
    /// When it was taken (the request is sent right after: its latency counts from here).
    pub(crate) at: Instant,
}

impl Lease {
    pub(crate) fn metrics(&self) -> &RouteMetrics {
        &self.pool.route_metrics[self.slot]
    }

    pub(crate) fn model(&self) -> &str {
        &self.pool.model
    }

    /// A successful answer, complete at `end`; its latency counts from [`Lease::at`].
    pub(crate) fn succeed(mut self, end: Instant) {
        self.decided = true;
        let took = end.saturating_duration_since(self.at);
        self.backend.observe_latency(took.as_secs_f64() * 1000.0);
        let changed = self.backend.breaker.record(true, self.probe, end);
        self.bal.transition(&self.backend, changed);
    }

    /// A failure that counts against the backend.
    pub(crate) fn fail(mut self) {
        self.decided = true;
        let changed = self
            .backend
            .breaker
            .record(false, self.probe, Instant::now());
        self.bal.transition(&self.backend, changed);
    }

    /// An outcome that says nothing about the backend's health (busy, client error).
    pub(crate) fn neutral(self) {}
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.probe && !self.decided {
            self.backend.breaker.release_probe();
        }
        self.backend.put_back();
        self.bal.wake_backend(self.backend.idx);
    }
}
