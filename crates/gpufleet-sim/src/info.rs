//! The read-only routes: `GET /health`, `/slots`, `/metrics` (llama.cpp metric names) and
//! `/v1/models`. All figures come from the live counters in [`Shared`].

use crate::completions::loading;
use crate::state::Shared;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const N_CTX: u64 = 8192;

pub(crate) async fn health(State(s): State<Arc<Shared>>) -> Response {
    if s.is_loading() {
        return loading();
    }
    axum::Json(json!({ "status": "ok" })).into_response()
}

pub(crate) async fn slots(State(s): State<Arc<Shared>>) -> Response {
    let slots: Vec<_> = s
        .slot_states()
        .into_iter()
        .enumerate()
        .map(|(id, task)| {
            json!({
                "id": id,
                "id_task": task.map_or(-1, |t| t as i64),
                "n_ctx": N_CTX,
                "speculative": false,
                "is_processing": task.is_some(),
                "params": { "n_predict": -1, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "stream": true },
                "next_token": { "has_next_token": task.is_some(), "has_new_line": false, "n_remain": -1, "n_decoded": 0 },
            })
        })
        .collect();
    axum::Json(slots).into_response()
}

pub(crate) async fn models(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{ "id": s.config.model, "object": "model", "created": 0, "owned_by": "llamacpp", "meta": { "n_ctx_train": N_CTX } }],
    }))
    .into_response()
}

pub(crate) async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let st = s.stats();
    let slots = s.config.slots.max(1) as f64;
    let rows: [(&str, &str, &str, f64); 7] = [
        (
            "prompt_tokens_total",
            "counter",
            "Number of prompt tokens processed.",
            s.prompt_tokens.load(Ordering::Relaxed) as f64,
        ),
        (
            "tokens_predicted_total",
            "counter",
            "Number of generation tokens processed.",
            st.tokens_predicted as f64,
        ),
        (
            "predicted_tokens_seconds",
            "gauge",
            "Average generation throughput in tokens/s.",
            s.config.tokens_per_s,
        ),
        (
            "kv_cache_usage_ratio",
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            st.processing as f64 / slots,
        ),
        (
            "requests_processing",
            "gauge",
            "Number of request processing.",
            st.processing as f64,
        ),
        (
            "requests_deferred",
            "gauge",
            "Number of request deferred.",
            st.deferred as f64,
        ),
        (
            "n_busy_slots_per_decode",
            "gauge",
            "Average number of busy slots per llama_decode() call.",
            st.processing as f64,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP llamacpp:{name} {help}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {value}"
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
