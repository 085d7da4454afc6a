//! [`RetryPolicy`] and [`deliver`]: up to `attempts` tries of one notifier, each bounded by the
//! policy's timeout, with capped exponential backoff and jitter in between; a receiver's
//! `Retry-After` (on 429 or 503) is honoured up to the cap. Errors that cannot be cured by trying
//! again (4xx other than 408/429, configuration) stop at once.

use super::{Message, Notifier, NotifyError};
use gpufleet_runtime::Backoff;
use std::time::Duration;
use tracing::{debug, warn};

/// How hard one notifier is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// First backoff delay.
    pub base: Duration,
    /// Longest delay (also the cap on `Retry-After`).
    pub max: Duration,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 4, base: Duration::from_millis(500), max: Duration::from_secs(10), timeout: Duration::from_secs(10) }
    }
}

/// Sends `msg` through `n` under `policy`; returns the attempts made and the outcome.
pub async fn deliver(n: &dyn Notifier, msg: &Message, policy: &RetryPolicy) -> (u32, Result<(), NotifyError>) {
    let mut backoff = Backoff::new(policy.base, policy.max);
    let attempts = policy.attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match n.send_once(msg, policy.timeout).await {
            Ok(()) => {
                debug!(notifier = n.name(), kind = n.kind(), attempt, "notification sent");
                return (attempt, Ok(()));
            }
            Err(e) => e,
        };
        if attempt >= attempts || !error.retryable() {
            warn!(notifier = n.name(), kind = n.kind(), attempt, %error, "notification not delivered");
            return (attempt, Err(error));
        }
        let mut delay = backoff.next_delay();
        if let NotifyError::Status { retry_after_s: Some(s), .. } = &error {
            delay = delay.max(Duration::from_secs(*s)).min(policy.max);
        }
        debug!(notifier = n.name(), attempt, %error, ?delay, "notification failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct Flaky {
        calls: AtomicU32,
        fail_first: u32,
        status: u16,
    }

    #[async_trait]
    impl Notifier for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn kind(&self) -> &'static str {
            "test"
        }
        async fn send_once(&self, _: &Message, _: Duration) -> Result<(), NotifyError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                Err(NotifyError::Status { notifier: "flaky".into(), status: self.status, detail: None, retry_after_s: Some(1) })
            } else {
                Ok(())
            }
        }
    }

    fn msg() -> Message {
        Message { title: "t".into(), lines: vec![], severity: None, payload: serde_json::Value::Null }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_then_gives_up() {
        let policy = RetryPolicy { attempts: 4, ..RetryPolicy::default() };
        let n = Flaky { calls: AtomicU32::new(0), fail_first: 2, status: 503 };
        let (attempts, r) = deliver(&n, &msg(), &policy).await;
        assert_eq!((attempts, r.is_ok()), (3, true));
        let n = Flaky { calls: AtomicU32::new(0), fail_first: 10, status: 500 };
        let (attempts, r) = deliver(&n, &msg(), &policy).await;
        assert_eq!(attempts, 4);
        assert!(matches!(r, Err(NotifyError::Status { status: 500, .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_are_not_retried_but_429_is() {
        let policy = RetryPolicy::default();
        let n = Flaky { calls: AtomicU32::new(0), fail_first: 10, status: 400 };
        assert_eq!(deliver(&n, &msg(), &policy).await.0, 1);
        let n = Flaky { calls: AtomicU32::new(0), fail_first: 1, status: 429 };
        let started = tokio::time::Instant::now();
        assert_eq!(deliver(&n, &msg(), &policy).await.0, 2);
        // Retry-After: 1 s was waited (paused clock: exact).
        assert!(started.elapsed() >= Duration::from_secs(1));
    }
}
