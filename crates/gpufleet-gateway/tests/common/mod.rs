//! Test harness: mock backends (gpufleet-sim) on 127.0.0.1:0, the embedded broker and the SQLite
//! job store in a temp dir, the gateway served on 127.0.0.1:0 with its workers supervised.
#![allow(dead_code, unreachable_pub)]

use gpufleet_broker::{BrokerConfig, EmbeddedBroker, FsyncPolicy};
use gpufleet_gateway::{
    router, BackendConfig, BackendKind, Gateway, GatewayConfig, GpuHints, SqliteJobStore,
};
use gpufleet_runtime::{Shutdown, Supervisor};
use gpufleet_sim::{MockConfig, MockServer};
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const MODEL: &str = "m1";

pub struct Harness {
    pub gw: Arc<Gateway>,
    pub url: String,
    pub mocks: Vec<Option<MockServer>>,
    pub addrs: Vec<SocketAddr>,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    supervisor: Option<Supervisor>,
    server: JoinHandle<()>,
}

/// Test defaults: fast probe and cooldown, short waits.
pub fn base_config() -> GatewayConfig {
    let mut c = GatewayConfig {
        probe_interval: "50ms".into(),
        probe_timeout: "500ms".into(),
        connect_timeout: "500ms".into(),
        first_byte_timeout: "5s".into(),
        ..GatewayConfig::default()
    };
    c.breaker.cooldown = "200ms".into();
    c.breaker.consecutive_failures = 3;
    c.queue.max_wait = "20s".into();
    c.jobs.workers = 2;
    c.jobs.max_wait = "10s".into();
    c
}

pub fn backend(name: &str, url: &str, max_concurrency: u32) -> BackendConfig {
    BackendConfig {
        name: name.into(),
        kind: BackendKind::Llamacpp,
        url: url.into(),
        models: vec![MODEL.into()],
        max_concurrency,
        weight: 1.0,
        api_key: None,
        gpus: vec![],
    }
}

impl Harness {
    /// Starts one mock per config (named b0, b1, … with `max_concurrency` = its slots).
    pub async fn start(mocks: Vec<MockConfig>, tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut servers = Vec::new();
        let mut config = base_config();
        for (i, m) in mocks.into_iter().enumerate() {
            let slots = m.slots as u32;
            let s = MockServer::start(m).await.unwrap();
            config
                .backends
                .push(backend(&format!("b{i}"), &s.url(), slots));
            servers.push(Some(s));
        }
        tweak(&mut config);
        Self::start_with(config, servers, dir).await
    }

    pub async fn start_with(
        config: GatewayConfig,
        mocks: Vec<Option<MockServer>>,
        dir: tempfile::TempDir,
    ) -> Self {
        Self::start_with_visibility(config, mocks, dir, Duration::from_secs(30)).await
    }

    pub async fn start_with_visibility(
        config: GatewayConfig,
        mocks: Vec<Option<MockServer>>,
        dir: tempfile::TempDir,
        visibility: Duration,
    ) -> Self {
        Self::start_full(config, mocks, dir, visibility, None).await
    }

    pub async fn start_full(
        config: GatewayConfig,
        mocks: Vec<Option<MockServer>>,
        dir: tempfile::TempDir,
        visibility: Duration,
        hints: Option<Arc<dyn GpuHints>>,
    ) -> Self {
        let addrs = mocks
            .iter()
            .map(|m| {
                m.as_ref()
                    .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |m| m.addr())
            })
            .collect();
        let settings = config.validate().unwrap();
        let mut bc = BrokerConfig::new(dir.path().join("broker"));
        bc.visibility_timeout = visibility;
        bc.max_attempts = settings.jobs.max_attempts;
        bc.fsync = FsyncPolicy::Never;
        let broker = Arc::new(EmbeddedBroker::open(bc).unwrap());
        let store = Arc::new(
            SqliteJobStore::open(&dir.path().join("jobs.db"))
                .await
                .unwrap(),
        );
        let (gw, workers) = Gateway::new(settings, broker, store, hints).unwrap();
        let mut supervisor = Supervisor::new(Shutdown::new())
            .with_backoff(Duration::from_millis(20), Duration::from_millis(200));
        for w in workers {
            supervisor.spawn(w);
        }
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = router(gw.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Self {
            gw,
            url,
            mocks,
            addrs,
            http,
            dir,
            supervisor: Some(supervisor),
            server,
        }
    }

    pub fn mock(&self, i: usize) -> &MockServer {
        self.mocks[i].as_ref().unwrap()
    }

    /// Stops mock `i` (connections dropped, port released).
    pub async fn kill(&mut self, i: usize) {
        if let Some(m) = self.mocks[i].take() {
            m.stop().await;
        }
    }

    /// Restarts mock `i` on its old port.
    pub async fn revive(&mut self, i: usize, config: MockConfig) {
        let listener = TcpListener::bind(self.addrs[i]).await.unwrap();
        self.mocks[i] = Some(MockServer::start_on(listener, config).unwrap());
    }

    pub fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.url)).json(&body)
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.post("/v1/chat/completions", body)
            .send()
            .await
            .unwrap()
    }

    /// The `/api/v1/gateway/backends` entry of backend `name`.
    pub async fn backend_status(&self, name: &str) -> Value {
        let all = self.get_json("/api/v1/gateway/backends").await;
        all["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .cloned()
            .unwrap()
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.supervisor.take() {
            s.shutdown(Duration::from_secs(5)).await;
        }
        self.server.abort();
    }
}

pub fn chat_body() -> Value {
    json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 4 })
}

/// Waits (real time, bounded) until `cond` resolves true.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (real time, bounded) until `f` yields a value.
pub async fn eventually_some<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
