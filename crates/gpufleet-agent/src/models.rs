//! Model servers configured on the host: is it up, which models are loaded, how busy is it.
//!
//! - llama.cpp (`llama-server`): `GET /health` (200 up; 503 "Loading model" is down with that
//!   reason), `GET /slots` (busy = slots with `is_processing`, or `state != 0` on older builds;
//!   501 when slots are disabled → unknown), `GET /v1/models`.
//! - Ollama: `GET /api/ps` (up when it answers; models = loaded models; no slot notion).
//! - vLLM: `GET /metrics` (up when it answers; `vllm:num_requests_running` → busy,
//!   `vllm:num_requests_waiting` → queued, summed over label sets), `GET /v1/models`.
//!
//! One probe never fails as a whole: a server that does not answer is `up: false` with the reason.

use crate::config::ModelServerConfig;
use crate::wire::{ModelServerKind, ModelServerState};
use serde_json::Value;
use std::time::Duration;

/// Probes the configured model servers.
#[derive(Clone, Debug)]
pub struct ModelProbe {
    client: reqwest::Client,
    servers: Vec<ModelServerConfig>,
}

impl ModelProbe {
    /// A probe of `servers`, each call bounded by `timeout`.
    pub fn new(servers: Vec<ModelServerConfig>, timeout: Duration) -> Self {
        let client = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build().unwrap_or_default();
        Self { client, servers }
    }

    /// Whether any server is configured.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Probes every server concurrently.
    pub async fn probe_all(&self) -> Vec<ModelServerState> {
        futures::future::join_all(self.servers.iter().map(|s| self.probe(s))).await
    }

    /// Probes one server.
    pub async fn probe(&self, cfg: &ModelServerConfig) -> ModelServerState {
        let mut st = ModelServerState {
            name: cfg.name.clone(),
            kind: cfg.kind,
            url: cfg.url.clone(),
            up: false,
            models: Vec::new(),
            slots_busy: None,
            slots_total: None,
            queued: None,
            error: None,
        };
        let base = cfg.url.trim_end_matches('/');
        let r = match cfg.kind {
            ModelServerKind::Llamacpp => self.llamacpp(base, &mut st).await,
            ModelServerKind::Ollama => self.ollama(base, &mut st).await,
            ModelServerKind::Vllm => self.vllm(base, &mut st).await,
        };
        if let Err(e) = r {
            st.error = Some(e);
        }
        st
    }

    async fn get(&self, url: String) -> Result<(u16, String), String> {
        let resp = self.client.get(&url).send().await.map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        Ok((status, body))
    }

    async fn llamacpp(&self, base: &str, st: &mut ModelServerState) -> Result<(), String> {
        let (status, body) = self.get(format!("{base}/health")).await?;
        if status != 200 {
            let msg = serde_json::from_str::<Value>(&body).ok().and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned)).unwrap_or(body);
            return Err(format!("/health answered {status}: {}", msg.trim()));
        }
        st.up = true;
        if let Ok((200, body)) = self.get(format!("{base}/slots")).await {
            if let Ok(Value::Array(slots)) = serde_json::from_str::<Value>(&body) {
                let busy = slots
                    .iter()
                    .filter(|s| s.get("is_processing").and_then(Value::as_bool).unwrap_or_else(|| s.get("state").and_then(Value::as_u64).unwrap_or(0) != 0))
                    .count();
                st.slots_busy = u32::try_from(busy).ok();
                st.slots_total = u32::try_from(slots.len()).ok();
            }
        }
        st.models = self.openai_models(base).await;
        Ok(())
    }

    async fn ollama(&self, base: &str, st: &mut ModelServerState) -> Result<(), String> {
        let (status, body) = self.get(format!("{base}/api/ps")).await?;
        if status != 200 {
            return Err(format!("/api/ps answered {status}"));
        }
        st.up = true;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("/api/ps is not JSON: {e}"))?;
        st.models = v
            .get("models")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|m| m.get("name").or_else(|| m.get("model")).and_then(Value::as_str)).map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(())
    }

    async fn vllm(&self, base: &str, st: &mut ModelServerState) -> Result<(), String> {
        let (status, body) = self.get(format!("{base}/metrics")).await?;
        if status != 200 {
            return Err(format!("/metrics answered {status}"));
        }
        st.up = true;
        st.slots_busy = prometheus_sum(&body, "vllm:num_requests_running").map(|v| v as u32);
        st.queued = prometheus_sum(&body, "vllm:num_requests_waiting").map(|v| v as u32);
        st.models = self.openai_models(base).await;
        Ok(())
    }

    async fn openai_models(&self, base: &str) -> Vec<String> {
        let Ok((200, body)) = self.get(format!("{base}/v1/models")).await else { return Vec::new() };
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("data").and_then(Value::as_array).map(|a| a.iter().filter_map(|m| m.get("id").and_then(Value::as_str)).map(str::to_owned).collect()))
            .unwrap_or_default()
    }
}

/// Sum of every sample of `name` in a Prometheus text exposition (`name{labels} value` or
/// `name value`); `None` when the metric is absent.
pub fn prometheus_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let rest = match rest.as_bytes().first() {
            Some(b'{') => match rest.find('}') {
                Some(i) => &rest[i + 1..],
                None => continue,
            },
            Some(b' ') | Some(b'\t') => rest,
            _ => continue, // a longer metric name sharing the prefix
        };
        if let Some(v) = rest.split_ascii_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_sum_over_label_sets_and_not_prefixes() {
        let t = "# HELP vllm:num_requests_running x\nvllm:num_requests_running{model_name=\"a\"} 2.0\n\
                 vllm:num_requests_running{model_name=\"b\"} 3\nvllm:num_requests_running_total 99\nvllm:num_requests_waiting 1\n";
        assert_eq!(prometheus_sum(t, "vllm:num_requests_running"), Some(5.0));
        assert_eq!(prometheus_sum(t, "vllm:num_requests_waiting"), Some(1.0));
        assert_eq!(prometheus_sum(t, "vllm:absent"), None);
    }
}
