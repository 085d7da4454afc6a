//! System tests of the gateway's queue with real processes (`gpufleet up` and
//! `gpufleet mock-backend`): backpressure thresholds give the documented status codes and
//! `Retry-After`, and with every backend down requests and async jobs wait and complete once a
//! backend comes back, none lost.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mock(port: u16, slots: u32, latency_ms: u64) -> Proc {
    let child = Command::new(BIN)
        .args(["mock-backend", "--listen", &format!("127.0.0.1:{port}"), "--model", "m1", "--tokens-per-s", "0"])
        .args(["--slots", &slots.to_string(), "--latency-ms", &latency_ms.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "mock backend listening", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    Proc(child)
}

fn server(dir: &std::path::Path, toml: &str) -> ServerProc {
    let config = dir.join("gpufleet.toml");
    std::fs::write(&config, toml).unwrap();
    ServerProc::start_with(&dir.join("data"), free_port(), &["--config", config.to_str().unwrap()])
}

/// What one request got: status, `Retry-After`, body.
type Answer = (u16, Option<String>, String);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Sends a chat completion on its own thread; the answer arrives on the returned channel.
fn chat_async(url: &str, priority: &str) -> mpsc::Receiver<Answer> {
    let (tx, rx) = mpsc::channel();
    let (url, priority) = (url.to_owned(), priority.to_owned());
    std::thread::spawn(move || {
        let answer = rt().block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(admin_key())
                .header("x-priority", priority)
                .json(&serde_json::json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}))
                .timeout(Duration::from_secs(120))
                .send()
                .await
                .unwrap();
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), retry, r.text().await.unwrap())
        });
        let _ = tx.send(answer);
    });
    rx
}

/// Requests waiting in the gateway's queue (all priorities), from `/metrics`.
fn queue_depth(url: &str) -> u64 {
    let text = rt().block_on(async {
        reqwest::Client::new().get(format!("{url}/metrics")).bearer_auth(admin_key()).send().await.unwrap().text().await.unwrap()
    });
    text.lines()
        .filter(|l| l.starts_with("gpufleet_gateway_queue_depth"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The first backend's status; `Null` when the request did not succeed (the callers poll).
fn backend_state(url: &str) -> serde_json::Value {
    let Some(v) = get(&format!("{url}/api/v1/gateway/backends")) else { return serde_json::Value::Null };
    let list = v.as_array().cloned().or_else(|| v["backends"].as_array().cloned()).unwrap_or_default();
    list.first().cloned().unwrap_or_default()
}

#[test]
fn queue_thresholds_give_the_documented_status_codes_and_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _backend = mock(port, 2, 3000);
    let srv = server(
        dir.path(),
        &format!(
            "[gateway]\nprobe_interval = \"100ms\"\nfirst_byte_timeout = \"60s\"\n\
             [gateway.queue]\nhint_depth = 2\nreject_normal_depth = 4\nreject_all_depth = 6\nmax_wait = \"60s\"\n\n\
             [[gateway.backends]]\nname = \"a\"\nkind = \"llamacpp\"\nurl = \"http://127.0.0.1:{port}\"\nmodels = [\"m1\"]\nmax_concurrency = 2\n"
        ),
    );
    let url = srv.url.clone();
    // Two requests take the backend's two slots (3 s each); the rest queue. Each new request
    // is sent once the previous one is visibly queued, so its depth on arrival is known.
    let mut pending = Vec::new();
    for _ in 0..2 {
        pending.push(("normal", 0, chat_async(&url, "normal")));
    }
    wait_until(Duration::from_secs(10), "both slots busy", || backend_state(&url)["in_flight"] == 2);
    for (depth, priority) in [(0, "normal"), (1, "low"), (2, "normal"), (3, "normal"), (4, "high"), (5, "high")] {
        pending.push((priority, depth, chat_async(&url, priority)));
        wait_until(Duration::from_secs(10), &format!("queue depth {}", depth + 1), || queue_depth(&url) == depth + 1);
    }
    // At depth 6 (reject_all_depth): normal, low and even high are refused at once, with
    // Retry-After. (Depths between reject_normal_depth and reject_all_depth: next test.)
    for priority in ["normal", "low", "high"] {
        let (status, retry, body) = chat_async(&url, priority).recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(status, 503, "{priority} at depth 6: {body}");
        assert!(retry.as_deref().is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)), "{priority} at depth 6 needs Retry-After: {retry:?}");
        assert!(body.contains("\"error\""), "OpenAI-style error body: {body}");
    }
    // Everything accepted completes; those that arrived at depth >= 2 carry the hint.
    for (priority, depth, rx) in pending {
        let (status, retry, body) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(status, 200, "{priority} accepted at depth {depth}: {body}");
        assert_eq!(retry.is_some(), depth >= 2, "Retry-After on a request accepted at depth {depth}: {retry:?}");
    }
}

#[test]
fn normal_and_low_are_refused_between_the_thresholds_but_high_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _backend = mock(port, 1, 3000);
    let srv = server(
        dir.path(),
        &format!(
            "[gateway]\nprobe_interval = \"100ms\"\nfirst_byte_timeout = \"60s\"\n\
             [gateway.queue]\nhint_depth = 1\nreject_normal_depth = 2\nreject_all_depth = 4\nmax_wait = \"60s\"\n\n\
             [[gateway.backends]]\nname = \"a\"\nkind = \"llamacpp\"\nurl = \"http://127.0.0.1:{port}\"\nmodels = [\"m1\"]\nmax_concurrency = 1\n"
        ),
    );
    let url = srv.url.clone();
    let mut accepted = vec![chat_async(&url, "normal")];
    wait_until(Duration::from_secs(10), "the slot busy", || backend_state(&url)["in_flight"] == 1);
    for depth in 0..2 {
        accepted.push(chat_async(&url, "normal"));
        wait_until(Duration::from_secs(10), "queued", || queue_depth(&url) == depth + 1);
    }
    // Depth 2 (between reject_normal_depth and reject_all_depth).
    for priority in ["normal", "low"] {
        let (status, retry, body) = chat_async(&url, priority).recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(status, 503, "{priority} at depth 2: {body}");
        assert!(retry.is_some(), "503 carries Retry-After");
    }
    accepted.push(chat_async(&url, "high"));
    wait_until(Duration::from_secs(10), "high queued", || queue_depth(&url) == 3);
    for rx in accepted {
        let (status, _, body) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn with_every_backend_down_requests_and_jobs_wait_and_complete_when_one_returns() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let srv = server(
        dir.path(),
        &format!(
            "[gateway]\nprobe_interval = \"100ms\"\nconnect_timeout = \"300ms\"\n\
             [gateway.queue]\nmax_wait = \"60s\"\n\n\
             [[gateway.backends]]\nname = \"a\"\nkind = \"llamacpp\"\nurl = \"http://127.0.0.1:{port}\"\nmodels = [\"m1\"]\nmax_concurrency = 4\n"
        ),
    );
    let url = srv.url.clone();
    wait_until(Duration::from_secs(20), "the breaker of the dead backend to open", || backend_state(&url)["breaker"] == "open");
    let waiting: Vec<_> = ["high", "normal", "low", "normal"].iter().map(|p| chat_async(&url, p)).collect();
    wait_until(Duration::from_secs(10), "4 requests queued", || queue_depth(&url) == 4);
    let jobs: Vec<String> = (0..3)
        .map(|i| {
            rt().block_on(async {
                let r = reqwest::Client::new()
                    .post(format!("{url}/v1/jobs"))
                    .bearer_auth(admin_key())
                    .json(&serde_json::json!({"model": "m1", "messages": [{"role": "user", "content": format!("job {i}")}], "max_tokens": 4}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
                let v: serde_json::Value = r.json().await.unwrap();
                v["job_id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    for id in &jobs {
        let v = get(&format!("{url}/v1/jobs/{id}")).unwrap();
        assert!(v["status"] == "queued" || v["status"] == "running", "a job cannot finish with no backend: {v}");
    }
    // A backend comes back on the same address.
    let _backend = mock(port, 4, 10);
    for rx in waiting {
        let (status, _, body) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"choices\""), "{body}");
    }
    for id in &jobs {
        wait_until(Duration::from_secs(60), &format!("job {id} completed"), || {
            get(&format!("{url}/v1/jobs/{id}")).is_some_and(|v| v["status"] == "completed")
        });
        let v = get(&format!("{url}/v1/jobs/{id}")).unwrap();
        assert!(v.to_string().contains("choices"), "the result is kept: {v}");
    }
    wait_until(Duration::from_secs(20), "breaker closed", || backend_state(&url)["breaker"] == "closed");
}
