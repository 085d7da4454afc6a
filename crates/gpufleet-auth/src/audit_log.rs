//! The audit write path: an [`AuditLog`] handle that queues entries on a bounded channel, and the
//! [`AuditWriter`] worker that appends them to the [`MetaStore`] in batches (one transaction each).
//!
//! Enqueueing costs a channel send, so auditing every mutating request stays off the database's
//! latency. [`AuditLog::flush`] resolves once everything queued before it is stored (tests,
//! shutdown); queries and verification see only stored records.
//!
//! The writer is a [`Worker`]: run it under the binary's `Supervisor`. A failed batch stays in the
//! writer and is retried after the supervisor's restart backoff, so a store outage delays records
//! instead of dropping them (callers see backpressure once the channel fills). On shutdown it drains
//! what is queued; give it a shutdown signal that fires *after* the HTTP server has drained, or
//! the last requests' records find the channel closed.

use crate::audit::AuditEntry;
use crate::metastore::{MetaStore, StoreError};
use async_trait::async_trait;
use gpufleet_runtime::{Worker, WorkerContext, WorkerError};
use std::{sync::Arc, time::Instant};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

/// Queue and batch sizes of the audit write path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditLogConfig {
    /// Entries that may wait in the channel before `append` waits (and `try_append` fails).
    pub capacity: usize,
    /// Most entries written in one transaction.
    pub max_batch: usize,
}

impl Default for AuditLogConfig {
    fn default() -> Self {
        Self { capacity: 8192, max_batch: 512 }
    }
}

/// Why an entry could not be queued.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuditLogError {
    /// The writer has stopped; nothing more can be recorded.
    #[error("the audit writer has stopped")]
    Closed,
    /// The queue is full (only from `try_append`).
    #[error("the audit queue is full")]
    Full,
}

enum Msg {
    Entry(AuditEntry),
    Flush(oneshot::Sender<()>),
}

/// A cheap, cloneable handle that records audit entries.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Entry(e) => f.debug_tuple("Entry").field(&e.action).finish(),
            Msg::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AuditLog {
    /// A handle and the worker that writes what it queues to `store`.
    pub fn new(store: Arc<dyn MetaStore>, config: AuditLogConfig) -> (AuditLog, AuditWriter) {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let writer =
            AuditWriter { rx, store, max_batch: config.max_batch.max(1), pending: Vec::new(), waiters: Vec::new() };
        (AuditLog { tx }, writer)
    }

    /// Queues an entry, waiting while the queue is full.
    pub async fn append(&self, entry: AuditEntry) -> Result<(), AuditLogError> {
        self.tx.send(Msg::Entry(entry)).await.map_err(|_| AuditLogError::Closed)
    }

    /// Queues an entry if there is room now.
    pub fn try_append(&self, entry: AuditEntry) -> Result<(), AuditLogError> {
        self.tx.try_send(Msg::Entry(entry)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => AuditLogError::Full,
            mpsc::error::TrySendError::Closed(_) => AuditLogError::Closed,
        })
    }

    /// Resolves once every entry queued before this call is stored.
    pub async fn flush(&self) -> Result<(), AuditLogError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Flush(done)).await.map_err(|_| AuditLogError::Closed)?;
        wait.await.map_err(|_| AuditLogError::Closed)
    }
}

/// The worker that stores queued entries in batches. See the module doc.
pub struct AuditWriter {
    rx: mpsc::Receiver<Msg>,
    store: Arc<dyn MetaStore>,
    max_batch: usize,
    /// Entries taken from the channel but not yet stored (kept across a restart).
    pending: Vec<AuditEntry>,
    /// Flushes answered once `pending` is stored.
    waiters: Vec<oneshot::Sender<()>>,
}

impl AuditWriter {
    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Entry(e) => self.pending.push(e),
            Msg::Flush(w) => self.waiters.push(w),
        }
    }

    /// Takes whatever else is already queued, up to a batch.
    fn take_ready(&mut self) {
        while self.pending.len() < self.max_batch {
            match self.rx.try_recv() {
                Ok(msg) => self.take(msg),
                Err(_) => break,
            }
        }
    }

    async fn write(&mut self, ctx: &WorkerContext) -> Result<(), StoreError> {
        if !self.pending.is_empty() {
            let started = Instant::now();
            let res = self.store.append_audit(&self.pending).await;
            ctx.record(res.is_ok(), started.elapsed(), res.as_ref().err().map(ToString::to_string));
            res?;
            self.pending.clear();
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
        Ok(())
    }

    async fn drain(&mut self, ctx: &WorkerContext) -> Result<(), WorkerError> {
        self.rx.close();
        while let Some(msg) = self.rx.recv().await {
            self.take(msg);
            if self.pending.len() >= self.max_batch {
                self.write(ctx).await.inspect_err(|e| self.log_loss(e))?;
            }
        }
        self.write(ctx).await.inspect_err(|e| self.log_loss(e))?;
        Ok(())
    }

    fn log_loss(&self, e: &StoreError) {
        error!(error = %e, lost = self.pending.len(), "audit records could not be stored at shutdown");
    }
}

#[async_trait]
impl Worker for AuditWriter {
    fn name(&self) -> String {
        "audit-writer".to_owned()
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        // Retry what a failed run left behind before taking more.
        if !self.pending.is_empty() || !self.waiters.is_empty() {
            self.write(&ctx).await?;
        }
        loop {
            let msg = tokio::select! {
                msg = self.rx.recv() => msg,
                _ = ctx.shutdown.wait() => return self.drain(&ctx).await,
            };
            let Some(msg) = msg else {
                // Every handle was dropped: nothing more can arrive. Returning now would make the
                // supervisor restart us in a loop, so wait for shutdown.
                self.write(&ctx).await?;
                ctx.shutdown.wait().await;
                return Ok(());
            };
            self.take(msg);
            self.take_ready();
            if let Err(e) = self.write(&ctx).await {
                warn!(error = %e, pending = self.pending.len(), "audit batch not stored; will retry");
                return Err(e.into());
            }
        }
    }
}
