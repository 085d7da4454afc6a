//! Async jobs end to end: 202 → completed; failing N times → dead letters; retry re-runs it;
//! discard hides it; queued jobs survive a gateway restart.

mod common;

use common::{chat_body, eventually, eventually_some, Harness, MODEL};
use gpufleet_sim::MockConfig;
use serde_json::{json, Value};

async fn job_status(h: &Harness, id: &str) -> Value {
    h.get_json(&format!("/v1/jobs/{id}")).await
}

#[tokio::test]
async fn async_job_is_accepted_then_completed_with_the_result() {
    let h = Harness::start(vec![MockConfig::new(MODEL)], |_| {}).await;
    let resp = h
        .post(
            "/v1/jobs",
            json!({ "model": MODEL, "messages": [], "priority": "high", "stream": true }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(location, format!("/v1/jobs/{id}"));
    eventually("the job completes", || async {
        job_status(&h, &id).await["status"] == "completed"
    })
    .await;
    let job = job_status(&h, &id).await;
    assert_eq!(
        job["result"]["object"], "chat.completion",
        "a job never streams: {job}"
    );
    assert_eq!(job["priority"], "high");
    assert_eq!(job["attempts"], 1);

    // `"async": true` on a completion route does the same.
    let resp = h
        .post(
            "/v1/completions",
            json!({ "model": MODEL, "prompt": "x", "async": true }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the job completes", || async {
        job_status(&h, &id).await["status"] == "completed"
    })
    .await;
    assert_eq!(
        job_status(&h, &id).await["result"]["object"],
        "text_completion"
    );

    let missing = h
        .http
        .get(format!("{}/v1/jobs/job_{:032x}", h.url, 7))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    h.shutdown().await;
}

#[tokio::test]
async fn failing_job_lands_in_the_dlq_and_retry_runs_it_again() {
    let h = Harness::start(
        vec![MockConfig {
            fail_rate: 1.0,
            ..MockConfig::new(MODEL)
        }],
        |c| {
            c.jobs.max_attempts = 2;
            c.max_attempts = 1;
            c.breaker.consecutive_failures = 1000;
        },
    )
    .await;
    let resp = h.post("/v1/jobs", chat_body()).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the job fails", || async {
        job_status(&h, &id).await["status"] == "failed"
    })
    .await;
    let job = job_status(&h, &id).await;
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .starts_with("dead-lettered after 2 attempts"),
        "{job}"
    );
    let dead = eventually_some("the job reaches the dead letters", || async {
        let dead = h.get_json("/api/v1/dlq").await;
        dead["dead_letters"]
            .as_array()
            .is_some_and(|d| d.len() == 1)
            .then_some(dead)
    })
    .await;
    let entry = &dead["dead_letters"][0];
    assert_eq!(entry["job_id"], id.as_str());
    assert_eq!(entry["attempts"], 2);
    assert!(entry["reason"].as_str().unwrap().contains("500"), "{entry}");
    let dl_id = entry["id"].as_str().unwrap().to_owned();
    let inspected = h.get_json(&format!("/api/v1/dlq/{dl_id}")).await;
    assert_eq!(inspected["body"]["messages"][0]["content"], "hi");
    assert_eq!(h.mock(0).handle().stats().failed, 2, "one run per attempt");

    h.mock(0).handle().set_fail_rate(0.0);
    let retried = h
        .http
        .post(format!("{}/api/v1/dlq/{dl_id}/retry", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 202);
    eventually("the retried job completes", || async {
        job_status(&h, &id).await["status"] == "completed"
    })
    .await;
    assert_eq!(
        h.get_json("/api/v1/dlq").await["dead_letters"],
        json!([]),
        "a retried dead letter is no longer listed"
    );
    let again = h
        .http
        .delete(format!("{}/api/v1/dlq/{dl_id}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    h.shutdown().await;
}

#[tokio::test]
async fn discard_hides_a_dead_letter() {
    let h = Harness::start(
        vec![MockConfig {
            fail_rate: 1.0,
            ..MockConfig::new(MODEL)
        }],
        |c| {
            c.jobs.max_attempts = 1;
            c.max_attempts = 1;
            c.breaker.consecutive_failures = 1000;
        },
    )
    .await;
    h.post("/v1/jobs", chat_body()).send().await.unwrap();
    let dl_id = eventually_some("a dead letter appears", || async {
        let d = h.get_json("/api/v1/dlq").await;
        d["dead_letters"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let resp = h
        .http
        .delete(format!("{}/api/v1/dlq/{dl_id}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(h.get_json("/api/v1/dlq").await["dead_letters"], json!([]));
    let resp = h
        .http
        .get(format!("{}/api/v1/dlq/{dl_id}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn queued_job_survives_a_gateway_restart() {
    let mut h = Harness::start(vec![MockConfig::new(MODEL)], |c| {
        c.jobs.max_wait = "60s".into()
    })
    .await;
    let addr = h.addrs[0];
    h.kill(0).await;
    let resp = h.post("/v1/jobs", chat_body()).send().await.unwrap();
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("a worker is running it", || async {
        job_status(&h, &id).await["status"] == "running"
    })
    .await;
    // Stop the gateway while the job waits for capacity (it is never acked).
    let dir = std::mem::replace(&mut h.dir, tempfile::tempdir().unwrap());
    h.shutdown().await;

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let mock = gpufleet_sim::MockServer::start_on(listener, MockConfig::new(MODEL)).unwrap();
    let mut config = common::base_config();
    config.backends.push(common::backend("b0", &mock.url(), 4));
    // The broker's visibility timeout (30 s) would delay the redelivery of the abandoned
    // delivery; a fresh consumer group member gets it after that. Make it short here.
    let h = Harness::start_with_visibility(
        config,
        vec![Some(mock)],
        dir,
        std::time::Duration::from_millis(300),
    )
    .await;
    eventually("the job completes after the restart", || async {
        job_status(&h, &id).await["status"] == "completed"
    })
    .await;
    h.shutdown().await;
}

/// A job that runs for several visibility timeouts (a slow backend) is kept in flight by its
/// worker: no second worker starts it, it completes once, on its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_the_visibility_timeout_runs_once() {
    let mut slow = MockConfig::new(MODEL);
    slow.latency_ms = 4000;
    let mock = gpufleet_sim::MockServer::start(slow).await.unwrap();
    let mut config = common::base_config();
    config.jobs.workers = 3;
    config.backends.push(common::backend("b0", &mock.url(), 4));
    let h = Harness::start_with_visibility(config, vec![Some(mock)], tempfile::tempdir().unwrap(), std::time::Duration::from_millis(1500)).await;
    let resp = h.post("/v1/jobs", chat_body()).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    eventually("the slow job completes", || async { job_status(&h, &id).await["status"] == "completed" }).await;
    let job = job_status(&h, &id).await;
    assert_eq!(job["attempts"], 1, "the job was started again while it ran: {job}");
    h.shutdown().await;
}
