//! The real agent: [`AgentState`] (the last sample, the sources, the token, the push buffer) and
//! [`run`] / [`run_on`], which sample in the background under a `Supervisor` and serve the routes
//! of [`crate::server`] until shutdown.

use crate::config::{docker_socket_candidates, AgentConfig, ConfigError};
use crate::containers::{ContainerError, DockerClient};
use crate::health::{self, AgentInfo};
use crate::models::ModelProbe;
use crate::nvml::GpuProbe;
use crate::proc::ProcReader;
use crate::push::{gpu_lines, PushBuffer, PushWorker};
use crate::sampler::{DockerSource, HostSampler, Sampler};
use crate::server::{AgentBackend, RestartError, TokenDigest};
use crate::wire::{HealthReport, HostMetrics};
use anyhow::Context;
use async_trait::async_trait;
use gpufleet_runtime::{Shutdown, Supervisor, Worker, WorkerContext, WorkerError};
use parking_lot::RwLock;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::info;

/// The agent's version string.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

struct Inner {
    sample_interval: Duration,
    latest: RwLock<(Instant, Arc<HostMetrics>)>,
    sampler: Sampler,
    token: Option<TokenDigest>,
    push: Option<Arc<PushBuffer>>,
}

/// Shared state of a running agent; cheap to clone.
#[derive(Clone)]
pub struct AgentState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState").field("host", &self.latest().host).finish()
    }
}

impl AgentState {
    /// Validates `cfg`, loads NVML, and takes the first sample (so `/health` has an answer from
    /// the first request).
    pub async fn new(cfg: &AgentConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let host = cfg.effective_host_name();
        let proc_root = cfg.proc_root.clone();
        let gpu = tokio::task::spawn_blocking(move || GpuProbe::load(&proc_root))
            .await
            .map_err(|e| ConfigError { key: "gpu".into(), reason: format!("loading NVML panicked: {e}") })?;
        let docker = match &cfg.docker_socket {
            Some(p) => DockerSource::Configured(DockerClient::new(p.clone(), cfg.probe_timeout)),
            None => DockerSource::Detect(docker_socket_candidates(None), cfg.probe_timeout),
        };
        let sampler = Sampler::new(
            HostSampler::new(ProcReader::new(cfg.proc_root.clone()), host),
            gpu,
            docker,
            ModelProbe::new(cfg.model_servers.clone(), cfg.probe_timeout),
        );
        let push = cfg.server_url.as_ref().map(|_| Arc::new(PushBuffer::new(cfg.push_buffer_lines)));
        let first = Arc::new(sampler.sample().await);
        let state = Self {
            inner: Arc::new(Inner {
                sample_interval: cfg.sample_interval,
                latest: RwLock::new((Instant::now(), first.clone())),
                sampler,
                token: cfg.token.as_deref().map(TokenDigest::new),
                push,
            }),
        };
        state.queue_push(&first);
        Ok(state)
    }

    /// Takes a sample now and makes it the latest.
    pub async fn sample_now(&self) -> Arc<HostMetrics> {
        let m = Arc::new(self.inner.sampler.sample().await);
        *self.inner.latest.write() = (Instant::now(), m.clone());
        self.queue_push(&m);
        m
    }

    fn queue_push(&self, m: &HostMetrics) {
        if let Some(buf) = &self.inner.push {
            buf.extend(gpu_lines(&m.host, m.time_ms, &m.gpus));
        }
    }

    /// The latest sample.
    pub fn latest(&self) -> Arc<HostMetrics> {
        self.inner.latest.read().1.clone()
    }

    /// The health report of the latest sample, timed now.
    pub fn health_report(&self) -> HealthReport {
        let (at, m) = self.inner.latest.read().clone();
        let info = AgentInfo {
            version: AGENT_VERSION.to_owned(),
            sample_age_ms: u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
            sample_interval_ms: u64::try_from(self.inner.sample_interval.as_millis()).unwrap_or(u64::MAX),
        };
        health::report(&m, &info, gpufleet_core::time::now_ms())
    }

    /// The GPU sample buffer (when pushing is configured).
    pub fn push_buffer(&self) -> Option<Arc<PushBuffer>> {
        self.inner.push.clone()
    }
}

#[async_trait]
impl AgentBackend for AgentState {
    async fn health(&self) -> HealthReport {
        self.health_report()
    }

    async fn host_metrics(&self) -> HostMetrics {
        (*self.latest()).clone()
    }

    async fn restart_container(&self, id: &str) -> Result<(), RestartError> {
        let client = self.inner.sampler.docker().client().ok_or(RestartError::NoRuntime)?;
        let map = |e: ContainerError| match e {
            ContainerError::NotFound(_) => RestartError::NotFound(id.to_owned()),
            ContainerError::InvalidId(s) => RestartError::InvalidId(format!("invalid container id {s:?}")),
            other => RestartError::Runtime(other.to_string()),
        };
        let state = client.inspect(id).await.map_err(map)?;
        if state.stopped_on_purpose {
            return Err(RestartError::StoppedOnPurpose(state.name));
        }
        client.restart(id).await.map_err(map)?;
        info!(container = %state.name, "container restarted on request");
        Ok(())
    }

    fn token(&self) -> Option<&TokenDigest> {
        self.inner.token.as_ref()
    }
}

/// Samples the host every interval.
struct SampleWorker {
    state: AgentState,
    interval: Duration,
}

#[async_trait]
impl Worker for SampleWorker {
    fn name(&self) -> String {
        "agent-sampler".into()
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first sample was taken at start
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = ctx.shutdown.wait() => return Ok(()),
            }
            let started = Instant::now();
            let m = self.state.sample_now().await;
            let error = m.probe_errors.first().map(|e| format!("{}: {}", e.source, e.error));
            ctx.record(error.is_none(), started.elapsed(), error);
        }
    }
}

/// Binds `cfg.listen` and runs the agent until `shutdown` resolves.
pub async fn run(cfg: AgentConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("binding the agent listener on {}", cfg.listen))?;
    run_on(listener, cfg, shutdown).await
}

/// Runs the agent on an already bound listener (tests bind `127.0.0.1:0`) until `shutdown`
/// resolves: first sample, then the sampler (and, with `server_url`, the GPU push) workers, and
/// the HTTP routes. On shutdown the listener stops, requests drain, the pusher makes one last
/// bounded attempt.
pub async fn run_on(listener: TcpListener, cfg: AgentConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let state = AgentState::new(&cfg).await?;
    let stop = Shutdown::new();
    let mut sup = Supervisor::new(stop.clone());
    sup.spawn(SampleWorker { state: state.clone(), interval: cfg.sample_interval });
    if let (Some(url), Some(key), Some(buf)) = (&cfg.server_url, &cfg.api_key, state.push_buffer()) {
        sup.spawn(PushWorker::new(url, key, cfg.push_interval, buf));
    }
    let addr = listener.local_addr().ok();
    info!(?addr, host = %state.latest().host, "agent listening");
    let served = axum::serve(listener, crate::server::router(state)).with_graceful_shutdown(shutdown).await;
    sup.shutdown(Duration::from_secs(10)).await;
    served.context("agent HTTP server failed")
}
