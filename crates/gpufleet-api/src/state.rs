//! What handlers are given: backends as trait objects, shared metrics, worker status, settings.

pub(crate) use gpufleet_core::time::now_ms;
use gpufleet_auth::AuthService;
use gpufleet_broker::Broker;
use gpufleet_gateway::Gateway;
use gpufleet_core::TopicName;
use gpufleet_fleet::Fleet;
use gpufleet_runtime::supervisor::StatusHandle;
use gpufleet_store::MetricStore;
use gpufleet_telemetry::PipelineMetrics;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// API settings, already validated by the binary.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Topic ingest publishes to.
    pub topic: TopicName,
    /// A GPU with no sample arriving for this long is stale (ms).
    pub stale_after_ms: i64,
    /// Largest `limit` a telemetry query may ask for.
    pub max_query_points: usize,
    /// Host assumed for wide CSV rows without a host column.
    pub default_host: Option<String>,
    /// Largest request body in bytes.
    pub body_limit_bytes: usize,
    /// Whether `/metrics` answers without a key.
    pub metrics_public: bool,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            topic: TopicName::new("telemetry"),
            stale_after_ms: 30_000,
            max_query_points: 100_000,
            default_host: None,
            body_limit_bytes: 64 << 20,
            metrics_public: true,
        }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The broker.
    pub broker: Arc<dyn Broker>,
    /// The telemetry store.
    pub store: Arc<dyn MetricStore>,
    /// Pipeline metrics (also registered in `registry`).
    pub metrics: PipelineMetrics,
    /// Registry rendered by `/metrics`.
    pub registry: Arc<Registry>,
    /// Worker statuses (collectors, maintenance).
    pub workers: Option<StatusHandle>,
    /// Settings.
    pub settings: Arc<ApiSettings>,
    /// Authentication, permissions, rate limits and audit. `None` only when explicitly disabled.
    pub auth: Option<Arc<AuthService>>,
    /// The inference gateway, when configured.
    pub gateway: Option<Arc<Gateway>>,
    /// The fleet registry and its workers' state, when configured.
    pub fleet: Option<Arc<Fleet>>,
    /// Scores, trends, alerts and silences, when the fleet role runs.
    pub insight: Option<Arc<gpufleet_insight::Insight>>,
}

impl AppState {
    /// State with a fresh registry holding the pipeline metrics.
    pub fn new(broker: Arc<dyn Broker>, store: Arc<dyn MetricStore>, metrics: PipelineMetrics, settings: ApiSettings) -> Self {
        let registry = registry(&metrics, None);
        Self { broker, store, metrics, registry, workers: None, settings: Arc::new(settings), auth: None, gateway: None, fleet: None, insight: None }
    }

    /// Adds the inference gateway and registers its metrics.
    pub fn with_gateway(mut self, gateway: Arc<Gateway>) -> Self {
        self.registry = registry(&self.metrics, Some(&gateway));
        self.gateway = Some(gateway);
        self
    }

    /// Adds the fleet registry (hosts, health history, events, fleet workers' status).
    pub fn with_fleet(mut self, fleet: Arc<Fleet>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// Adds scores, trends, alerts and silences.
    pub fn with_insight(mut self, insight: Arc<gpufleet_insight::Insight>) -> Self {
        self.insight = Some(insight);
        self
    }

    /// Turns on authentication with this service.
    pub fn with_auth(mut self, auth: Arc<AuthService>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Adds the worker status handle.
    pub fn with_workers(mut self, workers: StatusHandle) -> Self {
        self.workers = Some(workers);
        self
    }
}

/// The registry `/metrics` renders: the pipeline's metrics and, when present, the gateway's.
fn registry(metrics: &PipelineMetrics, gateway: Option<&Gateway>) -> Arc<Registry> {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    if let Some(gw) = gateway {
        gw.metrics().register(&mut registry);
    }
    Arc::new(registry)
}
