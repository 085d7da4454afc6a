//! `gpufleet demo`: `up` on a fresh data directory (retention off, since the bundled capture is
//! from 2025), a replay of the bundled real DCGM capture through the streamer, a wait until every
//! sample is stored, then the URLs and commands to look at.

use crate::cli::{ServerArg, StreamArgs};
use crate::config::Settings;
use crate::{client, server, stream};
use anyhow::{bail, Context, Result};
use gpufleet_runtime::Shutdown;
use std::time::{Duration, Instant};

const DEMO_CSV: &[u8] = include_bytes!("../assets/demo_dcgm.csv");

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
    settings.store.raw_retention = None;
    settings.store.rollup_1m_retention = None;
    settings.store.rollup_1h_retention = None;
    let srv = server::start(&settings, shutdown.clone()).await.context("starting the demo server (is the port taken? try --listen 127.0.0.1:0)")?;
    let base = format!("{}://{}", srv.scheme, srv.addr);
    println!("gpufleet demo: server on {base}, data in {}", settings.data_dir.display());
    let api_key = match (&srv.bootstrap_key, std::env::var("GPUFLEET_ADMIN_KEY")) {
        (Some(k), _) => Some(k.clone()),
        (None, Ok(k)) if !k.is_empty() => Some(k),
        _ => None,
    };
    if let Some(k) = &srv.bootstrap_key {
        println!("admin key of this demo (shown once): {k}\n  export GPUFLEET_API_KEY={k}");
    }
    let server_arg = ServerArg { server: base.clone(), api_key, ca_cert: None };
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
        json: false,
    };
    let summary = stream::run(&args, shutdown.clone()).await?;
    stream::print_summary(&summary);
    wait_stored(&api, summary.samples).await?;
    let gpus = api.get_json("/api/v1/gpus").await?;
    let first = gpus.pointer("/gpus/0/uuid").and_then(|v| v.as_str()).unwrap_or("GPU-…").to_owned();
    let host = gpus.pointer("/gpus/0/host").and_then(|v| v.as_str()).unwrap_or("host").to_owned();
    println!(
        "\nstored {} samples for {} GPUs. Look at:\n  {base}/api/v1/gpus\n  {base}/api/v1/hosts\n  {base}/api/v1/hosts/{host}/gpus\n  {base}/api/v1/gpus/{first}/telemetry?metric=DCGM_FI_DEV_GPU_UTIL\n  {base}/api/v1/telemetry/aggregate?metric=DCGM_FI_DEV_GPU_UTIL&agg=avg\n  {base}/api/v1/broker/topics\n  {base}/metrics\n  {base}/stats\n  {base}/api/v1/openapi.json\n(with the key: curl -H \"Authorization: Bearer $GPUFLEET_API_KEY\" …)\nor from a shell:\n  gpufleet gpus --server {base}\n  gpufleet telemetry {first} --metric DCGM_FI_DEV_GPU_UTIL --server {base}",
        summary.samples,
        gpus["count"]
    );
    if exit_after_replay {
        srv.stop();
    } else {
        println!("\nCtrl-C to stop.");
    }
    srv.wait().await
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
