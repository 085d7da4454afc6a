//! The per-backend circuit breaker: closed → open on N consecutive failures or a failure ratio
//! over a sliding window → half-open after a cooldown, admitting exactly ONE probe → closed when
//! it succeeds, open again when it fails.
//!
//! It is fed by real traffic ([`Breaker::record`], with only the outcomes
//! [`crate::GatewayError::is_backend_failure`] calls failures) and by the active health check
//! ([`Breaker::record_health`]): a failed check counts as a failure; a passing check after the
//! cooldown serves as the half-open probe. Time is `tokio::time::Instant`, so tests run it with
//! paused time. Callers report the returned state changes to metrics and wake the queue.

use crate::config::BreakerSettings;
use parking_lot::Mutex;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// Breaker state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// Traffic is refused until the cooldown ends.
    Open,
    /// One probe request is allowed; its outcome decides.
    HalfOpen,
}

impl BreakerState {
    /// Label for metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Whether a request may go to the backend now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Closed: go.
    Yes,
    /// Half-open: go, and you are the one probe; report your outcome with `probe = true`.
    Probe,
    /// Open, or the probe is already out.
    No,
}

const BUCKETS: usize = 10;

/// Outcome counts over a sliding window of `BUCKETS` buckets.
struct Window {
    bucket: Duration,
    epoch: Instant,
    slots: [(u64, u32, u32); BUCKETS],
}

impl Window {
    fn new(window: Duration, now: Instant) -> Self {
        let bucket = (window / BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            bucket,
            epoch: now,
            slots: [(u64::MAX, 0, 0); BUCKETS],
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_nanos() / self.bucket.as_nanos()) as u64
    }

    fn push(&mut self, now: Instant, ok: bool) {
        let n = self.slot(now);
        let b = &mut self.slots[(n % BUCKETS as u64) as usize];
        if b.0 != n {
            *b = (n, 0, 0);
        }
        if ok {
            b.1 += 1;
        } else {
            b.2 += 1;
        }
    }

    /// (successes, failures) within the window.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let cur = self.slot(now);
        self.slots
            .iter()
            .filter(|b| b.0 != u64::MAX && cur.saturating_sub(b.0) < BUCKETS as u64)
            .fold((0, 0), |(o, e), b| (o + b.1, e + b.2))
    }

    fn clear(&mut self) {
        self.slots = [(u64::MAX, 0, 0); BUCKETS];
    }
}

struct Inner {
    state: BreakerState,
    consecutive: u32,
    window: Window,
    opened_at: Instant,
    probe_out: bool,
}

/// One backend's breaker.
pub(crate) struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub(crate) fn new(settings: BreakerSettings) -> Self {
        let now = Instant::now();
        let inner = Inner {
            state: BreakerState::Closed,
            consecutive: 0,
            window: Window::new(settings.window, now),
            opened_at: now,
            probe_out: false,
        };
        Self {
            settings,
            inner: Mutex::new(inner),
        }
    }

    /// The state as the API shows it.
    pub(crate) fn state(&self) -> BreakerState {
        self.inner.lock().state
    }

    /// Whether a request would be admitted now (without taking the probe).
    pub(crate) fn would_admit(&self, now: Instant) -> bool {
        let g = self.inner.lock();
        match g.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => !g.probe_out,
            BreakerState::Open => {
                now.saturating_duration_since(g.opened_at) >= self.settings.cooldown
            }
        }
    }

    /// Admits a request, turning open into half-open once the cooldown is over.
    pub(crate) fn admit(&self, now: Instant) -> (Admit, Option<BreakerState>) {
        let mut g = self.inner.lock();
        match g.state {
            BreakerState::Closed => (Admit::Yes, None),
            BreakerState::HalfOpen if !g.probe_out => {
                g.probe_out = true;
                (Admit::Probe, None)
            }
            BreakerState::HalfOpen => (Admit::No, None),
            BreakerState::Open
                if now.saturating_duration_since(g.opened_at) >= self.settings.cooldown =>
            {
                g.state = BreakerState::HalfOpen;
                g.probe_out = true;
                (Admit::Probe, Some(BreakerState::HalfOpen))
            }
            BreakerState::Open => (Admit::No, None),
        }
    }

    /// The probe ended without a verdict (client went away): another probe may go.
    pub(crate) fn release_probe(&self) {
        self.inner.lock().probe_out = false;
    }

    /// Records the outcome of a request; returns the new state if it changed.
    pub(crate) fn record(&self, ok: bool, probe: bool, now: Instant) -> Option<BreakerState> {
        let mut g = self.inner.lock();
        match g.state {
            BreakerState::Closed => {
                g.window.push(now, ok);
                if ok {
                    g.consecutive = 0;
                    return None;
                }
                g.consecutive += 1;
                let (oks, errs) = g.window.totals(now);
                let total = oks + errs;
                let rate_trips = total >= self.settings.min_requests
                    && f64::from(errs) >= self.settings.error_rate * f64::from(total);
                (g.consecutive >= self.settings.consecutive_failures || rate_trips)
                    .then(|| Self::open(&mut g, now))
            }
            BreakerState::HalfOpen if probe => {
                g.probe_out = false;
                Some(if ok {
                    Self::close(&mut g)
                } else {
                    Self::open(&mut g, now)
                })
            }
            // Outcomes of requests admitted before the breaker opened say nothing new.
            BreakerState::HalfOpen | BreakerState::Open => None,
        }
    }

    /// Records an active health check: a failure counts like a failed request (and restarts the
    /// cooldown when open); a pass after the cooldown is the half-open probe and closes.
    pub(crate) fn record_health(&self, ok: bool, now: Instant) -> Option<BreakerState> {
        {
            let mut g = self.inner.lock();
            match g.state {
                BreakerState::Closed if ok => return None,
                BreakerState::Closed => {}
                BreakerState::Open if !ok => {
                    g.opened_at = now;
                    return None;
                }
                BreakerState::Open
                    if now.saturating_duration_since(g.opened_at) >= self.settings.cooldown =>
                {
                    return Some(Self::close(&mut g));
                }
                BreakerState::Open => return None,
                // The real probe request decides; a failed check reopens at once.
                BreakerState::HalfOpen if ok => return None,
                BreakerState::HalfOpen => {
                    g.probe_out = false;
                    return Some(Self::open(&mut g, now));
                }
            }
        }
        self.record(false, false, now)
    }

    fn open(g: &mut Inner, now: Instant) -> BreakerState {
        g.state = BreakerState::Open;
        g.opened_at = now;
        g.probe_out = false;
        BreakerState::Open
    }

    fn close(g: &mut Inner) -> BreakerState {
        g.state = BreakerState::Closed;
        g.consecutive = 0;
        g.probe_out = false;
        g.window.clear();
        BreakerState::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 3,
            error_rate: 0.5,
            window: Duration::from_secs(10),
            min_requests: 10,
            cooldown: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_and_success_resets_the_count() {
        let b = Breaker::new(settings());
        let now = Instant::now();
        assert_eq!(b.record(false, false, now), None);
        assert_eq!(b.record(false, false, now), None);
        assert_eq!(
            b.record(true, false, now),
            None,
            "a success resets the streak"
        );
        assert_eq!(b.record(false, false, now), None);
        assert_eq!(b.record(false, false, now), None);
        assert_eq!(b.record(false, false, now), Some(BreakerState::Open));
        assert_eq!(b.admit(now).0, Admit::No);
    }

    #[tokio::test(start_paused = true)]
    async fn error_rate_over_the_window_opens_and_old_outcomes_age_out() {
        let b = Breaker::new(settings());
        let t0 = Instant::now();
        // 6 ok / 4 failed, never 3 in a row: 40 % < 50 %.
        for ok in [
            true, false, true, false, true, false, true, false, true, true,
        ] {
            assert_eq!(b.record(ok, false, t0), None);
        }
        // 11 s later the old outcomes are gone; a fresh mix of 5/5 over ≥ 10 trips on the rate.
        let t1 = t0 + Duration::from_secs(11);
        let mut opened = None;
        for ok in [
            false, true, false, true, false, true, false, true, true, false,
        ] {
            opened = opened.or(b.record(ok, false, t1));
        }
        assert_eq!(opened, Some(BreakerState::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_one_probe_and_its_success_closes() {
        let b = Breaker::new(settings());
        for _ in 0..3 {
            b.record(false, false, Instant::now());
        }
        assert_eq!(b.admit(Instant::now()).0, Admit::No);
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        assert!(b.would_admit(now));
        assert_eq!(b.admit(now), (Admit::Probe, Some(BreakerState::HalfOpen)));
        assert_eq!(b.admit(now).0, Admit::No, "only one probe while it is out");
        assert!(!b.would_admit(now));
        assert_eq!(
            b.record(true, false, now),
            None,
            "a late outcome of an older request does not decide"
        );
        assert_eq!(b.record(true, true, now), Some(BreakerState::Closed));
        assert_eq!(b.admit(now).0, Admit::Yes);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_and_restarts_the_cooldown() {
        let b = Breaker::new(settings());
        for _ in 0..3 {
            b.record(false, false, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(b.admit(Instant::now()).0, Admit::Probe);
        assert_eq!(
            b.record(false, true, Instant::now()),
            Some(BreakerState::Open)
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            b.admit(Instant::now()).0,
            Admit::No,
            "cooldown counts from the failed probe"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(Instant::now()).0, Admit::Probe);
        b.release_probe();
        assert_eq!(
            b.admit(Instant::now()).0,
            Admit::Probe,
            "an abandoned probe frees the slot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn health_checks_open_and_close() {
        let b = Breaker::new(settings());
        assert_eq!(b.record_health(true, Instant::now()), None);
        b.record_health(false, Instant::now());
        b.record_health(false, Instant::now());
        assert_eq!(
            b.record_health(false, Instant::now()),
            Some(BreakerState::Open)
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            b.record_health(true, Instant::now()),
            None,
            "still cooling down"
        );
        assert_eq!(b.record_health(false, Instant::now()), None);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            b.record_health(true, Instant::now()),
            None,
            "the failed check restarted the cooldown"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            b.record_health(true, Instant::now()),
            Some(BreakerState::Closed)
        );
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
