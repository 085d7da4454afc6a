//! Waiting for capacity: all backends down → requests queue and complete when one returns;
//! backpressure thresholds → the documented statuses and `Retry-After`.

mod common;

use common::{chat_body, eventually, Harness, MODEL};
use gpufleet_sim::MockConfig;
use serde_json::json;

#[tokio::test]
async fn all_backends_down_requests_queue_and_complete_when_one_returns() {
    let mut h = Harness::start(vec![MockConfig::new(MODEL), MockConfig::new(MODEL)], |c| {
        c.breaker.consecutive_failures = 2;
    })
    .await;
    h.kill(0).await;
    h.kill(1).await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let req = h.post(
            "/v1/chat/completions",
            json!({ "model": MODEL, "messages": [], "stream": i % 2 == 0 }),
        );
        clients.push(tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }));
    }
    let job = h.post("/v1/jobs", chat_body()).send().await.unwrap();
    assert_eq!(
        job.status(),
        202,
        "an async job is accepted while nothing can serve it"
    );
    let job_id = job.json::<serde_json::Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("all six requests wait in the queue", || async {
        h.gw.queue_depth() >= 6
    })
    .await;
    for b in ["b0", "b1"] {
        assert_eq!(h.backend_status(b).await["breaker"], "open");
    }
    h.revive(1, MockConfig::new(MODEL)).await;
    for c in clients {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("quick"), "{body}");
    }
    eventually("the job completes", || async {
        h.get_json(&format!("/v1/jobs/{job_id}")).await["status"] == "completed"
    })
    .await;
    assert_eq!(
        h.mock(1).handle().stats().served,
        7,
        "none lost, none doubled"
    );
    assert_eq!(h.gw.queue_depth(), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn queue_depth_thresholds_give_the_documented_statuses() {
    // One slot, held by a long stream; thresholds 2 / 3 / 4.
    let slow = MockConfig {
        slots: 1,
        tokens_per_s: 1.0,
        max_tokens: 600,
        ..MockConfig::new(MODEL)
    };
    let h = Harness::start(vec![slow], |c| {
        c.queue.hint_depth = 2;
        c.queue.reject_normal_depth = 3;
        c.queue.reject_all_depth = 4;
    })
    .await;
    let mut holder = h
        .post(
            "/v1/chat/completions",
            json!({ "model": MODEL, "messages": [], "stream": true }),
        )
        .send()
        .await
        .unwrap();
    assert!(holder.chunk().await.unwrap().is_some());

    let send = |priority: &'static str| {
        let one_token = json!({ "model": MODEL, "messages": [], "max_tokens": 1 });
        let req = h
            .post("/v1/chat/completions", one_token)
            .header("x-priority", priority);
        tokio::spawn(async move { req.send().await.unwrap() })
    };
    let mut waiting = Vec::new();
    // Depth 0 and 1: accepted, no hint. Depth 2: accepted with a hint.
    for depth in 0..3 {
        waiting.push((depth, send("normal")));
        eventually("the request waits", || async {
            h.gw.queue_depth() == depth + 1
        })
        .await;
    }
    // Depth 3: low and normal refused, high accepted.
    for p in ["low", "normal"] {
        let refused = send(p).await.unwrap();
        assert_eq!(refused.status(), 503);
        assert!(refused.headers().contains_key("retry-after"));
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "queue_full");
    }
    waiting.push((3, send("high")));
    eventually("the high request waits", || async {
        h.gw.queue_depth() == 4
    })
    .await;
    // Depth 4: everything refused.
    let refused = send("high").await.unwrap();
    assert_eq!(refused.status(), 503);
    let secs: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs));

    drop(holder);
    for (depth, w) in waiting {
        let resp = w.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers().contains_key("retry-after"),
            depth >= 2,
            "hint only from depth 2 (request queued at depth {depth})"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn max_wait_ends_in_503_with_retry_after() {
    let slow = MockConfig {
        slots: 1,
        tokens_per_s: 1.0,
        max_tokens: 600,
        ..MockConfig::new(MODEL)
    };
    let h = Harness::start(vec![slow], |c| c.queue.max_wait = "200ms".into()).await;
    let mut holder = h
        .post(
            "/v1/chat/completions",
            json!({ "model": MODEL, "messages": [], "stream": true }),
        )
        .send()
        .await
        .unwrap();
    assert!(holder.chunk().await.unwrap().is_some());
    let resp = h.chat(chat_body()).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_timeout");
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(h.gw.queue_depth(), 0, "the timed-out waiter left the queue");
    drop(holder);
    h.shutdown().await;
}
