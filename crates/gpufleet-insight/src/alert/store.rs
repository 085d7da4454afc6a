//! Where alerts and silences are kept across restarts: the [`AlertStore`] trait and
//! [`MemoryAlertStore`], the default (nothing survives a restart; resolved history bounded).
//! [`super::sqlite::SqliteAlertStore`] keeps them in a SQLite file.

use super::engine::{Alert, AlertStatus, Change};
use super::silence::Silence;
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use thiserror::Error;

/// A storage failure.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database failed.
    #[error("alert store: {0}")]
    Backend(String),
    /// A stored row could not be read back.
    #[error("alert store: corrupt row {id}: {reason}")]
    Corrupt {
        /// Row id.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// What a store holds at start-up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    /// Pending and firing alerts.
    pub active: Vec<Alert>,
    /// Silences not yet ended.
    pub silences: Vec<Silence>,
    /// Resolved alerts, newest first (bounded by the store).
    pub history: Vec<Alert>,
}

/// Persistence of alerts and silences.
#[async_trait]
pub trait AlertStore: Send + Sync + 'static {
    /// Everything needed to restore an engine at `now_ms` (ended silences left out).
    async fn load(&self, now_ms: i64, history: usize) -> Result<Loaded, StoreError>;
    /// Applies the changes of one evaluation, in order.
    async fn apply(&self, changes: &[Change]) -> Result<(), StoreError>;
    /// Resolved alerts, newest first, at most `limit`.
    async fn history(&self, limit: usize) -> Result<Vec<Alert>, StoreError>;
    /// Stores a new silence.
    async fn put_silence(&self, s: &Silence) -> Result<(), StoreError>;
    /// Deletes a silence; whether it existed.
    async fn delete_silence(&self, id: &str) -> Result<bool, StoreError>;
}

/// The in-memory store.
#[derive(Debug)]
pub struct MemoryAlertStore {
    inner: Mutex<Mem>,
    history_cap: usize,
}

#[derive(Debug, Default)]
struct Mem {
    active: BTreeMap<String, Alert>,
    history: VecDeque<Alert>,
    silences: BTreeMap<String, Silence>,
}

impl MemoryAlertStore {
    /// A store keeping at most `history_cap` resolved alerts.
    pub fn new(history_cap: usize) -> Self {
        Self { inner: Mutex::new(Mem::default()), history_cap }
    }
}

impl Default for MemoryAlertStore {
    fn default() -> Self {
        Self::new(1000)
    }
}

#[async_trait]
impl AlertStore for MemoryAlertStore {
    async fn load(&self, now_ms: i64, history: usize) -> Result<Loaded, StoreError> {
        let m = self.inner.lock();
        Ok(Loaded {
            active: m.active.values().cloned().collect(),
            silences: m.silences.values().filter(|s| s.ends_ms > now_ms).cloned().collect(),
            history: m.history.iter().take(history).cloned().collect(),
        })
    }

    async fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut m = self.inner.lock();
        for c in changes {
            match c {
                Change::Remove(id) => {
                    m.active.remove(id);
                }
                Change::Upsert(a) if a.status == AlertStatus::Resolved => {
                    m.active.remove(&a.id);
                    m.history.push_front((**a).clone());
                    m.history.truncate(self.history_cap);
                }
                Change::Upsert(a) => {
                    m.active.insert(a.id.clone(), (**a).clone());
                }
            }
        }
        Ok(())
    }

    async fn history(&self, limit: usize) -> Result<Vec<Alert>, StoreError> {
        Ok(self.inner.lock().history.iter().take(limit).cloned().collect())
    }

    async fn put_silence(&self, s: &Silence) -> Result<(), StoreError> {
        self.inner.lock().silences.insert(s.id.clone(), s.clone());
        Ok(())
    }

    async fn delete_silence(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.inner.lock().silences.remove(id).is_some())
    }
}
