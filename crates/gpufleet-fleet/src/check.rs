//! Talking to agents: the one shared HTTP client ([`agent_client`]), one health check of one host
//! with its tries ([`Checker::check`]), and one host-metrics fetch ([`Checker::host_metrics`]).
//!
//! # Clients
//! `http://` agents go through one shared [`AgentHttp`] (keep-alive, at most one idle connection
//! per agent, small buffers, no background tasks; see [`crate::agent_http`]); `https://` agents
//! through one shared `reqwest` client ([`agent_client`]: rustls, the same keep-alive policy).
//! Idle connections live [`IDLE_TIMEOUT`], so with the default 30 s cycle a check reuses the last
//! cycle's connection when the agent kept it open; at most `agent_keepalive` of them are kept
//! (an idle `http://` one is its bare socket, ~3 KB: 10,000 ≈ 30 MB).
//!
//! # Tries
//! A try is one `GET {agent_url}/health` within `health_timeout`. On failure the checker waits
//! `health_retry_backoff · 2^(try−1)` and tries again, until the host answers or its failures in a
//! row (carried over from earlier cycles) reach `unreachable_after`. So a healthy host that stops
//! answering is `unreachable` after one cycle; a host already unreachable costs one try per cycle.
//! Answers are read up to 4 MiB; anything else is a bad answer. Reports are parsed without the
//! `detail` of `ok` components ([`crate::lean`]).

use crate::agent_http::{AgentHttp, HttpError, Target};
use crate::classify::{classify, reason, CheckError};
use crate::config::FleetSettings;
use crate::error::FleetError;
use crate::lean::LeanReport;
use crate::model::{CheckResult, Host, HostState, StateChange};
use gpufleet_agent::wire::{HealthReport, HostMetrics};
use gpufleet_core::time::now_ms;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest answer read from an agent.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;
/// How long an idle keep-alive connection to an agent is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The HTTP client shared by the fleet workers (see the module docs).
pub fn agent_client(settings: &FleetSettings) -> Result<reqwest::Client, FleetError> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(Some(IDLE_TIMEOUT))
        .tcp_nodelay(true)
        .connect_timeout(settings.health_timeout)
        .timeout(settings.health_timeout)
        .no_proxy()
        .http1_only()
        .user_agent(concat!("gpufleet-fleet/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FleetError::Backend(format!("HTTP client: {e}")))
}

/// The outcome of checking one host.
#[derive(Clone, Debug)]
pub struct CheckOutcome {
    /// What to record.
    pub result: CheckResult,
    /// The state change, when the state changed.
    pub event: Option<StateChange>,
    /// Requests sent.
    pub tries: u32,
}

/// Checks hosts and fetches their metrics.
#[derive(Clone, Debug)]
pub struct Checker {
    http: Arc<AgentHttp>,
    client: reqwest::Client,
    timeout: Duration,
    backoff: Duration,
    unreachable_after: u32,
    token: Option<String>,
}

impl Checker {
    /// A checker over `http` (for `http://` agents) and `client` (for the others) with the
    /// settings' timeouts, tries and agent token.
    pub fn new(http: Arc<AgentHttp>, client: reqwest::Client, settings: &FleetSettings) -> Self {
        Self {
            http,
            client,
            timeout: settings.health_timeout,
            backoff: settings.health_retry_backoff,
            unreachable_after: settings.unreachable_after.get(),
            token: settings.agent_token.as_ref().map(|t| t.expose().to_owned()),
        }
    }

    /// Checks `host` (see the module docs for tries) and classifies it.
    pub async fn check(&self, host: &Host) -> CheckOutcome {
        let mut failures = host.consecutive_failures;
        let mut tries = 0u32;
        loop {
            tries += 1;
            let started = Instant::now();
            let answer: Result<HealthReport, CheckError> = self.get_json::<LeanReport>(&host.agent_url, "/health", false).await.map(|r| r.0);
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let done = match &answer {
                Ok(_) => true,
                Err(_) => {
                    failures = failures.saturating_add(1);
                    failures >= self.unreachable_after
                }
            };
            if !done {
                tokio::time::sleep(self.backoff.saturating_mul(1 << (tries - 1).min(10))).await;
                continue;
            }
            let report = answer.as_ref();
            let failures = if report.is_ok() { 0 } else { failures };
            let state = classify(report, failures, self.unreachable_after, host.state);
            let at_ms = now_ms();
            let event = (state != host.state).then(|| StateChange {
                id: 0,
                host_id: host.id,
                host: host.name.clone(),
                at_ms,
                from: host.state,
                to: state,
                reason: reason(report),
            });
            let (components, error) = match answer {
                Ok(r) => (r.components, None),
                Err(e) => (Vec::new(), Some(e.message)),
            };
            let result = CheckResult { host_id: host.id, at_ms, state, latency_ms, components, error, consecutive_failures: failures };
            return CheckOutcome { result, event, tries };
        }
    }

    /// `GET {agent_url}/metrics/host` (with the agent token when one is configured), one try.
    pub async fn host_metrics(&self, host: &Host) -> Result<HostMetrics, CheckError> {
        self.get_json(&host.agent_url, "/metrics/host", true).await
    }

    async fn get_json<T: DeserializeOwned>(&self, agent_url: &str, path: &str, with_token: bool) -> Result<T, CheckError> {
        let token = self.token.as_deref().filter(|_| with_token);
        let Some(target) = Target::parse(agent_url) else {
            return self.get_json_reqwest(&format!("{agent_url}{path}"), token).await;
        };
        let (status, body) = self.http.get(&target, path, token, self.timeout, MAX_ANSWER_BYTES).await.map_err(|e| match e {
            HttpError::NoAnswer(m) => CheckError::no_answer(m),
            HttpError::BadAnswer(m) => CheckError::bad_answer(m),
        })?;
        if !status.is_success() {
            return Err(CheckError::bad_answer(format!("agent answered HTTP {status}")));
        }
        serde_json::from_slice(&body).map_err(|e| CheckError::bad_answer(format!("agent answer is not valid: {e}")))
    }

    async fn get_json_reqwest<T: DeserializeOwned>(&self, url: &str, token: Option<&str>) -> Result<T, CheckError> {
        let mut req = self.client.get(url).timeout(self.timeout);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let mut resp = req.send().await.map_err(|e| no_answer(&e, self.timeout))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(CheckError::bad_answer(format!("agent answered HTTP {status}")));
        }
        if resp.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
            return Err(CheckError::bad_answer(format!("agent answer larger than {MAX_ANSWER_BYTES} bytes")));
        }
        let mut body = Vec::with_capacity(resp.content_length().map_or(8192, |n| n as usize));
        while let Some(chunk) = resp.chunk().await.map_err(|e| no_answer(&e, self.timeout))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(CheckError::bad_answer(format!("agent answer larger than {MAX_ANSWER_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| CheckError::bad_answer(format!("agent answer is not valid: {e}")))
    }
}

fn no_answer(e: &reqwest::Error, timeout: Duration) -> CheckError {
    if e.is_timeout() {
        return CheckError::no_answer(format!("no answer within {timeout:?}"));
    }
    // The innermost cause says what happened (connection refused, reset…).
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let what = if e.is_connect() { "cannot connect" } else { "request failed" };
    CheckError::no_answer(format!("{what}: {cause}"))
}

/// Whether a host is one the health worker checks: registered `active`.
pub fn is_checked(h: &Host) -> bool {
    h.status == crate::model::HostStatus::Active
}

/// Whether a host is one the metrics worker reads: checked and `healthy` or `degraded`.
pub fn takes_metrics(h: &Host) -> bool {
    is_checked(h) && h.state.takes_metrics() && h.state != HostState::Unknown
}
