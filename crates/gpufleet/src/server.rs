//! `gpufleet up`: opens the embedded backends, starts the collectors and maintenance workers under
//! a supervisor, serves the API, and shuts down in order on SIGINT/SIGTERM: stop accepting, drain
//! in-flight requests, let collectors finish their batch, close the broker, flush the store.

use crate::config::Settings;
use anyhow::{Context, Result};
use async_trait::async_trait;
use gpufleet_api::{ApiSettings, AppState};
use gpufleet_broker::{Broker, EmbeddedBroker};
use gpufleet_core::{GroupName, TopicName};
use gpufleet_runtime::{Shutdown, Supervisor, Worker, WorkerContext, WorkerError};
use gpufleet_store::{EmbeddedStore, MetricStore};
use gpufleet_telemetry::{Collector, CollectorConfig, PipelineMetrics};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A server running in this process.
pub struct RunningServer {
    /// Address actually bound.
    pub addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<Result<()>>,
}

impl RunningServer {
    /// Asks the server to stop.
    pub fn stop(&self) {
        self.shutdown.trigger();
    }
    /// Waits until it has stopped and flushed.
    pub async fn wait(self) -> Result<()> {
        self.task.await.context("server task panicked")?
    }
}

/// Opens everything and starts serving; returns once the listener is bound.
pub async fn start(settings: &Settings, shutdown: Shutdown) -> Result<RunningServer> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let lock = lock_data_dir(&settings.data_dir)?;
    let broker: Arc<dyn Broker> =
        Arc::new(EmbeddedBroker::open(settings.broker.clone()).with_context(|| format!("opening broker in {}", settings.broker.data_dir.display()))?);
    let store: Arc<dyn MetricStore> =
        Arc::new(EmbeddedStore::open(settings.store.clone()).with_context(|| format!("opening store in {}", settings.store.data_dir.display()))?);
    let metrics = PipelineMetrics::default();
    let topic = TopicName::new(&settings.topic);
    let group = GroupName::new("collectors");
    broker.create_group(&topic, &group).await?;

    let mut supervisor = Supervisor::new(shutdown.child());
    let collector_cfg = CollectorConfig { topic: topic.clone(), group, fetch_max: settings.fetch_max, fetch_wait: Duration::from_millis(200) };
    for i in 0..settings.collectors {
        supervisor.spawn(Collector::new(format!("c{i}"), broker.clone(), store.clone(), collector_cfg.clone(), metrics.clone()));
    }
    supervisor.spawn(RetentionWorker { store: store.clone(), interval: settings.retention_interval });

    let api_settings = ApiSettings {
        topic,
        stale_after_ms: settings.stale_after.as_millis() as i64,
        default_host: Some(settings.default_host.clone()),
        body_limit_bytes: settings.body_limit_bytes,
        ..ApiSettings::default()
    };
    let state = AppState::new(broker.clone(), store.clone(), metrics, api_settings).with_workers(supervisor.status_handle());
    let app = gpufleet_api::app(state);
    let listener = tokio::net::TcpListener::bind(settings.listen).await.with_context(|| format!("binding {}", settings.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, data_dir = %settings.data_dir.display(), "gpufleet listening");

    let grace = settings.shutdown_grace;
    let sd = shutdown.clone();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown({
            let sd = sd.clone();
            async move { sd.wait().await }
        });
        let served = serve.await;
        info!("listener closed; draining workers");
        let t = Instant::now();
        supervisor.shutdown(grace).await;
        if let Err(e) = broker.close().await {
            warn!(error = %e, "closing broker");
        }
        store.close().await.context("flushing store")?;
        drop(lock);
        info!(took_ms = t.elapsed().as_millis() as u64, "shutdown complete");
        served.context("http server")
    });
    Ok(RunningServer { addr, shutdown, task })
}

/// Holds an exclusive lock on the data directory so two servers never share it.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(_) => anyhow::bail!("data directory {} is in use by another gpufleet process (lock {})", dir.display(), path.display()),
    }
}

/// Runs retention on the store every interval.
struct RetentionWorker {
    store: Arc<dyn MetricStore>,
    interval: Duration,
}

#[async_trait]
impl Worker for RetentionWorker {
    fn name(&self) -> String {
        "retention".into()
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = ctx.shutdown.wait() => return Ok(()),
                _ = tick.tick() => {}
            }
            let t = Instant::now();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            match self.store.apply_retention(now).await {
                Ok(r) => {
                    if r.raw_partitions_dropped + r.rollup_partitions_dropped > 0 {
                        info!(raw = r.raw_partitions_dropped, rollup = r.rollup_partitions_dropped, "retention dropped partitions");
                    }
                    ctx.record(true, t.elapsed(), None);
                }
                Err(e) => ctx.record(false, t.elapsed(), Some(e.to_string())),
            }
        }
    }
}
