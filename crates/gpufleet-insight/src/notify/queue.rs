//! [`NotifyQueue`] and [`NotifyWorker`]: evaluation hands messages to a bounded queue and goes on;
//! the worker sends them through [`Notifiers`] with their retries. A full queue drops the message
//! (counted, logged) rather than stall evaluation. On shutdown the worker sends what is queued,
//! within the supervisor's grace period.

use super::{DeliveryReport, Message, Notifiers};
use async_trait::async_trait;
use gpufleet_runtime::{Worker, WorkerContext, WorkerError};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::warn;

/// Counters of a queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Messages accepted.
    pub queued: AtomicU64,
    /// Messages dropped because the queue was full or closed.
    pub dropped: AtomicU64,
    /// Messages every notifier accepted.
    pub delivered: AtomicU64,
    /// Messages at least one notifier did not accept after its retries.
    pub failed: AtomicU64,
}

/// The sending side: cheap to clone.
#[derive(Clone, Debug)]
pub struct NotifyQueue {
    tx: mpsc::Sender<Message>,
    stats: Arc<QueueStats>,
}

impl NotifyQueue {
    /// A queue of `capacity` messages and the worker that drains it into `notifiers`.
    pub fn new(capacity: usize, notifiers: Notifiers) -> (Self, NotifyWorker) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(QueueStats::default());
        let worker = NotifyWorker { rx, notifiers, stats: stats.clone(), last: Arc::default() };
        (Self { tx, stats }, worker)
    }

    /// Queues `msg`; `false` when it was dropped.
    pub fn push(&self, msg: Message) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                let why = if matches!(e, mpsc::error::TrySendError::Full(_)) { "queue full" } else { "queue closed" };
                warn!(why, "notification dropped");
                false
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

/// Drains a [`NotifyQueue`].
pub struct NotifyWorker {
    rx: mpsc::Receiver<Message>,
    notifiers: Notifiers,
    stats: Arc<QueueStats>,
    last: Arc<Mutex<Vec<DeliveryReport>>>,
}

impl NotifyWorker {
    /// Reports of the last message sent (for status pages and tests).
    pub fn last_reports(&self) -> Arc<Mutex<Vec<DeliveryReport>>> {
        self.last.clone()
    }

    async fn send(&self, msg: &Message, ctx: &WorkerContext) {
        let started = Instant::now();
        let reports = self.notifiers.send_all(msg).await;
        let failed: Vec<&DeliveryReport> = reports.iter().filter(|r| r.error.is_some()).collect();
        let ok = failed.is_empty();
        let counter = if ok { &self.stats.delivered } else { &self.stats.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let error = (!ok).then(|| failed.iter().map(|r| format!("{}: {}", r.notifier, r.error.as_deref().unwrap_or(""))).collect::<Vec<_>>().join("; "));
        ctx.record(ok, started.elapsed(), error);
        *self.last.lock() = reports;
    }
}

#[async_trait]
impl Worker for NotifyWorker {
    fn name(&self) -> String {
        "notify".into()
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        loop {
            tokio::select! {
                biased;
                msg = self.rx.recv() => match msg {
                    Some(m) => self.send(&m, &ctx).await,
                    None => {
                        // Every sender is gone: nothing more will come; wait to be stopped.
                        ctx.shutdown.wait().await;
                        return Ok(());
                    }
                },
                _ = ctx.shutdown.wait() => {
                    // Send what is already queued; the supervisor's grace period bounds this.
                    self.rx.close();
                    while let Some(m) = self.rx.recv().await {
                        self.send(&m, &ctx).await;
                    }
                    return Ok(());
                }
            }
        }
    }
}
