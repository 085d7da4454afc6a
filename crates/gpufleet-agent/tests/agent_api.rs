//! The real agent end to end: `run_on` on 127.0.0.1:0 over this machine's /proc, a fake Docker
//! Engine API on a unix socket, a llama.cpp mock (gpufleet-sim), Ollama and vLLM stubs and a model
//! server that is down; reqwest as the server would call it.

mod common;

use axum::routing::get;
use axum::Router;
use common::{closed_port_url, eventually, fake_docker, serve_stub};
use gpufleet_agent::config::ModelServerConfig;
use gpufleet_agent::containers::{ContainerError, DockerClient};
use gpufleet_agent::wire::{ModelServerKind, Status};
use gpufleet_agent::{AgentConfig, HealthReport, HostMetrics};
use std::time::Duration;

const TOKEN: &str = "test-agent-token-0123456789";

struct Agent {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Agent {
    async fn start(cfg: AgentConfig) -> Agent {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gpufleet_agent::run_on(l, cfg, async {
            let _ = rx.await;
        }));
        // The first sample is taken before the listener serves; wait until it answers.
        let client = reqwest::Client::new();
        let health = format!("{url}/health");
        eventually(10, "agent answering", || {
            let (c, h) = (client.clone(), health.clone());
            async move { c.get(&h).send().await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
        Agent { url, stop: Some(tx), task }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task).await.expect("agent stops").unwrap().unwrap();
    }
}

async fn model_stubs() -> (String, String) {
    let ollama = serve_stub(Router::new().route(
        "/api/ps",
        get(|| async { axum::Json(serde_json::json!({"models": [{"name": "llama3:8b", "size": 1}, {"name": "qwen2:7b"}]})) }),
    ))
    .await;
    let vllm = serve_stub(
        Router::new()
            .route("/metrics", get(|| async { "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\"} 3.0\nvllm:num_requests_waiting{model_name=\"m\"} 7.0\n" }))
            .route("/v1/models", get(|| async { axum::Json(serde_json::json!({"data": [{"id": "meta-llama/Llama-3.1-8B"}]})) })),
    )
    .await;
    (ollama, vllm)
}

#[tokio::test]
async fn docker_client_against_fake_engine() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, fake, _stop) = fake_docker(dir.path()).await;
    let c = DockerClient::new(&sock, Duration::from_secs(2));
    let states = c.states().await.unwrap();
    let names: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["batch", "crashed", "flaky", "web"]);
    let flaky = &states[2];
    assert_eq!(flaky.health.as_deref(), Some("unhealthy"));
    assert_eq!(flaky.health_log.len(), 5);
    assert_eq!(flaky.health_log[4], "exit 1: probe 5 unhealthy");
    assert!(states[0].stopped_on_purpose, "exit 0 with policy no is on purpose");
    assert!(!states[1].stopped_on_purpose, "SIGSEGV is a crash");
    c.restart("web").await.unwrap();
    assert_eq!(c.inspect("web").await.unwrap().restart_count, 1);
    assert!(matches!(c.inspect("nope").await, Err(ContainerError::NotFound(_))));
    assert!(matches!(c.restart("../../x").await, Err(ContainerError::InvalidId(_))));
    assert!(fake.requests.lock().iter().all(|r| !r.contains("..")));
    let gone = DockerClient::new(dir.path().join("absent.sock"), Duration::from_secs(1));
    assert!(matches!(gone.list_ids().await, Err(ContainerError::Connect { .. })));
}

#[tokio::test]
async fn agent_health_metrics_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, fake, _stop_docker) = fake_docker(dir.path()).await;
    let llama = gpufleet_sim::MockServer::start(gpufleet_sim::MockConfig { slots: 3, ..gpufleet_sim::MockConfig::new("tiny-llama") }).await.unwrap();
    let (ollama, vllm) = model_stubs().await;
    let down = closed_port_url().await;
    let ms = |name: &str, kind, url: &str| ModelServerConfig { name: name.into(), kind, url: url.into() };
    let cfg = AgentConfig {
        host_name: "test-host".into(),
        docker_socket: Some(sock),
        token: Some(TOKEN.into()),
        sample_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_secs(2),
        model_servers: vec![
            ms("llama", ModelServerKind::Llamacpp, &llama.url()),
            ms("ollama", ModelServerKind::Ollama, &ollama),
            ms("vllm", ModelServerKind::Vllm, &vllm),
            ms("gone", ModelServerKind::Llamacpp, &down),
        ],
        ..AgentConfig::default()
    };
    let agent = Agent::start(cfg).await;
    let client = reqwest::Client::new();

    // /health needs no token.
    let r: HealthReport = client.get(format!("{}/health", agent.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(r.host, "test-host");
    // The report's status is its worst component's; the containers and model server below make it
    // at least warn. (Disks are this machine's real mounts, so one may be fuller than 85 or 95 %.)
    assert_eq!(Some(r.status), r.components.iter().map(|c| c.status).max(), "{r:#?}");
    assert!(r.status >= Status::Warn, "{r:#?}");
    let comp = |name: &str| r.components.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name} in {r:#?}"));
    assert_eq!(comp("container:flaky").status, Status::Warn);
    assert_eq!(comp("container:crashed").status, Status::Warn);
    assert_eq!(comp("container:batch").status, Status::Ok);
    assert_eq!(comp("container:web").status, Status::Ok);
    assert_eq!(comp("model_server:llama").status, Status::Ok);
    assert_eq!(comp("model_server:gone").status, Status::Warn);
    assert_eq!(comp("gpu").message, gpufleet_agent::nvml::NO_DRIVER_MESSAGE);
    assert_eq!(comp("gpu").status, Status::Ok);
    assert!(r.components.iter().any(|c| c.name == "disk:/"), "{r:#?}");

    // /metrics/host follows the token.
    let url = format!("{}/metrics/host", agent.url);
    let unauth = client.get(&url).send().await.unwrap();
    assert_eq!(unauth.status(), 401);
    assert_eq!(unauth.headers()["www-authenticate"], "Bearer");
    assert_eq!(client.get(&url).bearer_auth("wrong-token-xxxxxxxx").send().await.unwrap().status(), 401);
    let m: HostMetrics = client.get(&url).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert!(m.mem_total_bytes > 0 && m.cpus > 0 && m.uptime_s > 0.0);
    assert_eq!(m.containers.len(), 4);
    let server = |n: &str| m.model_servers.iter().find(|s| s.name == n).unwrap().clone();
    let l = server("llama");
    assert!(l.up);
    assert_eq!((l.slots_busy, l.slots_total), (Some(0), Some(3)));
    assert_eq!(l.models, ["tiny-llama"]);
    assert_eq!(server("ollama").models, ["llama3:8b", "qwen2:7b"]);
    let v = server("vllm");
    assert_eq!((v.slots_busy, v.queued, v.models.len()), (Some(3), Some(7), 1));
    let g = server("gone");
    assert!(!g.up && g.error.is_some());

    // The sampler keeps sampling: a later sample has a CPU window.
    eventually(10, "a windowed sample", || {
        let (c, u) = (client.clone(), url.clone());
        async move {
            let m: HostMetrics = c.get(&u).bearer_auth(TOKEN).send().await.ok()?.json().await.ok()?;
            (m.cpu_window_ms > 0).then_some(())
        }
    })
    .await;

    // Restarts.
    let restart = |id: &str| client.post(format!("{}/containers/{id}/restart", agent.url));
    assert_eq!(restart("web").send().await.unwrap().status(), 401);
    let ok = restart("web").bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(fake.restarts.lock().get("aaa111"), Some(&1));
    let refused = restart("batch").bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(refused.status(), 409);
    assert!(refused.text().await.unwrap().contains("stopped on purpose"));
    assert!(!fake.restarts.lock().contains_key("ccc333"));
    assert_eq!(restart("crashed").bearer_auth(TOKEN).send().await.unwrap().status(), 200);
    assert_eq!(restart("nope").bearer_auth(TOKEN).send().await.unwrap().status(), 404);
    assert_eq!(restart("a..b%2F..").bearer_auth(TOKEN).send().await.unwrap().status(), 400);
    assert_eq!(fake.restarts.lock().values().sum::<u64>(), 2);

    agent.stop().await;
    llama.stop().await;
}

#[tokio::test]
async fn without_a_token_metrics_are_open_and_restarts_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, fake, _stop) = fake_docker(dir.path()).await;
    let agent = Agent::start(AgentConfig { docker_socket: Some(sock), ..AgentConfig::default() }).await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{}/metrics/host", agent.url)).send().await.unwrap().status(), 200);
    let r = client.post(format!("{}/containers/web/restart", agent.url)).bearer_auth("anything-at-all-123").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(fake.restarts.lock().is_empty());
    agent.stop().await;
}

#[tokio::test]
async fn configured_socket_missing_is_a_probe_error_and_restart_is_502() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(AgentConfig { docker_socket: Some(dir.path().join("none.sock")), token: Some(TOKEN.into()), ..AgentConfig::default() }).await;
    let client = reqwest::Client::new();
    let r: HealthReport = client.get(format!("{}/health", agent.url)).send().await.unwrap().json().await.unwrap();
    let a = r.components.iter().find(|c| c.name == "agent").unwrap();
    assert_eq!(a.status, Status::Warn);
    assert!(a.message.contains("none.sock"), "{}", a.message);
    let resp = client.post(format!("{}/containers/web/restart", agent.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    agent.stop().await;
}
