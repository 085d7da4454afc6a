//! Shared state of one mock server: counters, slot accounting, injected faults, and
//! [`MockHandle`], the run-time remote control tests use.
//!
//! Every counter comes from real request lifetimes: guards ([`InFlight`], [`Slot`]) decrement on
//! drop, so a client that disconnects (dropping the handler future or the response stream) frees
//! its slot at once.

use crate::MockConfig;
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A snapshot of a mock server's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MockStats {
    /// Generation requests received (including refused ones).
    pub received: u64,
    /// Generation requests answered successfully to the end.
    pub served: u64,
    /// Requests answered with an injected 500.
    pub failed: u64,
    /// Generation requests in progress (waiting for a slot or generating).
    pub in_flight: u64,
    /// Requests holding a slot.
    pub processing: u64,
    /// Requests waiting for a slot.
    pub deferred: u64,
    /// Tokens generated since start.
    pub tokens_predicted: u64,
}

pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    fail_rate: AtomicU64,
    hang_rate: AtomicU64,
    loading_forced: AtomicBool,
    loading_until: Mutex<Option<Instant>>,
    slots: Arc<Semaphore>,
    busy: Mutex<Vec<Option<u64>>>,
    received: AtomicU64,
    served: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    deferred: AtomicU64,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) tokens_predicted: AtomicU64,
    crash: watch::Sender<bool>,
}

fn f64_bits(v: f64) -> u64 {
    v.clamp(0.0, 1.0).to_bits()
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Arc<Self> {
        let slots = config.slots.max(1);
        let loading_until = (config.loading_for_ms > 0)
            .then(|| Instant::now() + std::time::Duration::from_millis(config.loading_for_ms));
        Arc::new(Self {
            fail_rate: AtomicU64::new(f64_bits(config.fail_rate)),
            hang_rate: AtomicU64::new(f64_bits(config.hang_rate)),
            loading_forced: AtomicBool::new(false),
            loading_until: Mutex::new(loading_until),
            slots: Arc::new(Semaphore::new(slots)),
            busy: Mutex::new(vec![None; slots]),
            received: AtomicU64::new(0),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            tokens_predicted: AtomicU64::new(0),
            crash: watch::Sender::new(false),
            config,
        })
    }

    pub(crate) fn is_loading(&self) -> bool {
        if self.loading_forced.load(Ordering::Relaxed) {
            return true;
        }
        let mut until = self.loading_until.lock();
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    fn roll(rate: &AtomicU64) -> bool {
        let p = f64::from_bits(rate.load(Ordering::Relaxed));
        p > 0.0 && rand::random::<f64>() < p
    }

    pub(crate) fn roll_fail(&self) -> bool {
        Self::roll(&self.fail_rate)
    }

    pub(crate) fn roll_hang(&self) -> bool {
        Self::roll(&self.hang_rate)
    }

    /// Counts a generation request; requests a crash when `crash_after` is reached.
    pub(crate) fn count_received(&self) {
        let n = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        if self.config.crash_after.is_some_and(|limit| n >= limit) {
            self.crash.send_replace(true);
        }
    }

    pub(crate) fn count_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A free slot now, if any.
    pub(crate) fn try_slot(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(self.occupy(permit))
    }

    /// Waits for a free slot (counted as deferred meanwhile).
    pub(crate) async fn wait_slot(self: &Arc<Self>) -> Option<Slot> {
        self.deferred.fetch_add(1, Ordering::Relaxed);
        let permit = self.slots.clone().acquire_owned().await;
        self.deferred.fetch_sub(1, Ordering::Relaxed);
        Some(self.occupy(permit.ok()?))
    }

    fn occupy(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        let task = self.received.load(Ordering::Relaxed);
        let mut busy = self.busy.lock();
        // A permit guarantees a free entry: permits and entries are equal in number.
        let index = busy.iter().position(Option::is_none).unwrap_or(0);
        busy[index] = Some(task);
        Slot {
            shared: self.clone(),
            index,
            _permit: permit,
        }
    }

    /// `(slot id, task id when processing)` for every slot.
    pub(crate) fn slot_states(&self) -> Vec<Option<u64>> {
        self.busy.lock().clone()
    }

    pub(crate) fn stats(&self) -> MockStats {
        MockStats {
            received: self.received.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            processing: self.busy.lock().iter().filter(|s| s.is_some()).count() as u64,
            deferred: self.deferred.load(Ordering::Relaxed),
            tokens_predicted: self.tokens_predicted.load(Ordering::Relaxed),
        }
    }
}

/// Counts one generation request in progress until dropped.
pub(crate) struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One occupied slot until dropped.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    index: usize,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(s) = self.shared.busy.lock().get_mut(self.index) {
            *s = None;
        }
    }
}

/// Run-time control of a mock server: change injected faults, read counters, learn when a crash
/// was requested. Cheap to clone.
#[derive(Clone)]
pub struct MockHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHandle")
            .field("model", &self.shared.config.model)
            .finish_non_exhaustive()
    }
}

impl MockHandle {
    /// Sets the probability (0..=1) of an injected 500.
    pub fn set_fail_rate(&self, rate: f64) {
        self.shared
            .fail_rate
            .store(f64_bits(rate), Ordering::Relaxed);
    }

    /// Sets the probability (0..=1) that a request is never answered.
    pub fn set_hang_rate(&self, rate: f64) {
        self.shared
            .hang_rate
            .store(f64_bits(rate), Ordering::Relaxed);
    }

    /// Puts the server into (true) or out of (false) the "Loading model" state; false also ends
    /// the initial `loading_for_ms` period.
    pub fn set_loading(&self, loading: bool) {
        self.shared.loading_forced.store(loading, Ordering::Relaxed);
        if !loading {
            *self.shared.loading_until.lock() = None;
        }
    }

    /// Current counters.
    pub fn stats(&self) -> MockStats {
        self.shared.stats()
    }

    /// The configuration the server was started with.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// Resolves once `crash_after` requests were received (never when `crash_after` is unset).
    pub async fn crash_requested(&self) {
        let mut rx = self.shared.crash.subscribe();
        // `wait_for` fails only if the sender is dropped, which cannot happen while `self` lives.
        let _ = rx.wait_for(|crashed| *crashed).await;
    }
}
