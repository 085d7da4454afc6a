//! Workers and their supervisor.
//!
//! A [`Worker`] is named long-running work. The [`Supervisor`] runs each in its own task inside a
//! `tracing` span, restarts it with [`Backoff`] when it fails or panics, signals it to stop on
//! shutdown and waits for it to drain, and keeps a [`WorkerStatus`] snapshot per worker (fed by
//! [`WorkerContext::record`]) for status endpoints and tests. Nothing is spawned detached.

use crate::{Backoff, Shutdown};
use async_trait::async_trait;
use parking_lot::Mutex;
use serde::Serialize;
use std::{collections::BTreeMap, sync::Arc, time::Duration};
use tokio::task::JoinSet;
use tracing::{error, info, warn, Instrument};

/// A worker's failure; the supervisor logs it and restarts the worker.
pub type WorkerError = Box<dyn std::error::Error + Send + Sync>;

/// Long-running work owned by a [`Supervisor`].
#[async_trait]
pub trait Worker: Send + 'static {
    /// Stable name, used in logs and status.
    fn name(&self) -> String;
    /// The interval of a periodic worker, for status display.
    fn interval(&self) -> Option<Duration> {
        None
    }
    /// Runs until `ctx.shutdown` fires (then drains and returns `Ok`) or fails.
    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError>;
}

/// A snapshot of one worker's health.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct WorkerStatus {
    /// Worker name.
    pub name: String,
    /// Whether its task is running now.
    pub running: bool,
    /// Interval of a periodic worker, in seconds.
    pub interval_s: Option<f64>,
    /// Units of work done (cycles, batches).
    pub runs: u64,
    /// Units that succeeded.
    pub successes: u64,
    /// Units that failed.
    pub failures: u64,
    /// Restarts after a failure or panic.
    pub restarts: u64,
    /// End of the last unit of work (epoch ms).
    pub last_run_ms: Option<i64>,
    /// Duration of the last unit of work in milliseconds.
    pub last_duration_ms: Option<f64>,
    /// Last error message.
    pub last_error: Option<String>,
}

impl WorkerStatus {
    /// successes / runs, or 1 when nothing ran yet.
    pub fn success_rate(&self) -> f64 {
        if self.runs == 0 {
            1.0
        } else {
            self.successes as f64 / self.runs as f64
        }
    }
}

type StatusMap = Arc<Mutex<BTreeMap<String, WorkerStatus>>>;

/// Handed to [`Worker::run`]: the shutdown signal and a way to record work done.
#[derive(Clone)]
pub struct WorkerContext {
    /// Fires when the worker must stop.
    pub shutdown: Shutdown,
    name: String,
    statuses: StatusMap,
}

impl WorkerContext {
    /// Records one unit of work.
    pub fn record(&self, ok: bool, took: Duration, error: Option<String>) {
        let mut map = self.statuses.lock();
        if let Some(s) = map.get_mut(&self.name) {
            s.runs += 1;
            if ok {
                s.successes += 1;
            } else {
                s.failures += 1;
                s.last_error = error;
            }
            s.last_run_ms = Some(now_ms());
            s.last_duration_ms = Some(took.as_secs_f64() * 1000.0);
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Owns workers: starts, restarts, stops and reports them.
pub struct Supervisor {
    shutdown: Shutdown,
    tasks: JoinSet<()>,
    statuses: StatusMap,
    backoff_base: Duration,
    backoff_max: Duration,
}

impl Supervisor {
    /// A supervisor whose workers stop when `shutdown` fires.
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            tasks: JoinSet::new(),
            statuses: Arc::default(),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }

    /// Overrides the restart backoff (tests use short ones).
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// A cheap handle that reads worker statuses.
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle(self.statuses.clone())
    }

    /// Starts a worker; it is restarted after failures until shutdown.
    pub fn spawn<W: Worker>(&mut self, mut worker: W) {
        let name = worker.name();
        self.statuses.lock().insert(
            name.clone(),
            WorkerStatus { name: name.clone(), interval_s: worker.interval().map(|d| d.as_secs_f64()), ..Default::default() },
        );
        let ctx = WorkerContext { shutdown: self.shutdown.clone(), name: name.clone(), statuses: self.statuses.clone() };
        let statuses = self.statuses.clone();
        let mut backoff = Backoff::new(self.backoff_base, self.backoff_max);
        let span = tracing::info_span!("worker", worker = %name);
        self.tasks.spawn(
            async move {
                loop {
                    set_running(&statuses, &name, true);
                    // Run the worker in its own task so a panic is caught and restarted.
                    let fut = {
                        let ctx = ctx.clone();
                        async move {
                            let r = worker.run(ctx).await.map_err(|e| e.to_string());
                            (worker, r)
                        }
                    };
                    let outcome = tokio::spawn(fut.in_current_span()).await;
                    set_running(&statuses, &name, false);
                    let error = match outcome {
                        Ok((w, Ok(()))) => {
                            worker = w;
                            if ctx.shutdown.is_triggered() {
                                info!("worker stopped");
                                return;
                            }
                            backoff.reset();
                            "worker returned before shutdown".to_owned()
                        }
                        Ok((w, Err(e))) => {
                            worker = w;
                            e
                        }
                        Err(join) => {
                            error!(error = %join, "worker panicked; it cannot be restarted");
                            record_restart(&statuses, &name, format!("panicked: {join}"));
                            return;
                        }
                    };
                    record_restart(&statuses, &name, error.clone());
                    let delay = backoff.next_delay();
                    warn!(%error, ?delay, "worker failed; restarting");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = ctx.shutdown.wait() => return,
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Fires shutdown and waits for every worker to drain, at most `grace`.
    pub async fn shutdown(mut self, grace: Duration) {
        self.shutdown.trigger();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            warn!(?grace, "workers did not stop in time; aborting them");
            self.tasks.abort_all();
        }
    }
}

fn set_running(statuses: &StatusMap, name: &str, running: bool) {
    if let Some(s) = statuses.lock().get_mut(name) {
        s.running = running;
    }
}

fn record_restart(statuses: &StatusMap, name: &str, error: String) {
    if let Some(s) = statuses.lock().get_mut(name) {
        s.restarts += 1;
        s.last_error = Some(error);
    }
}

/// Reads worker statuses.
#[derive(Clone)]
pub struct StatusHandle(StatusMap);

impl StatusHandle {
    /// All statuses, sorted by name.
    pub fn snapshot(&self) -> Vec<WorkerStatus> {
        self.0.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Flaky {
        starts: Arc<AtomicU32>,
    }

    #[async_trait]
    impl Worker for Flaky {
        fn name(&self) -> String {
            "flaky".into()
        }
        async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
            let n = self.starts.fetch_add(1, Ordering::SeqCst);
            if n < 2 {
                ctx.record(false, Duration::from_millis(1), Some("boom".into()));
                return Err("boom".into());
            }
            ctx.record(true, Duration::from_millis(1), None);
            ctx.shutdown.wait().await;
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failing_worker_is_restarted_then_drained() {
        let shutdown = Shutdown::new();
        let mut sup = Supervisor::new(shutdown.clone()).with_backoff(Duration::from_millis(10), Duration::from_millis(50));
        let starts = Arc::new(AtomicU32::new(0));
        sup.spawn(Flaky { starts: starts.clone() });
        let handle = sup.status_handle();
        // Paused time auto-advances through the backoff sleeps.
        while handle.snapshot()[0].successes == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let s = &handle.snapshot()[0];
        assert_eq!(s.restarts, 2);
        assert_eq!(s.failures, 2);
        assert!(s.running);
        sup.shutdown(Duration::from_secs(5)).await;
        let s = &handle.snapshot()[0];
        assert!(!s.running);
        assert_eq!(starts.load(Ordering::SeqCst), 3);
    }
}
