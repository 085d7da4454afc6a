//! The in-memory cache of keys that [`crate::AuthService`] checks credentials against, so a hot key
//! costs a hash and a map lookup, not a database round trip.
//!
//! Entries are refreshed from the store after a TTL (that is how a revocation made by another
//! replica arrives). A revocation made through this process replaces the entry with a tombstone
//! at once, and a tombstone is never overwritten by a (possibly older) load, so a revoked key
//! stops working here the moment `revoke` returns. Last-use times are kept in the entries and
//! written to the store in batches ([`KeyCache::take_last_used`]).

use crate::identity::Identity;
use crate::key::{KeyHash, KeyPrefix};
use crate::record::KeyRecord;
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

/// One cached key.
#[derive(Debug)]
pub(crate) struct CachedKey {
    pub(crate) hash: KeyHash,
    pub(crate) identity: Arc<Identity>,
    pub(crate) revoked: bool,
    pub(crate) expires_at_ms: Option<i64>,
    /// When it was read from the store (epoch ms).
    pub(crate) loaded_at_ms: i64,
    /// Last successful use not yet written to the store; 0 = nothing to write.
    last_used_ms: AtomicI64,
}

impl CachedKey {
    fn from_record(r: &KeyRecord, now_ms: i64) -> Self {
        Self {
            hash: r.hash,
            identity: Arc::new(Identity::from_record(r)),
            revoked: r.is_revoked(),
            expires_at_ms: r.expires_at_ms,
            loaded_at_ms: now_ms,
            last_used_ms: AtomicI64::new(0),
        }
    }

    /// Notes a successful use at `now_ms`.
    pub(crate) fn touch(&self, now_ms: i64) {
        self.last_used_ms.fetch_max(now_ms, Ordering::Relaxed);
    }
}

/// Prefix → cached key.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    map: RwLock<FxHashMap<KeyPrefix, Arc<CachedKey>>>,
}

impl KeyCache {
    pub(crate) fn get(&self, prefix: &KeyPrefix) -> Option<Arc<CachedKey>> {
        self.map.read().get(prefix).cloned()
    }

    /// Caches a record read from the store, unless a tombstone is already there. Returns the
    /// entry now cached.
    pub(crate) fn insert_loaded(&self, r: &KeyRecord, now_ms: i64) -> Arc<CachedKey> {
        let mut map = self.map.write();
        if let Some(existing) = map.get(&r.prefix) {
            if existing.revoked && !r.is_revoked() {
                return existing.clone();
            }
        }
        let entry = Arc::new(CachedKey::from_record(r, now_ms));
        if let Some(old) = map.insert(r.prefix, entry.clone()) {
            entry.touch(old.last_used_ms.load(Ordering::Relaxed));
        }
        entry
    }

    /// Replaces the entry with a tombstone: the key fails with "revoked" from now on.
    pub(crate) fn revoke(&self, r: &KeyRecord, now_ms: i64) {
        let mut tombstone = CachedKey::from_record(r, now_ms);
        tombstone.revoked = true;
        self.map.write().insert(r.prefix, Arc::new(tombstone));
    }

    /// Drops the entry (the next use reads the store).
    pub(crate) fn invalidate(&self, prefix: &KeyPrefix) {
        self.map.write().remove(prefix);
    }

    /// Takes the last-use times noted since the previous call.
    pub(crate) fn take_last_used(&self) -> Vec<(KeyPrefix, i64)> {
        self.map
            .read()
            .iter()
            .filter_map(|(p, e)| {
                let t = e.last_used_ms.swap(0, Ordering::Relaxed);
                (t > 0).then_some((*p, t))
            })
            .collect()
    }

    /// Puts back last-use times that could not be written.
    pub(crate) fn restore_last_used(&self, uses: &[(KeyPrefix, i64)]) {
        let map = self.map.read();
        for (p, t) in uses {
            if let Some(e) = map.get(p) {
                e.touch(*t);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ApiKey;
    use crate::record::Owner;
    use crate::role::Role;

    fn record() -> KeyRecord {
        let k = ApiKey::generate();
        KeyRecord::new(k.prefix(), k.hash(), Owner::new("dave").unwrap(), Role::Viewer, 0)
    }

    #[test]
    fn a_tombstone_is_not_overwritten_by_a_stale_load() {
        let c = KeyCache::default();
        let r = record();
        c.insert_loaded(&r, 1);
        c.revoke(&r, 2);
        let e = c.insert_loaded(&r, 3);
        assert!(e.revoked);
        assert!(c.get(&r.prefix).unwrap().revoked);
        c.invalidate(&r.prefix);
        assert!(c.get(&r.prefix).is_none());
    }

    #[test]
    fn last_use_is_taken_once_and_survives_a_reload() {
        let c = KeyCache::default();
        let r = record();
        c.insert_loaded(&r, 1).touch(50);
        c.get(&r.prefix).unwrap().touch(40);
        c.insert_loaded(&r, 60);
        assert_eq!(c.take_last_used(), vec![(r.prefix, 50)]);
        assert!(c.take_last_used().is_empty());
        c.restore_last_used(&[(r.prefix, 70)]);
        assert_eq!(c.take_last_used(), vec![(r.prefix, 70)]);
        assert_eq!(c.len(), 1);
    }
}
