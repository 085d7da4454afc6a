//! The active probe: a [`gpufleet_runtime::Worker`] that polls every backend each
//! `probe_interval` — health (`/health`; Ollama `/api/version`; OpenAI-compatible `/v1/models`)
//! and capacity (llama.cpp `/slots`, vLLM `/metrics` `num_requests_waiting`, Ollama `/api/ps`).
//!
//! A busy backend is not a failed one: a 503 "Loading model" marks it loading (unavailable, not
//! failed) and a 503 without that text counts as alive. Health outcomes feed the breaker
//! ([`crate::breaker::Breaker::record_health`]); a passing check after the cooldown closes it.
//! When a probe sees capacity return (more free slots, loading over) the queues are woken.

use crate::backend::{Backend, Capacity};
use crate::config::BackendKind;
use crate::Gateway;
use gpufleet_runtime::{WorkerContext, WorkerError};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub(crate) struct ProbeWorker {
    pub(crate) gw: Arc<Gateway>,
}

/// Health of one backend as one check saw it.
#[derive(Debug, PartialEq, Eq)]
enum Health {
    Ok,
    Loading,
    Down(String),
}

#[derive(Deserialize)]
struct Slot {
    #[serde(default)]
    is_processing: bool,
}

#[derive(Deserialize)]
struct OllamaPs {
    #[serde(default)]
    models: Vec<OllamaModel>,
}

#[derive(Deserialize)]
struct OllamaModel {
    #[serde(default)]
    name: String,
    #[serde(default)]
    model: String,
}

impl ProbeWorker {
    pub(crate) fn interval(&self) -> Duration {
        self.gw.settings.probe_interval
    }

    pub(crate) async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let mut tick = tokio::time::interval(self.gw.settings.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ctx.shutdown.wait() => return Ok(()),
                _ = tick.tick() => {}
            }
            let started = Instant::now();
            self.gw.upstream.reap_idle();
            let results =
                futures::future::join_all(self.gw.bal.backends.iter().map(|b| self.probe(b))).await;
            let down: Vec<String> = results.into_iter().flatten().collect();
            ctx.record(
                down.is_empty(),
                started.elapsed(),
                (!down.is_empty()).then(|| down.join("; ")),
            );
        }
    }

    /// Probes one backend; returns an error text when it is down.
    async fn probe(&self, b: &Arc<Backend>) -> Option<String> {
        // Our requests at the probe: the larger of before and after, so a request of ours that
        // started meanwhile is never taken for another client's.
        let in_flight = b.in_flight();
        let health = self.health(b).await;
        let mut cap = Capacity {
            loading: health == Health::Loading,
            at: Some(Instant::now()),
            ..Capacity::default()
        };
        if health == Health::Ok {
            if let Err(e) = self.capacity(b, &mut cap).await {
                tracing::debug!(backend = b.name(), error = %e, "capacity probe failed");
            }
        }
        let down = match &health {
            Health::Down(e) => Some(format!("{}: {e}", b.name())),
            _ => None,
        };
        cap.error = down.clone();
        let changed = b.breaker.record_health(down.is_none(), Instant::now());
        self.gw.bal.transition(b, changed);
        if down.is_some() {
            b.record_probe_error(down.clone().unwrap_or_default());
        } else if b.apply_probe(cap, in_flight.max(b.in_flight())) {
            self.gw.bal.wake_backend(b.idx);
        }
        down
    }

    fn get(&self, b: &Backend, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .gw
            .client
            .get(format!("{}{path}", b.settings.url))
            .timeout(self.gw.settings.probe_timeout);
        if let Some(key) = &b.settings.api_key {
            req = req.bearer_auth(&key.0);
        }
        req
    }

    async fn health(&self, b: &Backend) -> Health {
        let path = match b.settings.kind {
            BackendKind::Llamacpp | BackendKind::Vllm => "/health",
            BackendKind::Ollama => "/api/version",
            BackendKind::Openai => "/v1/models",
        };
        let resp = match self.get(b, path).send().await {
            Ok(r) => r,
            Err(e) => return Health::Down(e.without_url().to_string()),
        };
        let status = resp.status();
        if status.is_success() {
            return Health::Ok;
        }
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            let body = resp.bytes().await.unwrap_or_default();
            // llama.cpp answers 503 "Loading model" while loading, and (older builds) 503 when
            // no slot is free: busy, not down.
            return if memchr::memmem::find(&body, b"Loading model").is_some() {
                Health::Loading
            } else {
                Health::Ok
            };
        }
        Health::Down(format!("health check answered {status}"))
    }

    async fn capacity(&self, b: &Backend, cap: &mut Capacity) -> Result<(), reqwest::Error> {
        match b.settings.kind {
            BackendKind::Llamacpp => {
                let resp = self.get(b, "/slots").send().await?;
                // `/slots` can be disabled (501): then only our own in-flight count is known.
                if resp.status().is_success() {
                    let slots: Vec<Slot> = resp.json().await?;
                    cap.total_slots = Some(slots.len() as u32);
                    cap.idle_slots = Some(slots.iter().filter(|s| !s.is_processing).count() as u32);
                }
            }
            BackendKind::Vllm => {
                let text = self.get(b, "/metrics").send().await?.text().await?;
                cap.waiting = prom_sum(&text, "vllm:num_requests_waiting") as u32;
            }
            BackendKind::Ollama => {
                let ps: OllamaPs = self.get(b, "/api/ps").send().await?.json().await?;
                cap.loaded = Some(
                    ps.models
                        .into_iter()
                        .flat_map(|m| [m.name, m.model])
                        .filter(|s| !s.is_empty())
                        .collect(),
                );
            }
            BackendKind::Openai => {}
        }
        Ok(())
    }
}

/// Sum of a Prometheus metric's samples over all label sets.
fn prom_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = if rest.starts_with('{') {
                &rest[rest.find('}')? + 1..]
            } else {
                rest
            };
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::prom_sum;

    #[test]
    fn vllm_waiting_is_summed_over_models() {
        let text = "# HELP vllm:num_requests_waiting x\nvllm:num_requests_waiting{model_name=\"a\"} 2.0\n\
                    vllm:num_requests_waiting{model_name=\"b\"} 3.0\nvllm:num_requests_waiting_other 9\n";
        assert_eq!(prom_sum(text, "vllm:num_requests_waiting"), 5.0);
    }
}
