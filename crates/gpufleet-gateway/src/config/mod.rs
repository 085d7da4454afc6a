//! The `[gateway]` config section as written ([`GatewayConfig`], serde, `deny_unknown_fields`,
//! named defaults) and its validation into [`GatewaySettings`], whose types cannot hold invalid
//! values ([`validate`]). The binary reads files and the environment; this crate never does.
//!
//! ```toml
//! [gateway]
//! default_model = "qwen3-8b"
//! aliases = { "gpt-4o-mini" = "qwen3-8b" }
//! [[gateway.backends]]
//! name = "gpu-a"            # unique
//! kind = "llamacpp"         # llamacpp | ollama | vllm | openai
//! url = "http://10.0.0.5:8080"
//! models = ["qwen3-8b"]
//! max_concurrency = 4
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What software a backend runs; decides how its capacity is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// llama.cpp `llama-server`: `/health`, `/slots`.
    Llamacpp,
    /// Ollama: `/api/version`, `/api/ps`.
    Ollama,
    /// vLLM: `/health`, `/metrics` (`vllm:num_requests_waiting`).
    Vllm,
    /// Any OpenAI-compatible server: `/v1/models` as health, no capacity report.
    Openai,
}

/// One `[[gateway.backends]]` entry.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique name (metrics label, API, logs).
    pub name: String,
    /// Server software.
    pub kind: BackendKind,
    /// Base URL without `/v1` (e.g. `http://10.0.0.5:8080`).
    pub url: String,
    /// Models it serves (the names clients use, after aliases).
    pub models: Vec<String>,
    /// Requests the gateway sends it at once. Default 4.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: u32,
    /// Relative share of traffic (divides the balancing cost). Default 1.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Key sent upstream as `Authorization: Bearer`; never logged.
    #[serde(default)]
    pub api_key: Option<String>,
    /// UUIDs of the GPUs behind it, for GPU hints (VRAM free, temperature).
    #[serde(default)]
    pub gpus: Vec<String>,
}

impl std::fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("models", &self.models)
            .field("max_concurrency", &self.max_concurrency)
            .field("weight", &self.weight)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("gpus", &self.gpus)
            .finish()
    }
}

fn default_concurrency() -> u32 {
    4
}
fn default_weight() -> f64 {
    1.0
}

/// Circuit breaker settings (`[gateway.breaker]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker. Default 5.
    pub consecutive_failures: u32,
    /// Failure ratio over `window` that opens it (with at least `min_requests`). Default 0.5.
    pub error_rate: f64,
    /// Sliding window of the error rate. Default "10s".
    pub window: String,
    /// Outcomes needed in the window before the rate counts. Default 20.
    pub min_requests: u32,
    /// Open time before one half-open probe is allowed. Default "5s".
    pub cooldown: String,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            error_rate: 0.5,
            window: "10s".into(),
            min_requests: 20,
            cooldown: "5s".into(),
        }
    }
}

/// Queue and backpressure settings (`[gateway.queue]`); depths count waiting requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// From this depth, accepted requests carry a `Retry-After` hint. Default 30.
    pub hint_depth: usize,
    /// From this depth, new low and normal requests get 503 + `Retry-After`. Default 40.
    pub reject_normal_depth: usize,
    /// From this depth, every new request gets 503 + `Retry-After`. Default 50.
    pub reject_all_depth: usize,
    /// Longest a request waits for capacity before a 503. Default "30s".
    pub max_wait: String,
    /// Head start of each priority class over the next: a low request is served before high
    /// ones that arrived more than 2 × this later (starvation freedom). Default "2s".
    pub aging: String,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            hint_depth: 30,
            reject_normal_depth: 40,
            reject_all_depth: 50,
            max_wait: "30s".into(),
            aging: "2s".into(),
        }
    }
}

/// Async job settings (`[gateway.jobs]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Broker topic of queued jobs. Default "gateway.jobs".
    pub topic: String,
    /// Consumer group of the job workers. Default "gateway-jobs".
    pub group: String,
    /// Job workers (jobs run at once per gateway). Default 4.
    pub workers: u32,
    /// Failed runs before a job goes to the dead letters (the broker's `max_attempts` must be at
    /// least this). Default 3.
    pub max_attempts: u32,
    /// How long a finished job's status and result are kept. Default "24h".
    pub result_ttl: String,
    /// Longest one run of a job waits for capacity. Keep it below the broker's visibility
    /// timeout. Default "60s".
    pub max_wait: String,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            topic: "gateway.jobs".into(),
            group: "gateway-jobs".into(),
            workers: 4,
            max_attempts: 3,
            result_ttl: "24h".into(),
            max_wait: "60s".into(),
        }
    }
}

/// The `[gateway]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Model servers.
    pub backends: Vec<BackendConfig>,
    /// Alternative model names → served model names.
    pub aliases: BTreeMap<String, String>,
    /// Model used when a request names none.
    pub default_model: Option<String>,
    /// TCP connect timeout per attempt. Default "2s".
    pub connect_timeout: String,
    /// Time to the first byte of a stream, or to the whole answer when not streaming. Default "120s".
    pub first_byte_timeout: String,
    /// Backends one request may be processed by (tries that could not connect are not counted).
    /// Default 3.
    pub max_attempts: u32,
    /// Largest request body. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Largest total size of the request headers. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Interval of the active health and capacity probe. Default "2s".
    pub probe_interval: String,
    /// Timeout of one probe request. Default "1s".
    pub probe_timeout: String,
    /// A GPU hotter than this (°C) counts as thermally throttling. Default 87.
    pub max_gpu_temp_c: f64,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Queue and backpressure.
    pub queue: QueueConfig,
    /// Async jobs.
    pub jobs: JobsConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            backends: Vec::new(),
            aliases: BTreeMap::new(),
            default_model: None,
            connect_timeout: "2s".into(),
            first_byte_timeout: "120s".into(),
            max_attempts: 3,
            max_body_bytes: 4 << 20,
            max_header_bytes: 16 << 10,
            probe_interval: "2s".into(),
            probe_timeout: "1s".into(),
            max_gpu_temp_c: 87.0,
            breaker: BreakerConfig::default(),
            queue: QueueConfig::default(),
            jobs: JobsConfig::default(),
        }
    }
}

mod validate;

pub use validate::{
    BackendSettings, BreakerSettings, ConfigError, GatewaySettings, JobSettings, QueueSettings,
};
