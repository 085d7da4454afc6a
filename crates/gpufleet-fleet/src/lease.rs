//! [`LocalLeases`]: an in-process [`LeaseStore`] for a single server (and for tests and the
//! benchmark). Replicas sharing a database must use the metadata store's leases instead
//! (`SqliteMetaStore` / `PostgresMetaStore` of `gpufleet-auth`), or each would run every cycle.

use async_trait::async_trait;
use gpufleet_auth::{LeaseStore, StoreError};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

/// Leases held in this process's memory.
#[derive(Debug, Default)]
pub struct LocalLeases {
    leases: Mutex<HashMap<String, (String, i64)>>,
}

impl LocalLeases {
    /// No lease taken.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl LeaseStore for LocalLeases {
    async fn try_acquire(&self, name: &str, holder: &str, ttl: Duration, now_ms: i64) -> Result<bool, StoreError> {
        let mut map = self.leases.lock();
        let expires = now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let free = map.get(name).is_none_or(|(h, until)| h == holder || *until <= now_ms);
        if free {
            map.insert(name.to_owned(), (holder.to_owned(), expires));
        }
        Ok(free)
    }

    async fn release(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        let mut map = self.leases.lock();
        if map.get(name).is_some_and(|(h, _)| h == holder) {
            map.remove(name);
            return Ok(true);
        }
        Ok(false)
    }

    async fn holder(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        Ok(self.leases.lock().get(name).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_leases_follow_the_contract() {
        let s = LocalLeases::new();
        gpufleet_auth::lease::conformance::first_caller_wins(&s).await;
        let s = LocalLeases::new();
        gpufleet_auth::lease::conformance::expiry_hands_it_over(&s).await;
        let s = LocalLeases::new();
        gpufleet_auth::lease::conformance::renewal_keeps_it(&s).await;
        let s = LocalLeases::new();
        gpufleet_auth::lease::conformance::release_frees_it(&s).await;
    }
}
