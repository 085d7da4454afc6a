//! The generation routes: `POST /v1/chat/completions`, `/v1/completions` (plain JSON or an SSE
//! stream of OpenAI chunks ending in `data: [DONE]`) and `/v1/embeddings`.
//!
//! Order of events for one request: count it, answer 503 while loading, parse, roll the injected
//! 500, take a slot (wait, or 503 when `queue_when_full` is off), wait `slow_first_byte_ms`, roll
//! the hang, then generate: `latency_ms` to the first token and `1 / tokens_per_s` per token.

use crate::state::{InFlight, Shared, Slot};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WORDS: &[&str] = &[
    "The", " quick", " mock", " model", " says", " hello", " to", " the", " fleet", ".",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

#[derive(Deserialize, Default)]
struct GenRequest {
    model: Option<String>,
    stream: Option<bool>,
    max_tokens: Option<i64>,
    n_predict: Option<i64>,
}

pub(crate) fn error(status: StatusCode, message: &str, kind: &str) -> Response {
    let body = json!({ "error": { "code": status.as_u16(), "message": message, "type": kind } });
    (status, axum::Json(body)).into_response()
}

pub(crate) fn loading() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Loading model",
        "unavailable_error",
    )
}

pub(crate) async fn chat(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    generate(s, body, Kind::Chat).await
}

pub(crate) async fn text(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    generate(s, body, Kind::Text).await
}

/// Admission shared by every generation route: loading, parse, injected failure, slot, first
/// byte delay, hang. `Err` is the answer to send instead.
async fn admit<T: for<'de> Deserialize<'de>>(
    s: &Arc<Shared>,
    body: &[u8],
) -> Result<(T, InFlight, Slot), Response> {
    s.count_received();
    if s.is_loading() {
        return Err(loading());
    }
    let req: T = serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("invalid request body: {e}"),
            "invalid_request_error",
        )
    })?;
    let in_flight = s.in_flight();
    if s.roll_fail() {
        s.count_failed();
        return Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected failure",
            "server_error",
        ));
    }
    let slot = if s.config.queue_when_full {
        s.wait_slot().await
    } else {
        s.try_slot()
    };
    let Some(slot) = slot else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no slot available",
            "unavailable_error",
        ));
    };
    sleep_ms(s.config.slow_first_byte_ms).await;
    if s.roll_hang() {
        // Holds the slot until the client goes away, like a stuck generation.
        std::future::pending::<()>().await;
    }
    Ok((req, in_flight, slot))
}

async fn generate(s: Arc<Shared>, body: Bytes, kind: Kind) -> Response {
    let (req, in_flight, slot) = match admit::<GenRequest>(&s, &body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let asked = req
        .max_tokens
        .or(req.n_predict)
        .filter(|n| *n >= 0)
        .map_or(u64::MAX, |n| n as u64);
    let n = asked.min(u64::from(s.config.max_tokens)).max(1);
    let prompt = (body.len() as u64 / 4).max(1);
    let model = req.model.unwrap_or_else(|| s.config.model.clone());
    let gen = Generation {
        shared: s.clone(),
        kind,
        model,
        n,
        prompt,
        id: request_id(kind),
        created: now_s(),
    };
    if req.stream.unwrap_or(false) {
        return gen.stream(in_flight, slot);
    }
    sleep_ms(s.config.latency_ms).await;
    let interval = s.config.token_interval();
    if !interval.is_zero() {
        tokio::time::sleep(interval * (n.saturating_sub(1)) as u32).await;
    }
    let text: String = (0..n).map(word).collect();
    gen.finish_counters();
    drop((slot, in_flight));
    let usage = gen.usage();
    let body = match kind {
        Kind::Chat => json!({
            "id": gen.id, "object": "chat.completion", "created": gen.created, "model": gen.model,
            "system_fingerprint": "gpufleet-sim",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "length" }],
            "usage": usage,
        }),
        Kind::Text => json!({
            "id": gen.id, "object": "text_completion", "created": gen.created, "model": gen.model,
            "choices": [{ "index": 0, "text": text, "logprobs": null, "finish_reason": "length" }],
            "usage": usage,
        }),
    };
    axum::Json(body).into_response()
}

fn word(i: u64) -> &'static str {
    WORDS[(i % WORDS.len() as u64) as usize]
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn request_id(kind: Kind) -> String {
    let prefix = if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// One generation in progress.
struct Generation {
    shared: Arc<Shared>,
    kind: Kind,
    model: String,
    n: u64,
    prompt: u64,
    id: String,
    created: u64,
}

/// Where a stream is: which token comes next, and the guards it holds until it ends or is dropped.
struct StreamState {
    gen: Generation,
    next: u64,
    done: bool,
    _guards: (InFlight, Slot),
}

impl Generation {
    fn usage(&self) -> Value {
        json!({ "prompt_tokens": self.prompt, "completion_tokens": self.n, "total_tokens": self.prompt + self.n })
    }

    fn finish_counters(&self) {
        self.shared
            .prompt_tokens
            .fetch_add(self.prompt, Ordering::Relaxed);
        self.shared
            .tokens_predicted
            .fetch_add(self.n, Ordering::Relaxed);
        self.shared.count_served();
    }

    fn chunk(&self, token: Option<u64>) -> Bytes {
        let last = token.is_none();
        let finish = if last { json!("length") } else { Value::Null };
        let mut v = match self.kind {
            Kind::Chat => {
                let delta = match token {
                    Some(0) => json!({ "role": "assistant", "content": word(0) }),
                    Some(i) => json!({ "content": word(i) }),
                    None => json!({}),
                };
                json!({ "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                        "system_fingerprint": "gpufleet-sim",
                        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
            }
            Kind::Text => {
                json!({ "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                    "choices": [{ "index": 0, "text": token.map_or("", word), "logprobs": null, "finish_reason": finish }] })
            }
        };
        if last {
            v["usage"] = self.usage();
        }
        Bytes::from(format!("data: {v}\n\n"))
    }

    fn stream(self, in_flight: InFlight, slot: Slot) -> Response {
        let state = StreamState {
            gen: self,
            next: 0,
            done: false,
            _guards: (in_flight, slot),
        };
        let body = futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            let cfg = &st.gen.shared.config;
            let wait = if st.next == 0 {
                Duration::from_millis(cfg.latency_ms)
            } else {
                cfg.token_interval()
            };
            if !wait.is_zero() && st.next < st.gen.n {
                tokio::time::sleep(wait).await;
            }
            let bytes = if st.next < st.gen.n {
                st.gen.chunk(Some(st.next))
            } else {
                st.gen.finish_counters();
                st.done = true;
                let mut last = st.gen.chunk(None).to_vec();
                last.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(last)
            };
            st.next += 1;
            Some((Ok::<_, std::convert::Infallible>(bytes), st))
        });
        let mut resp = Response::new(Body::from_stream(body));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

#[derive(Deserialize)]
struct EmbedRequest {
    model: Option<String>,
    input: Value,
}

pub(crate) async fn embeddings(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let (req, in_flight, slot) = match admit::<EmbedRequest>(&s, &body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    sleep_ms(s.config.latency_ms).await;
    let inputs: Vec<String> = match req.input {
        Value::Array(items) => items.into_iter().map(|v| v.to_string()).collect(),
        other => vec![other.to_string()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let seed = text
                .bytes()
                .fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            let embedding: Vec<f32> = (0..8u32)
                .map(|k| ((seed.wrapping_add(k * 7919) % 2000) as f32 / 1000.0) - 1.0)
                .collect();
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let tokens = (body.len() as u64 / 4).max(1);
    s.prompt_tokens.fetch_add(tokens, Ordering::Relaxed);
    s.count_served();
    drop((slot, in_flight));
    let model = req.model.unwrap_or_else(|| s.config.model.clone());
    axum::Json(json!({ "object": "list", "data": data, "model": model, "usage": { "prompt_tokens": tokens, "total_tokens": tokens } }))
        .into_response()
}
