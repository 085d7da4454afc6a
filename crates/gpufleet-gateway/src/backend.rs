//! [`Backend`]: the live state of one model server — requests in flight from this gateway, the
//! capacity its last probe reported (slots, queue, loading), its circuit breaker and a latency
//! EWMA — and [`BackendStatus`], the snapshot `GET /api/v1/gateway/backends` shows.
//!
//! Capacity is the smaller of `max_concurrency` and the slots the backend has free for us: the
//! probe sees busy slots, subtracts our own in-flight requests at that moment, and what is left is
//! taken by other clients (`external_busy`). So a probe that is one interval old never holds our
//! own finished requests against us.

use crate::breaker::{Admit, Breaker, BreakerState};
use crate::config::{BackendKind, BackendSettings, BreakerSettings};
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use tokio::time::Instant;

/// What the last probe learned.
#[derive(Clone, Debug, Default)]
pub(crate) struct Capacity {
    /// `/health` answered 503 "Loading model".
    pub(crate) loading: bool,
    /// Slots in total (llama.cpp `/slots`).
    pub(crate) total_slots: Option<u32>,
    /// Slots busy at the probe, beyond our own in-flight requests.
    pub(crate) external_busy: u32,
    /// Slots idle at the probe.
    pub(crate) idle_slots: Option<u32>,
    /// Requests waiting inside the backend (vLLM `num_requests_waiting`, llama.cpp deferred).
    pub(crate) waiting: u32,
    /// Models loaded in memory (Ollama `/api/ps`); `None` when unknown.
    pub(crate) loaded: Option<Vec<String>>,
    /// When the probe ran.
    pub(crate) at: Option<Instant>,
    /// Last probe error.
    pub(crate) error: Option<String>,
}

/// One model server and its live state.
pub struct Backend {
    pub(crate) idx: usize,
    pub(crate) settings: BackendSettings,
    pub(crate) breaker: Breaker,
    in_flight: AtomicU32,
    /// Requests admitted to it since start.
    admitted: AtomicU64,
    limit: AtomicU32,
    /// Answered 503 busy to us: unavailable until one of our requests there ends or a probe
    /// sees free slots.
    full: AtomicBool,
    loading: AtomicBool,
    ewma_ms: AtomicU64,
    capacity: Mutex<Capacity>,
}

/// A backend as the management API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct BackendStatus {
    /// Name.
    pub name: String,
    /// Server software.
    pub kind: BackendKind,
    /// Base URL.
    pub url: String,
    /// Models served.
    pub models: Vec<String>,
    /// Breaker state.
    pub breaker: BreakerState,
    /// Requests from this gateway in flight.
    pub in_flight: u32,
    /// Requests sent to it since the gateway started (attempts, retries included).
    pub requests: u64,
    /// Configured limit.
    pub max_concurrency: u32,
    /// Current limit (configured, reduced by slots other clients use).
    pub capacity: u32,
    /// Slots in total, when reported.
    pub slots_total: Option<u32>,
    /// Slots idle at the last probe, when reported.
    pub slots_idle: Option<u32>,
    /// Requests waiting inside the backend at the last probe.
    pub waiting: u32,
    /// Loading its model.
    pub loading: bool,
    /// Refused a request as busy since our last request there ended.
    pub full: bool,
    /// Exponentially weighted latency of successful requests (ms); 0 when none yet.
    pub latency_ewma_ms: f64,
    /// Milliseconds since the last probe.
    pub probed_ms_ago: Option<u64>,
    /// Last probe error.
    pub last_error: Option<String>,
}

const EWMA_ALPHA: f64 = 0.2;

impl Backend {
    pub(crate) fn new(idx: usize, settings: BackendSettings, breaker: BreakerSettings) -> Self {
        Self {
            idx,
            limit: AtomicU32::new(settings.max_concurrency),
            settings,
            breaker: Breaker::new(breaker),
            in_flight: AtomicU32::new(0),
            admitted: AtomicU64::new(0),
            full: AtomicBool::new(false),
            loading: AtomicBool::new(false),
            ewma_ms: AtomicU64::new(0f64.to_bits()),
            capacity: Mutex::new(Capacity::default()),
        }
    }

    /// Name from config.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn latency_ms(&self) -> f64 {
        f64::from_bits(self.ewma_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn waiting(&self) -> u32 {
        self.capacity.lock().waiting
    }

    /// Whether the model is known to be loaded (true when unknown).
    pub(crate) fn has_loaded(&self, model: &str) -> bool {
        self.capacity.lock().loaded.as_ref().is_none_or(|l| {
            l.iter()
                .any(|m| m == model || m.split(':').next() == Some(model))
        })
    }

    /// Could take a request now (capacity, not loading, not refused as busy, breaker admits).
    pub(crate) fn available(&self, now: Instant) -> bool {
        !self.loading.load(Ordering::Relaxed)
            && !self.full.load(Ordering::Relaxed)
            && self.in_flight() < self.limit()
            && self.breaker.would_admit(now)
    }

    /// Takes one unit of capacity and the breaker's admission; `None` when either is missing.
    pub(crate) fn try_take(&self, now: Instant) -> Option<(Admit, Option<BreakerState>)> {
        if self.loading.load(Ordering::Relaxed) || self.full.load(Ordering::Relaxed) {
            return None;
        }
        let limit = self.limit();
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        match self.breaker.admit(now) {
            (Admit::No, _) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                None
            }
            admitted => {
                self.admitted.fetch_add(1, Ordering::Relaxed);
                Some(admitted)
            }
        }
    }

    /// Gives back one unit of capacity.
    pub(crate) fn put_back(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.full.store(false, Ordering::Relaxed);
    }

    pub(crate) fn mark_full(&self) {
        self.full.store(true, Ordering::Relaxed);
    }

    pub(crate) fn mark_loading(&self) {
        self.loading.store(true, Ordering::Relaxed);
    }

    /// Forgets the latency average (the next answer seeds it again). Called when the breaker
    /// closes: the average from before the outage would otherwise keep a recovered backend out
    /// of every choice its idle peer wins on latency, and, unchosen, it would never be corrected.
    pub(crate) fn forget_latency(&self) {
        self.ewma_ms.store(0f64.to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn observe_latency(&self, ms: f64) {
        let old = self.latency_ms();
        let new = if old == 0.0 {
            ms
        } else {
            old * (1.0 - EWMA_ALPHA) + ms * EWMA_ALPHA
        };
        self.ewma_ms.store(new.to_bits(), Ordering::Relaxed);
    }

    /// Applies a probe result; returns true when capacity may have grown (wake the queue).
    pub(crate) fn apply_probe(&self, mut cap: Capacity, in_flight_at_probe: u32) -> bool {
        let max = self.settings.max_concurrency;
        if let (Some(total), Some(idle)) = (cap.total_slots, cap.idle_slots) {
            cap.external_busy = total
                .saturating_sub(idle)
                .saturating_sub(in_flight_at_probe);
        }
        let limit = cap
            .total_slots
            .map_or(max, |t| max.min(t.saturating_sub(cap.external_busy)));
        let old_limit = self.limit.swap(limit, Ordering::Relaxed);
        let was_loading = self.loading.swap(cap.loading, Ordering::Relaxed);
        let was_full = if cap.idle_slots.is_none_or(|i| i > 0) {
            self.full.swap(false, Ordering::Relaxed)
        } else {
            false
        };
        *self.capacity.lock() = cap;
        limit > old_limit || (was_loading && !self.loading.load(Ordering::Relaxed)) || was_full
    }

    pub(crate) fn record_probe_error(&self, error: String) {
        let mut c = self.capacity.lock();
        c.error = Some(error);
        c.at = Some(Instant::now());
    }

    /// The snapshot for the API.
    pub fn status(&self) -> BackendStatus {
        let c = self.capacity.lock().clone();
        BackendStatus {
            name: self.settings.name.clone(),
            kind: self.settings.kind,
            url: self.settings.url.clone(),
            models: self.settings.models.clone(),
            breaker: self.breaker.state(),
            in_flight: self.in_flight(),
            requests: self.admitted.load(Ordering::Relaxed),
            max_concurrency: self.settings.max_concurrency,
            capacity: self.limit(),
            slots_total: c.total_slots,
            slots_idle: c.idle_slots,
            waiting: c.waiting,
            loading: self.loading.load(Ordering::Relaxed),
            full: self.full.load(Ordering::Relaxed),
            latency_ewma_ms: self.latency_ms(),
            probed_ms_ago: c
                .at
                .map(|t| Instant::now().saturating_duration_since(t).as_millis() as u64),
            last_error: c.error,
        }
    }
}
