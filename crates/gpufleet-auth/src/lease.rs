//! [`LeaseStore`]: named, expiring leases in the shared metadata store, so work that must run once
//! per fleet (health cycles, partition maintenance, the watchdog) runs on one replica at a time.
//!
//! A replica calls [`LeaseStore::try_acquire`] before each round of such work and does the round
//! only when it returns `true`; calling it again before the lease ends renews it. A holder that
//! dies simply stops renewing, and the lease passes to the next caller once `expires_ms` is
//! reached. Times are epoch milliseconds from the callers' clocks, so replicas need clocks in
//! step to well within the TTL.
//!
//! Implemented by [`crate::SqliteMetaStore`] and [`crate::PostgresMetaStore`] (a `leases` table);
//! both run the conformance cases in [`conformance`] through [`lease_test_suite!`](crate::lease_test_suite).

use crate::metastore::StoreError;
use async_trait::async_trait;
use std::time::Duration;

/// Named leases with an expiry, shared by every replica.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes the lease `name` for `holder` until `now_ms + ttl` when it is free, expired
    /// (`expires_ms <= now_ms`) or already held by `holder` (a renewal). Returns whether `holder`
    /// holds it now. Atomic: of several callers contending for a free lease exactly one wins.
    async fn try_acquire(&self, name: &str, holder: &str, ttl: Duration, now_ms: i64) -> Result<bool, StoreError>;

    /// Gives the lease up if `holder` holds it; returns whether it did.
    async fn release(&self, name: &str, holder: &str) -> Result<bool, StoreError>;

    /// The last holder of `name` and when its lease ends (it may already have ended: compare
    /// with the current time). `None` when nobody took it or it was released.
    async fn holder(&self, name: &str) -> Result<Option<(String, i64)>, StoreError>;
}

/// `now_ms + ttl` in milliseconds, saturating instead of overflowing.
pub(crate) fn expiry_ms(ttl: Duration, now_ms: i64) -> i64 {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_add(ttl_ms)
}

/// The [`LeaseStore`] conformance cases. Test-support code: cases fail by panicking with a
/// message naming the broken contract.
pub mod conformance {
    use super::LeaseStore;
    use std::{any::Any, sync::Arc, time::Duration};

    const TTL: Duration = Duration::from_millis(100);

    /// A fresh lease store plus whatever must live as long as it (a temp dir, a schema guard).
    pub struct TestLeases {
        /// The store under test.
        pub store: Arc<dyn LeaseStore>,
        _guard: Box<dyn Any + Send + Sync>,
    }

    impl TestLeases {
        /// Wraps a store and its guard.
        pub fn new(store: Arc<dyn LeaseStore>, guard: impl Any + Send + Sync) -> Self {
            Self { store, _guard: Box::new(guard) }
        }
    }

    /// A free lease goes to the first caller; a second holder is refused until it ends.
    pub async fn first_caller_wins(s: &dyn LeaseStore) {
        assert_eq!(s.holder("health").await.expect("holder"), None, "no lease before anyone takes it");
        assert!(s.try_acquire("health", "a", TTL, 1_000).await.expect("acquire"), "a free lease is taken");
        assert!(!s.try_acquire("health", "b", TTL, 1_050).await.expect("contend"), "a held lease is refused");
        assert_eq!(s.holder("health").await.expect("holder"), Some(("a".to_owned(), 1_100)));
        assert!(s.try_acquire("watchdog", "b", TTL, 1_050).await.expect("other name"), "names are independent");
    }

    /// Once the lease has ended, the next caller gets it and the old holder is refused.
    pub async fn expiry_hands_it_over(s: &dyn LeaseStore) {
        assert!(s.try_acquire("health", "a", TTL, 1_000).await.expect("acquire"));
        assert!(!s.try_acquire("health", "b", TTL, 1_099).await.expect("before expiry"), "held until expires_ms");
        assert!(s.try_acquire("health", "b", TTL, 1_100).await.expect("at expiry"), "free at expires_ms");
        assert_eq!(s.holder("health").await.expect("holder"), Some(("b".to_owned(), 1_200)));
        assert!(!s.try_acquire("health", "a", TTL, 1_150).await.expect("old holder"), "the old holder lost it");
        assert!(!s.release("health", "a").await.expect("release by old holder"), "only the holder releases");
        assert_eq!(s.holder("health").await.expect("holder").map(|h| h.0), Some("b".to_owned()));
    }

    /// Renewing before the end keeps the lease and moves its end.
    pub async fn renewal_keeps_it(s: &dyn LeaseStore) {
        assert!(s.try_acquire("health", "a", TTL, 1_000).await.expect("acquire"));
        assert!(s.try_acquire("health", "a", TTL, 1_090).await.expect("renew"), "the holder renews");
        assert_eq!(s.holder("health").await.expect("holder"), Some(("a".to_owned(), 1_190)));
        assert!(!s.try_acquire("health", "b", TTL, 1_150).await.expect("contend"), "renewed: still a's");
        // Renewing after the end also works while nobody else took it.
        assert!(s.try_acquire("health", "a", TTL, 1_500).await.expect("late renew"));
        assert_eq!(s.holder("health").await.expect("holder"), Some(("a".to_owned(), 1_600)));
    }

    /// Releasing frees the lease at once.
    pub async fn release_frees_it(s: &dyn LeaseStore) {
        assert!(s.try_acquire("health", "a", TTL, 1_000).await.expect("acquire"));
        assert!(s.release("health", "a").await.expect("release"));
        assert!(!s.release("health", "a").await.expect("release twice"), "already released");
        assert_eq!(s.holder("health").await.expect("holder"), None);
        assert!(s.try_acquire("health", "b", TTL, 1_001).await.expect("acquire after release"));
        assert!(!s.release("unknown", "a").await.expect("release unknown"));
    }

    /// Holders racing for the same free lease: exactly one wins each round.
    pub async fn contenders_get_exactly_one_winner(s: Arc<dyn LeaseStore>) {
        for round in 0..20_i64 {
            let name = format!("round-{round}");
            let tasks: Vec<_> = (0..4)
                .map(|h| {
                    let (s, name) = (s.clone(), name.clone());
                    tokio::spawn(async move {
                        s.try_acquire(&name, &format!("holder-{h}"), TTL, 1_000).await.expect("try_acquire")
                    })
                })
                .collect();
            let mut winners = 0;
            for t in tasks {
                winners += usize::from(t.await.expect("contender task"));
            }
            assert_eq!(winners, 1, "round {round}: exactly one contender must win");
            assert!(s.holder(&name).await.expect("holder").is_some());
        }
    }
}

/// Generates one `#[tokio::test]` per [`conformance`] case. `$make` is an
/// `async fn() -> conformance::TestLeases` returning a fresh, empty store.
#[macro_export]
macro_rules! lease_test_suite {
    ($make:path) => {
        $crate::lease_test_suite!(@case $make, first_caller_wins);
        $crate::lease_test_suite!(@case $make, expiry_hands_it_over);
        $crate::lease_test_suite!(@case $make, renewal_keeps_it);
        $crate::lease_test_suite!(@case $make, release_frees_it);

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn contenders_get_exactly_one_winner() {
            let t = $make().await;
            $crate::lease::conformance::contenders_get_exactly_one_winner(t.store.clone()).await;
        }
    };
    (@case $make:path, $case:ident) => {
        #[tokio::test]
        async fn $case() {
            let t = $make().await;
            $crate::lease::conformance::$case(&*t.store).await;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_saturates() {
        assert_eq!(expiry_ms(Duration::from_millis(100), 1_000), 1_100);
        assert_eq!(expiry_ms(Duration::MAX, 1_000), i64::MAX);
        assert_eq!(expiry_ms(Duration::from_secs(1), i64::MAX - 1), i64::MAX);
    }
}
