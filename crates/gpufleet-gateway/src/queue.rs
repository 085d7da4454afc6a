//! Waiting for capacity: the priority order ([`WaitQueue`]), backpressure by depth
//! ([`Admission`]), and [`Pool::acquire`], which takes a lease at once or waits for one.
//!
//! # Order
//! Waiters are ordered by `arrival + rank × aging` (high 0, normal 1, low 2), then arrival order.
//! High goes first among requests that arrived within `aging` of each other, and a request is
//! never passed by one that arrived more than `2 × aging` after it: starvation-free by aging.
//!
//! # Dispatch
//! Event driven, no polling: a waiter is handed a lease (through a oneshot channel) by
//! [`Pool::dispatch`], which runs when a lease ends, when a breaker closes, when a probe sees
//! capacity return, and right after a waiter enqueues (closing the race with a lease that ended
//! between its failed attempt and its enqueue). Dispatch serves waiters strictly in order.
//! Backends a retry wants to avoid are only skipped on the immediate try: a request that has to
//! wait takes whatever backend comes back first (a backend that keeps failing has its breaker
//! open and is not handed out).
//!
//! # Backpressure (depth = requests waiting in all pools, before this one)
//! `< hint_depth` accept · `< reject_normal_depth` accept with a `Retry-After` hint ·
//! `< reject_all_depth` refuse low and normal with 503 + `Retry-After`, accept high ·
//! otherwise refuse all with 503 + `Retry-After`. Only a request that must wait is subject to it.
//! A waiter that reaches the maximum wait gets 503 + `Retry-After`. `Retry-After` is
//! `depth × mean latency / pool capacity`, clamped to 1..=60 s.

use crate::balance::{Balancer, Lease, Pool};
use crate::config::QueueSettings;
use crate::error::{ErrorKind, GatewayError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Request priority (`X-Priority`, job `priority`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Served first.
    High,
    /// The default.
    #[default]
    Normal,
    /// Served last (but not starved).
    Low,
}

impl Priority {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    fn rank(self) -> u32 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

impl FromStr for Priority {
    type Err = GatewayError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "high" => Ok(Priority::High),
            "normal" | "" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(GatewayError::downstream(
                ErrorKind::BadRequest,
                format!("priority {other:?}: use high, normal or low"),
            )),
        }
    }
}

/// Position of a waiter: effective time, then arrival sequence.
pub(crate) type Key = (Instant, u64);

/// Items ordered by priority with aging (see the module docs).
pub(crate) struct WaitQueue<T> {
    aging: Duration,
    seq: u64,
    items: BTreeMap<Key, T>,
}

impl<T> WaitQueue<T> {
    pub(crate) fn new(aging: Duration) -> Self {
        Self {
            aging,
            seq: 0,
            items: BTreeMap::new(),
        }
    }

    pub(crate) fn push(&mut self, priority: Priority, arrived: Instant, item: T) -> Key {
        self.seq += 1;
        let key = (arrived + self.aging * priority.rank(), self.seq);
        self.items.insert(key, item);
        key
    }

    pub(crate) fn remove(&mut self, key: &Key) -> Option<T> {
        self.items.remove(key)
    }

    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.items.pop_first().map(|(_, v)| v)
    }

    fn keys(&self) -> Vec<Key> {
        self.items.keys().copied().collect()
    }
}

/// A request waiting for a lease.
pub(crate) struct Waiter {
    tx: oneshot::Sender<Lease>,
    priority: Priority,
    arrived: Instant,
}

/// What backpressure decides for a request that has to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Accept,
    AcceptWithHint,
    Reject,
}

pub(crate) fn admission(depth: usize, priority: Priority, q: &QueueSettings) -> Admission {
    if depth >= q.reject_all_depth || (depth >= q.reject_normal_depth && priority != Priority::High)
    {
        Admission::Reject
    } else if depth >= q.hint_depth {
        Admission::AcceptWithHint
    } else {
        Admission::Accept
    }
}

/// How a caller wants to wait.
pub(crate) struct WaitSpec<'a> {
    pub(crate) priority: Priority,
    /// Backends (balancer indices) not to use on the immediate try.
    pub(crate) excluded: &'a [usize],
    pub(crate) deadline: Instant,
    /// Apply backpressure (first entry of a client request; not for retries or jobs).
    pub(crate) admit: bool,
}

/// Removes its waiter from the queue when the waiting future ends or is dropped.
struct Enqueued<'a> {
    pool: &'a Pool,
    bal: &'a Balancer,
    key: Key,
}

impl Drop for Enqueued<'_> {
    fn drop(&mut self) {
        let removed = self.pool.queue.lock().remove(&self.key);
        if let Some(w) = removed {
            self.pool.left_queue(self.bal, &w);
        }
    }
}

impl Pool {
    /// A lease at once when nobody waits and a backend has room (no queueing, no future).
    pub(crate) fn try_acquire(self: &Arc<Self>, bal: &Arc<Balancer>, excluded: &[usize]) -> Option<Lease> {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return self.try_lease(bal, excluded);
        }
        None
    }

    /// A lease now, or after waiting in the queue. `Ok` carries a `Retry-After` hint when the
    /// queue was deep.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        bal: &Arc<Balancer>,
        spec: WaitSpec<'_>,
    ) -> Result<(Lease, Option<u64>), GatewayError> {
        if let Some(lease) = self.try_acquire(bal, spec.excluded) {
            return Ok((lease, None));
        }
        let depth = bal.depth.load(Ordering::Acquire);
        let mut hint = None;
        if spec.admit {
            match admission(depth, spec.priority, &bal.queue) {
                Admission::Accept => {}
                Admission::AcceptWithHint => hint = Some(self.retry_after(depth)),
                Admission::Reject => {
                    bal.metrics.queue_rejected(spec.priority);
                    return Err(GatewayError::internal(
                        ErrorKind::QueueFull,
                        format!("too many requests waiting ({depth}); retry later"),
                    )
                    .with_retry_after(self.retry_after(depth)));
                }
            }
        }
        let arrived = Instant::now();
        let (tx, rx) = oneshot::channel();
        let key = {
            let mut q = self.queue.lock();
            let key = q.push(
                spec.priority,
                arrived,
                Waiter {
                    tx,
                    priority: spec.priority,
                    arrived,
                },
            );
            self.waiting.fetch_add(1, Ordering::AcqRel);
            bal.depth.fetch_add(1, Ordering::AcqRel);
            bal.metrics.queue_depth(spec.priority, 1);
            key
        };
        let _enqueued = Enqueued {
            pool: self,
            bal,
            key,
        };
        self.dispatch(bal);
        match tokio::time::timeout_at(spec.deadline, rx).await {
            Ok(Ok(lease)) => Ok((lease, hint)),
            Ok(Err(_)) => Err(GatewayError::internal(
                ErrorKind::Internal,
                "queue entry dropped without an answer",
            )),
            Err(_) => {
                bal.metrics.queue_timeout(spec.priority);
                let depth = bal.depth.load(Ordering::Acquire);
                Err(GatewayError::internal(
                    ErrorKind::QueueTimeout,
                    format!(
                        "no capacity for model {:?} within the maximum wait",
                        self.model
                    ),
                )
                .with_retry_after(self.retry_after(depth)))
            }
        }
    }

    /// Hands leases to waiters in queue order while capacity lasts.
    pub(crate) fn dispatch(self: &Arc<Self>, bal: &Arc<Balancer>) {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut undelivered = Vec::new();
        {
            let mut q = self.queue.lock();
            for key in q.keys() {
                let Some(lease) = self.try_lease(bal, &[]) else {
                    break;
                };
                if let Some(w) = q.remove(&key) {
                    self.left_queue(bal, &w);
                    if let Err(lease) = w.tx.send(lease) {
                        undelivered.push(lease);
                    }
                }
            }
        }
        // Dropping a lease dispatches again; never while holding the queue lock.
        drop(undelivered);
    }

    fn left_queue(&self, bal: &Balancer, w: &Waiter) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        bal.depth.fetch_sub(1, Ordering::AcqRel);
        bal.metrics.queue_depth(w.priority, -1);
        bal.metrics.queue_wait(w.priority, w.arrived.elapsed());
    }

    /// Seconds a client should wait: queue depth × mean latency / capacity, in 1..=60.
    pub(crate) fn retry_after(&self, depth: usize) -> u64 {
        let capacity: u32 = self.backends.iter().map(|b| b.limit()).sum::<u32>().max(1);
        let known: Vec<f64> = self
            .backends
            .iter()
            .map(|b| b.latency_ms())
            .filter(|l| *l > 0.0)
            .collect();
        let mean_s = if known.is_empty() {
            1.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64 / 1000.0
        };
        ((depth.max(1) as f64 * mean_s / f64::from(capacity)).ceil() as u64).clamp(1, 60)
    }
}

#[cfg(test)]
mod tests;
