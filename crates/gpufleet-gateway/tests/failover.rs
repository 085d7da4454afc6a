//! Balancing, breakers, retries, streaming and cancellation against in-process mock backends.

mod common;

use common::{chat_body, eventually, Harness, MODEL};
use gpufleet_sim::MockConfig;
use serde_json::json;

fn mock(slots: usize) -> MockConfig {
    MockConfig {
        slots,
        ..MockConfig::new(MODEL)
    }
}

/// A mock whose streams last long (1 token/s, 60 tokens): held open, they occupy capacity.
fn slow(slots: usize) -> MockConfig {
    MockConfig {
        tokens_per_s: 1.0,
        max_tokens: 60,
        ..mock(slots)
    }
}

fn stream_body() -> serde_json::Value {
    json!({ "model": MODEL, "messages": [], "stream": true })
}

#[tokio::test]
async fn outstanding_requests_spread_over_backends() {
    let h = Harness::start(vec![slow(4), slow(4)], |_| {}).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut resp = h
            .post("/v1/chat/completions", stream_body())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.chunk().await.unwrap().is_some());
        held.push(resp);
    }
    assert_eq!(
        h.mock(0).handle().stats().in_flight,
        2,
        "least outstanding: two each"
    );
    assert_eq!(h.mock(1).handle().stats().in_flight, 2);
    drop(held);
    h.shutdown().await;
}

#[tokio::test]
async fn backend_busy_with_other_clients_is_avoided_after_a_probe() {
    let h = Harness::start(vec![slow(2), slow(2)], |_| {}).await;
    // Another client occupies both slots of b0 directly.
    let direct = reqwest::Client::new();
    let mut outside = Vec::new();
    for _ in 0..2 {
        let mut r = direct
            .post(format!("{}/v1/chat/completions", h.mock(0).url()))
            .json(&stream_body())
            .send()
            .await
            .unwrap();
        assert!(r.chunk().await.unwrap().is_some());
        outside.push(r);
    }
    eventually("the probe sees b0's slots taken", || async {
        h.backend_status("b0").await["capacity"] == 0
    })
    .await;
    let status = h.backend_status("b0").await;
    assert_eq!(status["slots_idle"], 0);
    assert_eq!(status["breaker"], "closed", "busy is not failed");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut resp = h
            .post("/v1/chat/completions", stream_body())
            .send()
            .await
            .unwrap();
        assert!(resp.chunk().await.unwrap().is_some());
        held.push(resp);
    }
    assert_eq!(
        h.mock(1).handle().stats().in_flight,
        2,
        "the idle backend took both"
    );
    assert_eq!(
        h.mock(0).handle().stats().in_flight,
        2,
        "only the outside client's requests on b0"
    );
    drop((held, outside));
    h.shutdown().await;
}

#[tokio::test]
async fn failing_backend_opens_its_breaker_and_traffic_moves_then_it_recovers() {
    let h = Harness::start(
        vec![
            MockConfig {
                fail_rate: 1.0,
                ..mock(4)
            },
            mock(4),
        ],
        |c| {
            c.breaker.cooldown = "300ms".into();
        },
    )
    .await;
    for _ in 0..10 {
        let resp = h.chat(chat_body()).await;
        assert_eq!(
            resp.status(),
            200,
            "clients see no error: failed attempts are retried on b1"
        );
    }
    assert_eq!(h.backend_status("b0").await["breaker"], "open");
    let failed_before = h.mock(0).handle().stats().failed;
    assert!(
        (3..10).contains(&failed_before),
        "b0 got only the requests that opened it: {failed_before}"
    );
    assert_eq!(h.mock(1).handle().stats().served, 10);
    h.mock(0).handle().set_fail_rate(0.0);
    // The health probe after the cooldown closes it.
    eventually("b0's breaker closes", || async {
        h.backend_status("b0").await["breaker"] == "closed"
    })
    .await;
    let metrics = {
        let mut reg = prometheus_client::registry::Registry::default();
        h.gw.metrics().register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    };
    assert!(
        metrics.contains("gpufleet_gateway_breaker_transitions_total{backend=\"b0\",to=\"open\"}"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "gpufleet_gateway_errors_total{backend=\"b0\",model=\"m1\",kind=\"upstream_error\"}"
    ));
    h.shutdown().await;
}

#[tokio::test]
async fn hung_or_unreachable_backend_is_retried_before_the_first_byte() {
    let h = Harness::start(
        vec![
            MockConfig {
                hang_rate: 1.0,
                ..mock(4)
            },
            mock(4),
        ],
        |c| {
            c.first_byte_timeout = "300ms".into();
            c.breaker.consecutive_failures = 100;
        },
    )
    .await;
    for stream in [false, true] {
        let resp = h
            .chat(json!({ "model": MODEL, "messages": [], "stream": stream }))
            .await;
        assert_eq!(resp.status(), 200);
        assert!(!resp.text().await.unwrap().is_empty());
    }
    assert_eq!(h.mock(1).handle().stats().served, 2);
    h.shutdown().await;

    // A port nobody listens on: connect fails, b1 answers.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let h = Harness::start(vec![mock(4)], |c| {
        c.backends.insert(0, common::backend("dead", &dead_url, 4));
    })
    .await;
    for _ in 0..3 {
        assert_eq!(h.chat(chat_body()).await.status(), 200);
    }
    h.shutdown().await;
}

#[tokio::test]
async fn stream_chunks_pass_through_before_the_backend_finishes() {
    let h = Harness::start(vec![slow(1)], |_| {}).await;
    let mut resp = h
        .post("/v1/chat/completions", stream_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let first = resp.chunk().await.unwrap().unwrap();
    let text = String::from_utf8(first.to_vec()).unwrap();
    assert!(
        text.starts_with("data: {") && text.contains("chat.completion.chunk"),
        "{text}"
    );
    // 60 tokens at 1/s: the backend is far from done when the first chunk reached us.
    let stats = h.mock(0).handle().stats();
    assert_eq!((stats.served, stats.in_flight), (0, 1));
    drop(resp);
    h.shutdown().await;
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let h = Harness::start(vec![slow(2)], |_| {}).await;
    let mut resp = h
        .post("/v1/chat/completions", stream_body())
        .send()
        .await
        .unwrap();
    assert!(resp.chunk().await.unwrap().is_some());
    assert_eq!(h.mock(0).handle().stats().in_flight, 1);
    drop(resp);
    eventually("the backend's request is cancelled", || async {
        h.mock(0).handle().stats().in_flight == 0
    })
    .await;
    eventually("the gateway's lease is released", || async {
        h.backend_status("b0").await["in_flight"] == 0
    })
    .await;
    assert_eq!(h.mock(0).handle().stats().served, 0);

    // Same for a non-streaming request that is still generating.
    let body = json!({ "model": MODEL, "messages": [], "max_tokens": 60 });
    let pending = tokio::spawn(h.post("/v1/chat/completions", body).send());
    eventually("the request reaches the backend", || async {
        h.mock(0).handle().stats().in_flight == 1
    })
    .await;
    pending.abort();
    eventually("the backend's request is cancelled", || async {
        h.mock(0).handle().stats().in_flight == 0
    })
    .await;
    h.shutdown().await;
}

struct HotB0;

impl gpufleet_gateway::GpuHints for HotB0 {
    fn hint(&self, backend: &str, _gpus: &[String]) -> Option<gpufleet_gateway::GpuHint> {
        (backend == "b0").then_some(gpufleet_gateway::GpuHint {
            temperature_c: Some(95.0),
            ..Default::default()
        })
    }
}

#[tokio::test]
async fn thermally_throttling_gpu_is_skipped_while_another_has_room() {
    let mut config = common::base_config();
    let mut mocks = Vec::new();
    for i in 0..2 {
        let m = gpufleet_sim::MockServer::start(slow(2)).await.unwrap();
        config
            .backends
            .push(common::backend(&format!("b{i}"), &m.url(), 2));
        mocks.push(Some(m));
    }
    let h = Harness::start_full(
        config,
        mocks,
        tempfile::tempdir().unwrap(),
        std::time::Duration::from_secs(30),
        Some(std::sync::Arc::new(HotB0)),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut resp = h
            .post("/v1/chat/completions", stream_body())
            .send()
            .await
            .unwrap();
        assert!(resp.chunk().await.unwrap().is_some());
        held.push(resp);
    }
    assert_eq!(
        h.mock(1).handle().stats().in_flight,
        2,
        "the cool GPU is filled first"
    );
    assert_eq!(
        h.mock(0).handle().stats().in_flight,
        1,
        "the hot one only takes the overflow"
    );
    drop(held);
    h.shutdown().await;
}

#[tokio::test]
async fn upstream_api_key_is_added_and_the_client_key_is_not_forwarded() {
    use axum::http::HeaderMap;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: HeaderMap| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(
                    headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned()),
                );
                axum::Json(json!({ "choices": [], "usage": { "completion_tokens": 1 } }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let h = Harness::start(vec![], |c| {
        let mut b = common::backend("keyed", &url, 4);
        b.kind = gpufleet_gateway::BackendKind::Openai;
        b.api_key = Some("sk-upstream".into());
        c.backends.push(b);
    })
    .await;
    let resp = h
        .post("/v1/chat/completions", chat_body())
        .bearer_auth("gateway-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        rx.recv().await.unwrap().as_deref(),
        Some("Bearer sk-upstream")
    );
    h.shutdown().await;
    server.abort();
}
