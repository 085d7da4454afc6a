//! System test of the inference gateway: `gpufleet up` and two `gpufleet mock-backend` processes.
//! Completions (plain and streaming) go through the gateway with an API key; when one backend is
//! killed, the following requests are served by the other one without errors.

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

    drop(first); // SIGKILL one backend
    let mut failures = Vec::new();
    for _ in 0..20 {
        let (s, body) = post(&url, chat);
        if s != 200 {
            failures.push((s, body));
        }
    }
    assert!(failures.is_empty(), "requests failed after one backend died: {failures:?}");
    let backends = get(&format!("{}/api/v1/gateway/backends", server.url)).unwrap();
    assert!(backends.to_string().contains("\"a\""), "{backends}");
}
