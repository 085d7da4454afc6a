//! System test of the inference gateway: `gpufleet up` and two `gpufleet mock-backend` processes.
//! Completions (plain and streaming) go through the gateway with an API key; when one backend is
//! killed under load, no request fails (they are retried on the other one), its breaker opens, and
//! it closes again when the backend returns. GPU telemetry steers traffic away from a hot GPU.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mock(port: u16) -> Proc {
    let child = Command::new(BIN)
        .args(["mock-backend", "--listen", &format!("127.0.0.1:{port}"), "--model", "m1", "--slots", "4", "--tokens-per-s", "0"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "mock backend /health", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Proc(child)
}

fn post(url: &str, body: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(url)
            .bearer_auth(admin_key())
            .header("content-type", "application/json")
            .body(body.to_owned())
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    })
}

#[test]
fn completions_stream_and_survive_a_killed_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let first = mock(p1);
    let _second = mock(p2);
    let config = dir.path().join("gpufleet.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nprobe_interval = \"100ms\"\nconnect_timeout = \"300ms\"\n\n\
             [[gateway.backends]]\nname = \"a\"\nkind = \"llamacpp\"\nurl = \"http://127.0.0.1:{p1}\"\nmodels = [\"m1\"]\nmax_concurrency = 4\n\n\
             [[gateway.backends]]\nname = \"b\"\nkind = \"llamacpp\"\nurl = \"http://127.0.0.1:{p2}\"\nmodels = [\"m1\"]\nmax_concurrency = 4\n"
        ),
    )
    .unwrap();
    let server = ServerProc::start_with(&dir.path().join("data"), free_port(), &["--config", config.to_str().unwrap()]);
    let chat = r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":8}"#;
    let url = format!("{}/v1/chat/completions", server.url);
    for _ in 0..10 {
        let (s, body) = post(&url, chat);
        assert_eq!(s, 200, "{body}");
        assert!(body.contains("\"choices\""), "{body}");
    }
    let (s, body) = post(&url, r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"stream":true}"#);
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("data: ") && body.trim_end().ends_with("data: [DONE]"), "{body}");
    let models = get(&format!("{}/v1/models", server.url)).unwrap();
    assert_eq!(models["data"][0]["id"], "m1", "{models}");

    // Kill backend a under load: 4 client threads keep sending while it dies.
    let load: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || (0..25).map(|_| post(&url, chat)).filter(|(s, _)| *s != 200).collect::<Vec<_>>())
        })
        .collect();
    wait_until(Duration::from_secs(20), "load reaching backend a", || sent(&server.url)["a"] >= 15);
    drop(first); // SIGKILL
    let failures: Vec<(u16, String)> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(failures.is_empty(), "non-streaming requests must be retried on b, none may fail: {failures:?}");
    wait_until(Duration::from_secs(20), "a's breaker open", || breaker(&server.url, "a") == "open");
    // a comes back on the same address: the half-open probe closes the breaker, traffic returns.
    let _again = mock(p1);
    wait_until(Duration::from_secs(30), "a's breaker closed", || breaker(&server.url, "a") == "closed");
    let a_before = sent(&server.url)["a"];
    wait_until(Duration::from_secs(30), "traffic back on a", || {
        assert_eq!(post(&url, chat).0, 200);
        sent(&server.url)["a"] > a_before
    });
}

fn breaker(server: &str, name: &str) -> String {
    let v = get(&format!("{server}/api/v1/gateway/backends")).unwrap();
    let list = v.as_array().cloned().or_else(|| v["backends"].as_array().cloned()).unwrap_or_default();
    list.iter().find(|b| b["name"] == name).map(|b| b["breaker"].as_str().unwrap_or("").to_owned()).unwrap_or_default()
}

/// Requests sent to each backend so far, from `/api/v1/gateway/backends`.
fn sent(server: &str) -> std::collections::BTreeMap<String, u64> {
    let v = get(&format!("{server}/api/v1/gateway/backends")).unwrap();
    let list = v.as_array().cloned().or_else(|| v["backends"].as_array().cloned()).unwrap_or_default();
    list.iter().map(|b| (b["name"].as_str().unwrap().to_owned(), b["requests"].as_u64().unwrap())).collect()
}

/// Posts JSON-lines telemetry for two GPUs, timestamped now.
fn gpu_telemetry(server: &str, hot: &str, cool: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let mut body = String::new();
    for (uuid, temp, reasons) in [(hot, 92, 0x40), (cool, 55, 0)] {
        for (metric, value) in [("DCGM_FI_DEV_GPU_TEMP", temp), ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", reasons), ("DCGM_FI_DEV_FB_FREE", 40_000), ("DCGM_FI_DEV_FB_USED", 40_000)] {
            body.push_str(&format!("{{\"timestamp\":{now},\"host\":\"gpu-host\",\"gpu_uuid\":\"{uuid}\",\"metric\":\"{metric}\",\"value\":{value}}}\n"));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{server}/api/v1/telemetry"))
            .bearer_auth(admin_key())
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "telemetry ingest answered {status}");
}

#[test]
fn telemetry_steers_traffic_away_from_a_throttling_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let _a = mock(p1);
    let _b = mock(p2);
    let config = dir.path().join("gpufleet.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nprobe_interval = \"100ms\"\n\n\
             [[gateway.backends]]\nname = \"a\"\nkind = \"llamacpp\"\nurl = \"http://127.0.0.1:{p1}\"\nmodels = [\"m1\"]\nmax_concurrency = 4\ngpus = [\"GPU-hot\"]\n\n\
             [[gateway.backends]]\nname = \"b\"\nkind = \"llamacpp\"\nurl = \"http://127.0.0.1:{p2}\"\nmodels = [\"m1\"]\nmax_concurrency = 4\ngpus = [\"GPU-cool\"]\n"
        ),
    )
    .unwrap();
    let server = ServerProc::start_with(&dir.path().join("data"), free_port(), &["--config", config.to_str().unwrap()]);
    let url = format!("{}/v1/chat/completions", server.url);
    let chat = r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#;
    // Requests from 4 clients at once: least-outstanding spreads them over both backends unless
    // one is excluded (sequential requests would leave the choice to the latency average alone).
    let burst = |per_client: usize| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || (0..per_client).map(|_| post(&url, chat).0).collect::<Vec<u16>>())
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap().iter().all(|&s| s == 200));
        }
    };
    // Without telemetry both backends get traffic.
    wait_until(Duration::from_secs(30), "traffic on both backends", || {
        burst(10);
        let s = sent(&server.url);
        s["a"] > 0 && s["b"] > 0
    });

    gpu_telemetry(&server.url, "GPU-hot", "GPU-cool");
    // The hints refresh every 2 s: poll until a burst of 40 requests leaves backend a alone.
    wait_until(Duration::from_secs(30), "traffic to avoid the throttling GPU", || {
        let a_before = sent(&server.url)["a"];
        burst(10);
        sent(&server.url)["a"] == a_before
    });
    let (a_now, b_now) = (sent(&server.url)["a"], sent(&server.url)["b"]);
    burst(10);
    let after = sent(&server.url);
    assert_eq!(after["a"], a_now, "no request may reach the throttling GPU's backend while another is free");
    assert_eq!(after["b"], b_now + 40);
}
