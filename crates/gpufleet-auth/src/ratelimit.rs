//! Rate limits: the [`RateLimiter`] trait and its in-process implementation on `governor`
//! ([`LocalRateLimiter`], a GCRA token bucket per key).
//!
//! A request is checked once per subject it has — its client IP, and its API key prefix once
//! authenticated — in the quota of its [`LimitClass`]: management routes (default 30/min),
//! telemetry ingest and reads (default 12,000/min: streamers, agents and dashboards are chatty by
//! design), or the inference gateway (default 600/min). A refusal carries a [`RetryAfter`] for the `Retry-After`
//! header of the 429.
//!
//! The trait is async so a distributed implementation (Redis, shared by every replica) can make a
//! round trip; the local one never waits.

use crate::key::KeyPrefix;
use async_trait::async_trait;
use governor::{
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    state::InMemoryState,
    Quota,
};
use serde::{Deserialize, Serialize};
use std::{net::IpAddr, num::NonZeroU32, time::Duration};

/// Which budget a request draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitClass {
    /// Management routes: changes and administration (`/api/v1/…`).
    Management,
    /// Telemetry ingest and telemetry/inventory reads.
    Telemetry,
    /// The inference gateway (`/v1/…`).
    Inference,
}

/// Who is being limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitSubject {
    /// An API key, by prefix.
    Key(KeyPrefix),
    /// A client IP.
    Ip(IpAddr),
}

/// One rate-limit bucket: a subject within a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LimitKey {
    /// The budget.
    pub class: LimitClass,
    /// The subject.
    pub subject: LimitSubject,
}

impl LimitKey {
    /// The bucket of a key prefix in `class`.
    pub fn key(class: LimitClass, prefix: KeyPrefix) -> Self {
        Self { class, subject: LimitSubject::Key(prefix) }
    }

    /// The bucket of a client IP in `class`.
    pub fn ip(class: LimitClass, ip: IpAddr) -> Self {
        Self { class, subject: LimitSubject::Ip(ip) }
    }
}

/// How long until the refused request could succeed. Always > 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, rounded up, at least 1.
    pub fn header_secs(&self) -> u64 {
        (self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)).max(1)
    }
}

/// Decides whether one more request fits a bucket (and counts it if so).
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request against `key`'s bucket, or says when to retry.
    async fn check(&self, key: &LimitKey) -> Result<(), RetryAfter>;

    /// [`Self::check`] when it can be answered without waiting (an in-process limiter);
    /// `None`: call `check`. Saves the boxed future of an async-trait call per request.
    fn check_at_once(&self, _key: &LimitKey) -> Option<Result<(), RetryAfter>> {
        None
    }

    /// Forgets buckets that are full again (they behave as new). Call periodically to bound memory.
    fn prune(&self) {}
}

/// Quotas of both classes. Each bucket refills at `*_per_minute` and holds up to `*_burst`
/// requests (default: one minute's worth).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Management requests per minute, per key and per IP.
    pub management_per_minute: NonZeroU32,
    /// Largest management burst; defaults to `management_per_minute`.
    pub management_burst: Option<NonZeroU32>,
    /// Inference requests per minute, per key and per IP.
    pub inference_per_minute: NonZeroU32,
    /// Largest inference burst; defaults to `inference_per_minute`.
    pub inference_burst: Option<NonZeroU32>,
    /// Telemetry ingest and read requests per minute, per key and per IP.
    pub telemetry_per_minute: NonZeroU32,
    /// Largest telemetry burst; defaults to `telemetry_per_minute`.
    pub telemetry_burst: Option<NonZeroU32>,
}

// Evaluated at compile time: a zero here fails the build, never a run.
const DEFAULT_MANAGEMENT_PER_MINUTE: NonZeroU32 = NonZeroU32::new(30).unwrap();
const DEFAULT_INFERENCE_PER_MINUTE: NonZeroU32 = NonZeroU32::new(600).unwrap();
const DEFAULT_TELEMETRY_PER_MINUTE: NonZeroU32 = NonZeroU32::new(12_000).unwrap();

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            management_per_minute: DEFAULT_MANAGEMENT_PER_MINUTE,
            management_burst: None,
            inference_per_minute: DEFAULT_INFERENCE_PER_MINUTE,
            inference_burst: None,
            telemetry_per_minute: DEFAULT_TELEMETRY_PER_MINUTE,
            telemetry_burst: None,
        }
    }
}

fn quota(per_minute: NonZeroU32, burst: Option<NonZeroU32>) -> Quota {
    Quota::per_minute(per_minute).allow_burst(burst.unwrap_or(per_minute))
}

/// Buckets by subject, hashed with aHash (randomly keyed per process, so subjects an attacker
/// picks cannot be made to collide; std's SipHash cost more than the bucket update itself).
type Buckets = dashmap::DashMap<LimitSubject, InMemoryState, ahash::RandomState>;

type Keyed<C> = governor::RateLimiter<LimitSubject, Buckets, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// In-process token buckets, one per (class, subject).
pub struct LocalRateLimiter<C: Clock = DefaultClock> {
    management: Keyed<C>,
    inference: Keyed<C>,
    telemetry: Keyed<C>,
    clock: C,
}

impl LocalRateLimiter<DefaultClock> {
    /// Buckets on the monotonic clock.
    pub fn new(config: &RateLimitConfig) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LocalRateLimiter<C> {
    /// Buckets on `clock` (tests pass `governor::clock::FakeRelativeClock`).
    pub fn with_clock(config: &RateLimitConfig, clock: C) -> Self {
        let make = |q| governor::RateLimiter::new(q, Buckets::with_hasher(ahash::RandomState::new()), clock.clone());
        Self {
            management: make(quota(config.management_per_minute, config.management_burst)),
            inference: make(quota(config.inference_per_minute, config.inference_burst)),
            telemetry: make(quota(config.telemetry_per_minute, config.telemetry_burst)),
            clock,
        }
    }

    /// Counts one request against `key`'s bucket, or says when to retry. Never waits.
    pub fn check_now(&self, key: &LimitKey) -> Result<(), RetryAfter> {
        let limiter = match key.class {
            LimitClass::Management => &self.management,
            LimitClass::Inference => &self.inference,
            LimitClass::Telemetry => &self.telemetry,
        };
        limiter.check_key(&key.subject).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            RetryAfter(wait.max(Duration::from_millis(1)))
        })
    }

    /// Buckets held in memory.
    pub fn len(&self) -> usize {
        self.management.len() + self.inference.len() + self.telemetry.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<C: Clock + Clone> std::fmt::Debug for LocalRateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRateLimiter").field("buckets", &self.len()).finish()
    }
}

#[async_trait]
impl<C> RateLimiter for LocalRateLimiter<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    async fn check(&self, key: &LimitKey) -> Result<(), RetryAfter> {
        self.check_now(key)
    }

    fn check_at_once(&self, key: &LimitKey) -> Option<Result<(), RetryAfter>> {
        Some(self.check_now(key))
    }

    fn prune(&self) {
        self.management.retain_recent();
        self.inference.retain_recent();
        self.telemetry.retain_recent();
        self.management.shrink_to_fit();
        self.inference.shrink_to_fit();
        self.telemetry.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter() -> (LocalRateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (LocalRateLimiter::with_clock(&RateLimitConfig::default(), clock.clone()), clock)
    }

    fn ip(last: u8) -> LimitKey {
        LimitKey::ip(LimitClass::Management, IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_burst_over_the_quota_is_refused_with_a_retry_after() {
        let (l, _) = limiter();
        for i in 0..30 {
            assert_eq!(l.check_now(&ip(1)), Ok(()), "request {i}");
        }
        let retry = l.check_now(&ip(1)).unwrap_err();
        assert!(retry.0 > Duration::ZERO && retry.0 <= Duration::from_secs(2), "{retry:?}");
        assert_eq!(retry.header_secs(), 2);
    }

    #[test]
    fn buckets_refill_with_time() {
        let (l, clock) = limiter();
        for _ in 0..30 {
            l.check_now(&ip(1)).unwrap();
        }
        assert!(l.check_now(&ip(1)).is_err());
        clock.advance(Duration::from_secs(2));
        assert_eq!(l.check_now(&ip(1)), Ok(()));
        assert!(l.check_now(&ip(1)).is_err());
    }

    #[test]
    fn subjects_and_classes_have_separate_buckets() {
        let (l, _) = limiter();
        for _ in 0..30 {
            l.check_now(&ip(1)).unwrap();
        }
        assert!(l.check_now(&ip(1)).is_err());
        assert_eq!(l.check_now(&ip(2)), Ok(()));
        let prefix = KeyPrefix::parse("abcd1234").unwrap();
        assert_eq!(l.check_now(&LimitKey::key(LimitClass::Management, prefix)), Ok(()));
        let inference = LimitKey::ip(LimitClass::Inference, IpAddr::from([10, 0, 0, 1]));
        for i in 0..600 {
            assert_eq!(l.check_now(&inference), Ok(()), "inference request {i}");
        }
        assert!(l.check_now(&inference).is_err());
    }

    #[test]
    fn configured_quotas_apply() {
        let config: RateLimitConfig = toml::from_str("management_per_minute = 60\nmanagement_burst = 2").unwrap();
        let l = LocalRateLimiter::with_clock(&config, FakeRelativeClock::default());
        assert!(l.check_now(&ip(1)).is_ok() && l.check_now(&ip(1)).is_ok());
        let retry = l.check_now(&ip(1)).unwrap_err();
        assert!(retry.0 <= Duration::from_secs(1), "{retry:?}");
        assert!(toml::from_str::<RateLimitConfig>("management_per_minute = 0").is_err());
        assert!(toml::from_str::<RateLimitConfig>("per_minute = 5").is_err());
    }

    #[test]
    fn prune_forgets_refilled_buckets() {
        let (l, clock) = limiter();
        l.check_now(&ip(1)).unwrap();
        l.check_now(&ip(2)).unwrap();
        assert_eq!(l.len(), 2);
        clock.advance(Duration::from_secs(120));
        l.prune();
        assert!(l.is_empty());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).header_secs(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(1500)).header_secs(), 2);
        assert_eq!(RetryAfter(Duration::from_secs(3)).header_secs(), 3);
    }
}
