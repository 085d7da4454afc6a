//! Every gateway metric, declared in one place: per backend and model requests, errors by kind,
//! latency and time-to-first-token histograms, completion tokens and tokens/s (from the backend's
//! `usage`), queue depth, wait and refusals per priority, breaker transitions and state, jobs.
//!
//! Per-(backend, model) handles are created once ([`RouteMetrics`]) so the request path never
//! builds label sets.

use crate::breaker::BreakerState;
use crate::queue::Priority;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    backend: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOutcome {
    backend: String,
    model: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    backend: String,
    model: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabel {
    priority: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    backend: String,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_hist() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

fn tps_hist() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

/// The gateway's metrics. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct GatewayMetrics {
    requests: Family<RouteOutcome, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: HistFamily<Route>,
    ttft: HistFamily<Route>,
    tokens: Family<Route, Counter>,
    tokens_per_s: HistFamily<Route>,
    queue_depth: Family<PriorityLabel, Gauge>,
    queue_wait: HistFamily<PriorityLabel>,
    queue_rejected: Family<PriorityLabel, Counter>,
    queue_timeouts: Family<PriorityLabel, Counter>,
    breaker_transitions: Family<TransitionLabels, Counter>,
    breaker_state: Family<BackendLabel, Gauge>,
    jobs: Family<OutcomeLabel, Counter>,
}

impl std::fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayMetrics")
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(latency_hist),
            ttft: Family::new_with_constructor(latency_hist),
            tokens: Family::default(),
            tokens_per_s: Family::new_with_constructor(tps_hist),
            queue_depth: Family::default(),
            queue_wait: Family::new_with_constructor(latency_hist),
            queue_rejected: Family::default(),
            queue_timeouts: Family::default(),
            breaker_transitions: Family::default(),
            breaker_state: Family::default(),
            jobs: Family::default(),
        }
    }
}

/// Metric handles of one (backend, model) route.
#[derive(Clone)]
pub(crate) struct RouteMetrics {
    backend: String,
    model: String,
    pub(crate) ok: Counter,
    pub(crate) failed: Counter,
    pub(crate) duration: Histogram,
    pub(crate) ttft: Histogram,
    pub(crate) tokens: Counter,
    pub(crate) tokens_per_s: Histogram,
}

impl RouteMetrics {
    /// Counts a completed request and its usage.
    pub(crate) fn finished(&self, took: Duration, completion_tokens: Option<u64>) {
        self.ok.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(n) = completion_tokens {
            self.tokens.inc_by(n);
            if n > 0 && took > Duration::ZERO {
                self.tokens_per_s.observe(n as f64 / took.as_secs_f64());
            }
        }
    }
}

impl GatewayMetrics {
    /// Adds every metric to `registry` (names prefixed `gpufleet_gateway_`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("gpufleet_gateway");
        r.register(
            "requests",
            "Requests answered by a backend, by outcome",
            self.requests.clone(),
        );
        r.register(
            "errors",
            "Failures by kind (backend empty for errors before a backend was chosen)",
            self.errors.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from sending to a backend to the end of its answer",
            self.duration.clone(),
        );
        r.register(
            "ttft_seconds",
            "Time to the first streamed chunk",
            self.ttft.clone(),
        );
        r.register(
            "completion_tokens",
            "Completion tokens reported in usage",
            self.tokens.clone(),
        );
        r.register(
            "tokens_per_second",
            "Completion tokens per second of request duration",
            self.tokens_per_s.clone(),
        );
        r.register(
            "queue_depth",
            "Requests waiting for capacity",
            self.queue_depth.clone(),
        );
        r.register(
            "queue_wait_seconds",
            "Time spent waiting for capacity",
            self.queue_wait.clone(),
        );
        r.register(
            "queue_rejected",
            "Requests refused by backpressure",
            self.queue_rejected.clone(),
        );
        r.register(
            "queue_timeouts",
            "Requests that waited the maximum time",
            self.queue_timeouts.clone(),
        );
        r.register(
            "breaker_transitions",
            "Circuit breaker state changes",
            self.breaker_transitions.clone(),
        );
        r.register(
            "breaker_state",
            "Breaker state: 0 closed, 1 half-open, 2 open",
            self.breaker_state.clone(),
        );
        r.register("jobs", "Async jobs finished, by outcome", self.jobs.clone());
    }

    pub(crate) fn route(&self, backend: &str, model: &str) -> RouteMetrics {
        let route = Route {
            backend: backend.to_owned(),
            model: model.to_owned(),
        };
        let outcome = |outcome| RouteOutcome {
            backend: backend.to_owned(),
            model: model.to_owned(),
            outcome,
        };
        self.breaker_state
            .get_or_create(&BackendLabel {
                backend: backend.to_owned(),
            })
            .set(0);
        // One statement per handle: a family's read guard lives until the end of its statement,
        // and creating the next entry of the same family needs its write lock.
        let ok = self.requests.get_or_create(&outcome("ok")).clone();
        let failed = self.requests.get_or_create(&outcome("error")).clone();
        let duration = self.duration.get_or_create(&route).clone();
        let ttft = self.ttft.get_or_create(&route).clone();
        let tokens = self.tokens.get_or_create(&route).clone();
        let tokens_per_s = self.tokens_per_s.get_or_create(&route).clone();
        RouteMetrics {
            backend: backend.to_owned(),
            model: model.to_owned(),
            ok,
            failed,
            duration,
            ttft,
            tokens,
            tokens_per_s,
        }
    }

    /// Counts an error of `kind` (a route's, or the gateway's own with `route = None`).
    pub(crate) fn error(&self, route: Option<&RouteMetrics>, model: &str, kind: &'static str) {
        let (backend, model) = route.map_or((String::new(), model.to_owned()), |r| {
            (r.backend.clone(), r.model.clone())
        });
        if let Some(r) = route {
            r.failed.inc();
        }
        self.errors
            .get_or_create(&ErrorLabels {
                backend,
                model,
                kind,
            })
            .inc();
    }

    pub(crate) fn breaker_transition(&self, backend: &str, to: BreakerState) {
        self.breaker_transitions
            .get_or_create(&TransitionLabels {
                backend: backend.to_owned(),
                to: to.as_str(),
            })
            .inc();
        let v = match to {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        self.breaker_state
            .get_or_create(&BackendLabel {
                backend: backend.to_owned(),
            })
            .set(v);
    }

    pub(crate) fn queue_depth(&self, p: Priority, delta: i64) {
        self.queue_depth
            .get_or_create(&PriorityLabel {
                priority: p.as_str(),
            })
            .inc_by(delta);
    }

    pub(crate) fn queue_wait(&self, p: Priority, waited: Duration) {
        self.queue_wait
            .get_or_create(&PriorityLabel {
                priority: p.as_str(),
            })
            .observe(waited.as_secs_f64());
    }

    pub(crate) fn queue_rejected(&self, p: Priority) {
        self.queue_rejected
            .get_or_create(&PriorityLabel {
                priority: p.as_str(),
            })
            .inc();
    }

    pub(crate) fn queue_timeout(&self, p: Priority) {
        self.queue_timeouts
            .get_or_create(&PriorityLabel {
                priority: p.as_str(),
            })
            .inc();
    }

    pub(crate) fn job(&self, outcome: &'static str) {
        self.jobs.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}
