//! Router tests with `oneshot` (no socket), and one over a real socket for [`MockServer`].

use crate::{MockBackend, MockConfig, MockServer};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::time::Duration;
use tower::ServiceExt;

fn post(path: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

async fn call(b: &MockBackend, req: Request<Body>) -> Response {
    b.router().oneshot(req).await.unwrap()
}

async fn body_json(resp: Response) -> Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// Polls `cond` under paused time until it holds, at most 10 s of (virtual) time.
async fn wait_until(mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn chat_answers_with_usage_capped_by_max_tokens() {
    let b = MockBackend::new(MockConfig {
        max_tokens: 16,
        ..MockConfig::new("m1")
    });
    let resp = call(
        &b,
        post(
            "/v1/chat/completions",
            json!({"model": "m1", "max_tokens": 5, "messages": []}),
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body_json(resp).await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let resp = call(&b, post("/v1/completions", json!({"prompt": "hi"}))).await;
    let v = body_json(resp).await;
    assert_eq!(
        v["usage"]["completion_tokens"], 16,
        "config max_tokens applies when the request asks for none"
    );
    assert_eq!(v["model"], "m1");
    assert_eq!(b.handle().stats().served, 2);
}

#[tokio::test]
async fn stream_is_openai_chunks_ending_in_done() {
    let b = MockBackend::new(MockConfig::new("m1"));
    let resp = call(
        &b,
        post(
            "/v1/chat/completions",
            json!({"stream": true, "max_tokens": 3}),
        ),
    )
    .await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(
        events.len(),
        5,
        "3 tokens, the finish chunk and [DONE]: {text}"
    );
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let first: Value = serde_json::from_str(events[0].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let finish: Value = serde_json::from_str(events[3].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert_eq!(finish["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn loading_answers_503_until_switched_off() {
    let b = MockBackend::new(MockConfig {
        loading_for_ms: 60_000,
        ..MockConfig::default()
    });
    let resp = call(&b, get("/health")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body_json(resp).await,
        json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
    );
    let resp = call(&b, post("/v1/chat/completions", json!({}))).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    b.handle().set_loading(false);
    let resp = call(&b, get("/health")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_json(resp).await, json!({"status": "ok"}));
    b.handle().set_loading(true);
    assert_eq!(
        call(&b, get("/health")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn fail_rate_one_gives_500_and_counts() {
    let b = MockBackend::new(MockConfig {
        fail_rate: 1.0,
        ..MockConfig::default()
    });
    let resp = call(&b, post("/v1/chat/completions", json!({}))).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    b.handle().set_fail_rate(0.0);
    assert_eq!(
        call(&b, post("/v1/chat/completions", json!({})))
            .await
            .status(),
        StatusCode::OK
    );
    let s = b.handle().stats();
    assert_eq!((s.received, s.failed, s.served), (2, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn slots_show_real_occupancy_and_full_server_refuses_without_queue() {
    let b = MockBackend::new(MockConfig {
        slots: 2,
        queue_when_full: false,
        ..MockConfig::default()
    });
    // Two open streams hold both slots until their bodies are dropped.
    let s1 = call(&b, post("/v1/chat/completions", json!({"stream": true}))).await;
    let s2 = call(&b, post("/v1/chat/completions", json!({"stream": true}))).await;
    let slots = body_json(call(&b, get("/slots")).await).await;
    let busy: Vec<bool> = slots
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["is_processing"].as_bool().unwrap())
        .collect();
    assert_eq!(busy, vec![true, true]);
    let refused = call(&b, post("/v1/chat/completions", json!({}))).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let metrics = call(&b, get("/metrics"))
        .await
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains("llamacpp:requests_processing 2"),
        "{metrics}"
    );
    assert!(metrics.contains("llamacpp:requests_deferred 0"));
    drop(s1);
    let slots = body_json(call(&b, get("/slots")).await).await;
    assert_eq!(
        slots[0]["is_processing"], false,
        "a dropped stream (client gone) frees its slot"
    );
    assert_eq!(b.handle().stats().in_flight, 1);
    drop(s2);
    assert_eq!(b.handle().stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn full_server_defers_requests_until_a_slot_frees() {
    let b = MockBackend::new(MockConfig {
        slots: 1,
        ..MockConfig::default()
    });
    let held = call(&b, post("/v1/chat/completions", json!({"stream": true}))).await;
    let router = b.router();
    let waiting = tokio::spawn(router.oneshot(post("/v1/chat/completions", json!({}))));
    let h = b.handle().clone();
    wait_until(|| h.stats().deferred == 1).await;
    assert!(!waiting.is_finished());
    drop(held);
    let resp = waiting.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(h.stats().deferred, 0);
}

#[tokio::test(start_paused = true)]
async fn hang_never_answers_and_frees_on_disconnect() {
    let b = MockBackend::new(MockConfig {
        hang_rate: 1.0,
        ..MockConfig::default()
    });
    let router = b.router();
    let hung = tokio::spawn(router.oneshot(post("/v1/chat/completions", json!({}))));
    let h = b.handle();
    wait_until(|| h.stats().processing == 1).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!hung.is_finished(), "a hung request never answers");
    hung.abort();
    let _ = hung.await;
    assert_eq!(h.stats().in_flight, 0);
    assert_eq!(h.stats().processing, 0);
}

#[tokio::test]
async fn embeddings_and_models() {
    let b = MockBackend::new(MockConfig::new("emb"));
    let v = body_json(call(&b, post("/v1/embeddings", json!({"input": ["a", "b"]}))).await).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 8);
    let v = body_json(call(&b, get("/v1/models")).await).await;
    assert_eq!(v["data"][0]["id"], "emb");
}

#[tokio::test]
async fn crash_is_requested_after_n_requests() {
    let b = MockBackend::new(MockConfig {
        crash_after: Some(2),
        ..MockConfig::default()
    });
    let h = b.handle();
    call(&b, post("/v1/chat/completions", json!({}))).await;
    let crashed = tokio::spawn(async move { h.crash_requested().await });
    tokio::task::yield_now().await;
    assert!(!crashed.is_finished());
    call(&b, post("/v1/chat/completions", json!({}))).await;
    tokio::time::timeout(Duration::from_secs(10), crashed)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn server_stop_drops_open_connections() {
    let server = MockServer::start(MockConfig {
        hang_rate: 1.0,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let url = server.url();
    let h = server.handle().clone();
    let client = tokio::spawn(async move {
        let stream = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .unwrap();
        let (mut r, mut w) = stream.into_split();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        w.write_all(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}").await.unwrap();
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).await.unwrap();
        buf
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.stats().processing == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.stop().await;
    let answer = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.is_empty(),
        "the connection is closed without an answer, like a killed server"
    );
    assert_eq!(h.stats().in_flight, 0);
}
