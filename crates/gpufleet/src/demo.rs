//! `gpufleet demo`: `up` on a fresh data directory (retention off, since the bundled capture is
//! from 2025) with three simulated llama.cpp servers behind the inference gateway, a replay of the
//! bundled real DCGM capture through the streamer, a wait until every sample is stored, one chat
//! completion through the gateway, a simulated fleet of 12 hosts (one unreachable, one degraded,
//! one with a filling disk) registered and checked by the health worker, then the URLs and
//! commands to look at.

use crate::cli::{ServerArg, StreamArgs};
use crate::config::Settings;
use crate::{client, server, stream};
use anyhow::{bail, Context, Result};
use gpufleet_runtime::Shutdown;
use std::time::{Duration, Instant};

const DEMO_CSV: &[u8] = include_bytes!("../assets/demo_dcgm.csv");
const DEMO_MODEL: &str = "qwen3-8b";

/// Runs the demo.
pub async fn run(mut settings: Settings, data_dir_given: bool, exit_after_replay: bool, shutdown: Shutdown) -> Result<()> {
    let _tmp_guard;
    if !data_dir_given {
        let dir = std::env::temp_dir().join(format!("gpufleet-demo-{}", std::process::id()));
        settings.broker.data_dir = dir.join("broker");
        settings.store.data_dir = dir.join("store");
        settings.data_dir = dir.clone();
        _tmp_guard = RemoveOnDrop(dir);
    }
    // Three simulated llama.cpp GPUs behind the gateway, unless the config names real backends.
    let mut mocks = Vec::new();
    if settings.gateway.backends.is_empty() {
        let mut gc = gpufleet_gateway::GatewayConfig::default();
        for (i, (slots, tps)) in [(4usize, 120.0), (2, 60.0), (4, 200.0)].into_iter().enumerate() {
            let cfg = gpufleet_sim::MockConfig { slots, tokens_per_s: tps, latency_ms: 30, ..gpufleet_sim::MockConfig::new(DEMO_MODEL) };
            let m = gpufleet_sim::MockServer::start(cfg).await.context("starting a simulated model server")?;
            gc.backends.push(gpufleet_gateway::BackendConfig {
                name: format!("sim-gpu-{i}"),
                kind: gpufleet_gateway::BackendKind::Llamacpp,
                url: m.url(),
                models: vec![DEMO_MODEL.into()],
                max_concurrency: slots as u32,
                weight: 1.0,
                api_key: None,
                gpus: vec![],
            });
            mocks.push(m);
        }
        settings.gateway = gc.validate().map_err(|e| anyhow::anyhow!("demo gateway config: {e}"))?;
    }
    settings.store.raw_retention = None;
    settings.store.rollup_1m_retention = None;
    settings.store.rollup_1h_retention = None;
    // Check the simulated fleet every 5 s so its states show quickly.
    if settings.fleet.health_interval > Duration::from_secs(5) {
        settings.fleet.health_interval = Duration::from_secs(5);
        settings.fleet.health_timeout = settings.fleet.health_timeout.min(Duration::from_secs(2));
    }
    let srv = server::start(&settings, shutdown.clone()).await.context("starting the demo server (is the port taken? try --listen 127.0.0.1:0)")?;
    let addr = srv.addr.context("the demo server has no listener")?;
    let base = format!("{}://{addr}", srv.scheme);
    println!("gpufleet demo: server on {base}, data in {}", settings.data_dir.display());
    let api_key = match (&srv.bootstrap_key, std::env::var("GPUFLEET_ADMIN_KEY")) {
        (Some(k), _) => Some(k.clone()),
        (None, Ok(k)) if !k.is_empty() => Some(k),
        _ => None,
    };
    if let Some(k) = &srv.bootstrap_key {
        println!("admin key of this demo (shown once): {k}\n  export GPUFLEET_API_KEY={k}");
    }
    let server_arg = ServerArg { server: base.clone(), api_key: api_key.clone(), ca_cert: None };
    let api = client::Client::new(&server_arg)?;

    let csv = settings.data_dir.join("demo_dcgm.csv");
    std::fs::write(&csv, DEMO_CSV).with_context(|| format!("writing {}", csv.display()))?;
    let args = StreamArgs {
        files: vec![csv],
        server: server_arg.clone(),
        rate: 0,
        workers: 2,
        loop_forever: false,
        batch: 500,
        host: None,
        broker: None,
        key_prefix: "gpufleet".into(),
        topic: "telemetry".into(),
        json: false,
    };
    let summary = stream::run(&args, shutdown.clone()).await?;
    stream::print_summary(&summary);
    wait_stored(&api, summary.samples).await?;
    let gpus = api.get_json("/api/v1/gpus").await?;
    let chat = serde_json::json!({ "model": DEMO_MODEL, "messages": [{ "role": "user", "content": "Say hello" }], "max_tokens": 12 });
    let answer = api.send(reqwest::Method::POST, "/v1/chat/completions", Some(chat)).await.context("a chat completion through the gateway")?;
    println!(
        "gateway: {} simulated backends for model {DEMO_MODEL}; a chat completion answered: {:?}",
        mocks.len(),
        answer.pointer("/choices/0/message/content").and_then(|v| v.as_str()).unwrap_or("")
    );
    // A simulated fleet: 12 agents on loopback, registered in the registry.
    let sd = shutdown.clone();
    let fleet_cfg = gpufleet_agent::SimFleetConfig {
        hosts: 12,
        assign: vec![
            (3, gpufleet_agent::Scenario::Unreachable),
            (7, gpufleet_agent::Scenario::Degraded),
            (9, "disk-filling:2".parse().map_err(|e| anyhow::anyhow!("{e}"))?),
        ],
        ..gpufleet_agent::SimFleetConfig::default()
    };
    let sim = gpufleet_agent::run_sim_fleet(fleet_cfg, async move { sd.wait().await }).await.context("starting the simulated fleet")?;
    if let Some(k) = &api_key {
        gpufleet_agent::register_hosts(&base, k, &sim.hosts()).await.context("registering the simulated hosts")?;
        println!("fleet: 12 simulated hosts registered (one unreachable, one degraded, one disk filling); health checks every {:?}", settings.fleet.health_interval);
    }
    let first = gpus.pointer("/gpus/0/uuid").and_then(|v| v.as_str()).unwrap_or("GPU-…").to_owned();
    let host = gpus.pointer("/gpus/0/host").and_then(|v| v.as_str()).unwrap_or("host").to_owned();
    println!(
        "\nstored {} samples for {} GPUs. Look at:\n  {base}/api/v1/gpus\n  {base}/api/v1/hosts\n  {base}/api/v1/hosts/{host}/gpus\n  {base}/api/v1/gpus/{first}/telemetry?metric=DCGM_FI_DEV_GPU_UTIL\n  {base}/api/v1/telemetry/aggregate?metric=DCGM_FI_DEV_GPU_UTIL&agg=avg\n  {base}/api/v1/broker/topics\n  {base}/metrics\n  {base}/stats\n  {base}/api/v1/openapi.json\n  {base}/api/v1/gateway/backends\n  {base}/api/v1/fleet/summary\n  {base}/api/v1/alerts\n  {base}/api/v1/hosts/sim-host-00000/score\n  POST {base}/v1/chat/completions  (OpenAI-compatible; model {DEMO_MODEL})\n(with the key: curl -H \"Authorization: Bearer $GPUFLEET_API_KEY\" …)\nor from a shell:\n  gpufleet gpus --server {base}\n  gpufleet telemetry {first} --metric DCGM_FI_DEV_GPU_UTIL --server {base}",
        summary.samples,
        gpus["count"]
    );
    if exit_after_replay {
        srv.stop();
    } else {
        println!("\nCtrl-C to stop.");
    }
    let result = srv.wait().await;
    sim.stop().await;
    for m in mocks {
        m.stop().await;
    }
    result
}

/// Waits until the store holds `expected` samples and the broker has nothing pending.
async fn wait_stored(api: &client::Client, expected: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = api.get_json("/stats").await?;
        let stored = stats.pointer("/store/samples").and_then(|v| v.as_u64()).unwrap_or(0);
        if stored >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {stored} of {expected} samples were stored after 60 s; see /stats");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
