//! Validation of [`GatewayConfig`] into [`GatewaySettings`]: every check names the field it
//! refuses; the settings types cannot hold what was refused.

use super::{BackendKind, GatewayConfig};
use std::collections::BTreeMap;
use std::time::Duration;
use thiserror::Error;

/// An invalid `[gateway]` section; the message names the field.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("gateway.{field}: {problem}")]
pub struct ConfigError {
    /// Dotted field path below `gateway`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

fn dur(field: &str, s: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(s).map_err(|e| {
        bad(
            field,
            format!("{s:?} is not a duration (e.g. 500ms, 5s): {e}"),
        )
    })?;
    if d.is_zero() {
        return Err(bad(field, "must be longer than zero"));
    }
    Ok(d)
}

/// A secret string whose `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A validated backend.
#[derive(Clone, Debug)]
pub struct BackendSettings {
    /// Unique name.
    pub name: String,
    /// Server software.
    pub kind: BackendKind,
    /// Base URL without a trailing slash.
    pub url: String,
    /// Models served.
    pub models: Vec<String>,
    /// At least 1.
    pub max_concurrency: u32,
    /// Finite and positive.
    pub weight: f64,
    /// Upstream key (redacted in `Debug`; never logged).
    pub(crate) api_key: Option<Secret>,
    /// GPUs behind it.
    pub gpus: Vec<String>,
}

/// Validated breaker settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerSettings {
    /// ≥ 1.
    pub consecutive_failures: u32,
    /// In (0, 1].
    pub error_rate: f64,
    /// > 0.
    pub window: Duration,
    /// ≥ 1.
    pub min_requests: u32,
    /// > 0.
    pub cooldown: Duration,
}

/// Validated queue settings: `hint_depth ≤ reject_normal_depth ≤ reject_all_depth`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueueSettings {
    /// See [`QueueConfig::hint_depth`].
    pub hint_depth: usize,
    /// See [`QueueConfig::reject_normal_depth`].
    pub reject_normal_depth: usize,
    /// See [`QueueConfig::reject_all_depth`].
    pub reject_all_depth: usize,
    /// > 0.
    pub max_wait: Duration,
    /// > 0.
    pub aging: Duration,
}

/// Validated job settings.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSettings {
    /// Broker topic.
    pub topic: gpufleet_core::TopicName,
    /// Consumer group.
    pub group: gpufleet_core::GroupName,
    /// ≥ 1.
    pub workers: u32,
    /// ≥ 1.
    pub max_attempts: u32,
    /// > 0.
    pub result_ttl: Duration,
    /// > 0.
    pub max_wait: Duration,
}

/// The validated `[gateway]` section.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Backends, in config order.
    pub backends: Vec<BackendSettings>,
    /// Alias → served model (every target is served).
    pub aliases: BTreeMap<String, String>,
    /// A served model or alias.
    pub default_model: Option<String>,
    /// > 0.
    pub connect_timeout: Duration,
    /// > 0.
    pub first_byte_timeout: Duration,
    /// ≥ 1.
    pub max_attempts: u32,
    /// ≥ 1.
    pub max_body_bytes: usize,
    /// ≥ 1.
    pub max_header_bytes: usize,
    /// > 0.
    pub probe_interval: Duration,
    /// > 0.
    pub probe_timeout: Duration,
    /// Thermal throttling threshold (°C).
    pub max_gpu_temp_c: f64,
    /// Breaker.
    pub breaker: BreakerSettings,
    /// Queue.
    pub queue: QueueSettings,
    /// Jobs.
    pub jobs: JobSettings,
}

impl GatewaySettings {
    /// Idle keep-alive connections a client keeps per backend: the largest `max_concurrency`,
    /// at least 32.
    pub fn idle_connections_per_backend(&self) -> usize {
        self.backends.iter().map(|b| b.max_concurrency as usize).max().unwrap_or(1).max(32)
    }
}

impl GatewayConfig {
    /// Checks every field and builds the settings.
    pub fn validate(&self) -> Result<GatewaySettings, ConfigError> {
        let mut backends: Vec<BackendSettings> = Vec::new();
        for (i, b) in self.backends.iter().enumerate() {
            let at = |f: &str| format!("backends[{i}].{f}");
            if b.name.is_empty() || backends.iter().any(|o| o.name == b.name) {
                return Err(bad(
                    at("name"),
                    format!("{:?} must be non-empty and unique", b.name),
                ));
            }
            let url = reqwest::Url::parse(&b.url)
                .map_err(|e| bad(at("url"), format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(bad(at("url"), "must be http:// or https:// with a host"));
            }
            if b.models.is_empty() || b.models.iter().any(String::is_empty) {
                return Err(bad(at("models"), "name at least one model, none empty"));
            }
            if b.max_concurrency == 0 {
                return Err(bad(at("max_concurrency"), "must be at least 1"));
            }
            if !(b.weight.is_finite() && b.weight > 0.0) {
                return Err(bad(at("weight"), "must be a positive number"));
            }
            backends.push(BackendSettings {
                name: b.name.clone(),
                kind: b.kind,
                url: b.url.trim_end_matches('/').to_owned(),
                models: b.models.clone(),
                max_concurrency: b.max_concurrency,
                weight: b.weight,
                api_key: b.api_key.clone().filter(|k| !k.is_empty()).map(Secret),
                gpus: b.gpus.clone(),
            });
        }
        let served = |m: &str| backends.iter().any(|b| b.models.iter().any(|x| x == m));
        for (alias, target) in &self.aliases {
            if !served(target) {
                return Err(bad(
                    format!("aliases.{alias}"),
                    format!("target {target:?} is served by no backend"),
                ));
            }
        }
        if let Some(m) = &self.default_model {
            if !served(m) && !self.aliases.contains_key(m) {
                return Err(bad(
                    "default_model",
                    format!("{m:?} is served by no backend"),
                ));
            }
        }
        let q = &self.queue;
        if q.reject_all_depth == 0
            || q.hint_depth > q.reject_normal_depth
            || q.reject_normal_depth > q.reject_all_depth
        {
            return Err(bad("queue", "need 0 < reject_all_depth and hint_depth <= reject_normal_depth <= reject_all_depth"));
        }
        let br = &self.breaker;
        if br.consecutive_failures == 0 || br.min_requests == 0 {
            return Err(bad(
                "breaker",
                "consecutive_failures and min_requests must be at least 1",
            ));
        }
        if !(br.error_rate > 0.0 && br.error_rate <= 1.0) {
            return Err(bad("breaker.error_rate", "must be in (0, 1]"));
        }
        let j = &self.jobs;
        if j.workers == 0 || j.max_attempts == 0 {
            return Err(bad("jobs", "workers and max_attempts must be at least 1"));
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !name_ok(&j.topic) || !name_ok(&j.group) {
            return Err(bad(
                "jobs",
                "topic and group use letters, digits, '.', '-' and '_'",
            ));
        }
        for (field, v) in [
            ("max_attempts", self.max_attempts as usize),
            ("max_body_bytes", self.max_body_bytes),
            ("max_header_bytes", self.max_header_bytes),
        ] {
            if v == 0 {
                return Err(bad(field, "must be at least 1"));
            }
        }
        Ok(GatewaySettings {
            backends,
            aliases: self.aliases.clone(),
            default_model: self.default_model.clone(),
            connect_timeout: dur("connect_timeout", &self.connect_timeout)?,
            first_byte_timeout: dur("first_byte_timeout", &self.first_byte_timeout)?,
            max_attempts: self.max_attempts,
            max_body_bytes: self.max_body_bytes,
            max_header_bytes: self.max_header_bytes,
            probe_interval: dur("probe_interval", &self.probe_interval)?,
            probe_timeout: dur("probe_timeout", &self.probe_timeout)?,
            max_gpu_temp_c: self.max_gpu_temp_c,
            breaker: BreakerSettings {
                consecutive_failures: br.consecutive_failures,
                error_rate: br.error_rate,
                window: dur("breaker.window", &br.window)?,
                min_requests: br.min_requests,
                cooldown: dur("breaker.cooldown", &br.cooldown)?,
            },
            queue: QueueSettings {
                hint_depth: q.hint_depth,
                reject_normal_depth: q.reject_normal_depth,
                reject_all_depth: q.reject_all_depth,
                max_wait: dur("queue.max_wait", &q.max_wait)?,
                aging: dur("queue.aging", &q.aging)?,
            },
            jobs: JobSettings {
                topic: j.topic.as_str().into(),
                group: j.group.as_str().into(),
                workers: j.workers,
                max_attempts: j.max_attempts,
                result_ttl: dur("jobs.result_ttl", &j.result_ttl)?,
                max_wait: dur("jobs.max_wait", &j.max_wait)?,
            },
        })
    }
}
