//! The inference gateway: an OpenAI-compatible front door for llama.cpp, Ollama, vLLM and other
//! OpenAI-compatible model servers that balances on live backend and GPU state, survives backend
//! failures, queues when capacity is gone (never before), and runs durable async jobs.
//!
//! It depends on `gpufleet-core`, `gpufleet-broker` (the durable job queue) and
//! `gpufleet-runtime` (its workers); it reads no environment or files and does no
//! authentication — the API layer wraps [`router`] and may insert [`CallerModels`].
//!
//! # Use
//! ```text
//! let settings = config.validate()?;                        // GatewayConfig from [gateway]
//! let (gw, workers) = Gateway::new(settings, broker, job_store, hints)?;
//! gw.metrics().register(&mut registry);
//! for w in workers { supervisor.spawn(w) }
//! let app = router(gw);                                      // routes in GATEWAY_ROUTES
//! ```
//!
//! # Layout (the request path, outer to inner)
//! - [`router`]: the routes and [`GATEWAY_ROUTES`].
//! - [`request`]: limits, routing fields, model/alias/caller checks, answer building.
//! - [`reply`]: [`Reply`], the answer before an HTTP server writes it (axum or the API's lane).
//! - [`proxy`]: forwarding with timeouts, retries before the first byte, SSE relay.
//! - `upstream`: the proxy's HTTP client (plain HTTP: a minimal HTTP/1.1 client on the
//!   request's task; TLS: hyper-util; per-backend heads, URIs and headers prepared at start).
//! - [`queue`]: priority queue with aging, backpressure by depth, event-driven dispatch.
//! - [`balance`]: per-model pools, the power-of-two-choices policy, leases, [`GpuHints`].
//! - [`hints`]: [`StoreGpuHints`], GPU hints read from the telemetry store by a worker.
//! - [`backend`]: one backend's live state. [`breaker`]: its circuit breaker.
//! - [`probe`]: the active health and capacity probe (a worker).
//! - [`jobs`]: async jobs over the broker, the [`JobStore`] with its SQLite and PostgreSQL
//!   implementations and conformance suite ([`jobstore_test_suite!`]), DLQ.
//! - [`config`]: [`GatewayConfig`] → [`GatewaySettings`]. [`error`]: [`GatewayError`].
//! - [`metrics`]: every gateway metric. [`gateway`]: [`Gateway`] and [`GatewayWorker`].

pub mod backend;
pub mod balance;
pub mod breaker;
pub mod config;
pub mod error;
mod fields;
pub mod gateway;
pub mod hints;
pub mod jobs;
pub mod metrics;
pub mod probe;
pub mod proxy;
pub mod queue;
pub mod reply;
pub mod request;
pub mod router;
mod upstream;

pub use backend::BackendStatus;
pub use balance::{GpuHint, GpuHints};
pub use breaker::BreakerState;
pub use config::{BackendConfig, BackendKind, ConfigError, GatewayConfig, GatewaySettings};
pub use error::{ErrorKind, ErrorSource, GatewayError};
pub use gateway::{BuildError, Gateway, GatewayWorker, ModelEntry};
pub use hints::{HintRefresher, StoreGpuHints};
pub use jobs::dlq::DeadJob;
pub use jobs::{
    JobId, JobRecord, JobStatus, JobStore, JobStoreError, JobView, PostgresJobStore,
    SqliteJobStore,
};
pub use metrics::GatewayMetrics;
pub use proxy::Endpoint;
pub use queue::Priority;
pub use reply::{Reply, ReplyBody, ReplyStream};
pub use request::{CallerModels, RouteHints};

/// A `Content-Length` value (digits only, at most 19), as both HTTP/1.1 paths read it.
pub fn content_length(v: &[u8]) -> Option<usize> {
    upstream::decimal(v).and_then(|n| usize::try_from(n).ok())
}
pub use router::{router, GATEWAY_ROUTES};
