//! [`Gateway`]: the assembled gateway (settings, backends and pools, HTTP client, broker, job
//! store) and [`GatewayWorker`], the long-running work it hands to the integrator's supervisor
//! (the probe, the job workers, the job-record sweeper). It spawns nothing itself.

use crate::backend::{Backend, BackendStatus};
use crate::balance::{Balancer, GpuHints, Pool};
use crate::config::GatewaySettings;
use crate::error::{ErrorKind, GatewayError};
use crate::jobs::worker::{JobWorker, Sweeper};
use crate::jobs::JobStore;
use crate::metrics::GatewayMetrics;
use crate::probe::ProbeWorker;
use crate::upstream::Upstream;
use async_trait::async_trait;
use gpufleet_broker::Broker;
use gpufleet_runtime::{Worker, WorkerContext, WorkerError};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// The gateway could not be built.
#[derive(Debug, Error)]
pub enum BuildError {
    /// The HTTP client could not be created (TLS setup).
    #[error("gateway http client: {0}")]
    Client(String),
}

/// The inference gateway. Build with [`Gateway::new`], serve with [`crate::router`].
pub struct Gateway {
    pub(crate) settings: GatewaySettings,
    pub(crate) bal: Arc<Balancer>,
    /// The probe's client.
    pub(crate) client: reqwest::Client,
    /// The proxy's client (the request path).
    pub(crate) upstream: Upstream,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) jobs: Arc<dyn JobStore>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("backends", &self.bal.backends.len())
            .finish_non_exhaustive()
    }
}

/// One entry of `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelEntry {
    /// Name clients use.
    pub id: String,
    /// The served model it stands for, when it is an alias.
    pub alias_of: Option<String>,
    /// Backends serving it.
    pub backends: Vec<String>,
}

impl Gateway {
    /// Builds the gateway and the workers the caller must run in its supervisor: one probe,
    /// `jobs.workers` job workers and one job-record sweeper. Metrics: register
    /// [`Gateway::metrics`] in the server's registry.
    pub fn new(
        settings: GatewaySettings,
        broker: Arc<dyn Broker>,
        jobs: Arc<dyn JobStore>,
        hints: Option<Arc<dyn GpuHints>>,
    ) -> Result<(Arc<Self>, Vec<GatewayWorker>), BuildError> {
        let backends: Vec<Arc<Backend>> = settings
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| Arc::new(Backend::new(i, b.clone(), settings.breaker)))
            .collect();
        let per_host = settings.idle_connections_per_backend();
        let client = reqwest::Client::builder()
            .no_proxy() // lower crates never read the environment (HTTP_PROXY)
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| BuildError::Client(e.to_string()))?;
        let upstream = Upstream::new(&settings).map_err(|e| BuildError::Client(e.to_string()))?;
        let bal = Arc::new(Balancer::new(
            backends,
            GatewayMetrics::default(),
            hints,
            settings.max_gpu_temp_c,
            settings.queue,
        ));
        let gw = Arc::new(Self {
            settings,
            bal,
            client,
            upstream,
            broker,
            jobs,
        });
        let mut workers = vec![GatewayWorker(Kind::Probe(ProbeWorker { gw: gw.clone() }))];
        for n in 0..gw.settings.jobs.workers {
            workers.push(GatewayWorker(Kind::Job(JobWorker { gw: gw.clone(), n })));
        }
        let sweep = (gw.settings.jobs.result_ttl / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        workers.push(GatewayWorker(Kind::Sweep(Sweeper {
            gw: gw.clone(),
            interval: sweep,
        })));
        Ok((gw, workers))
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    /// Its metrics (register them once in the server's registry).
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.bal.metrics
    }

    /// Live state of every backend, in config order.
    pub fn backends(&self) -> Vec<BackendStatus> {
        self.bal.backends.iter().map(|b| b.status()).collect()
    }

    /// Requests waiting for capacity, all models together.
    pub fn queue_depth(&self) -> usize {
        self.bal.depth.load(Ordering::Acquire)
    }

    /// Served models and aliases, sorted by name.
    pub fn models(&self) -> Vec<ModelEntry> {
        let mut out: Vec<ModelEntry> = self
            .bal
            .pools
            .iter()
            .map(|p| ModelEntry {
                id: p.model.clone(),
                alias_of: None,
                backends: p.backends.iter().map(|b| b.name().to_owned()).collect(),
            })
            .collect();
        for (alias, target) in &self.settings.aliases {
            let backends = self
                .bal
                .pool(target)
                .map(|p| p.backends.iter().map(|b| b.name().to_owned()).collect())
                .unwrap_or_default();
            out.push(ModelEntry {
                id: alias.clone(),
                alias_of: Some(target.clone()),
                backends,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The served model a name stands for (aliases resolved).
    pub(crate) fn resolve<'a>(&'a self, requested: &'a str) -> &'a str {
        self.settings
            .aliases
            .get(requested)
            .map_or(requested, String::as_str)
    }

    pub(crate) fn pool(&self, model: &str) -> Result<Arc<Pool>, GatewayError> {
        self.bal.pool(model).cloned().ok_or_else(|| {
            GatewayError::downstream(
                ErrorKind::ModelNotFound,
                format!("the model {model:?} does not exist"),
            )
        })
    }
}

enum Kind {
    Probe(ProbeWorker),
    Job(JobWorker),
    Sweep(Sweeper),
}

/// Long-running work of the gateway; run each in a [`gpufleet_runtime::Supervisor`].
pub struct GatewayWorker(Kind);

impl std::fmt::Debug for GatewayWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[async_trait]
impl Worker for GatewayWorker {
    fn name(&self) -> String {
        match &self.0 {
            Kind::Probe(_) => "gateway-probe".to_owned(),
            Kind::Job(w) => w.name(),
            Kind::Sweep(_) => "gateway-job-sweeper".to_owned(),
        }
    }

    fn interval(&self) -> Option<Duration> {
        match &self.0 {
            Kind::Probe(p) => Some(p.interval()),
            Kind::Job(_) => None,
            Kind::Sweep(s) => Some(s.interval),
        }
    }

    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        match &mut self.0 {
            Kind::Probe(p) => p.run(ctx).await,
            Kind::Job(w) => w.run(ctx).await,
            Kind::Sweep(s) => s.run(ctx).await,
        }
    }
}
