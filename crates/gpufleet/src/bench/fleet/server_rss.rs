//! `server_rss_mb` of `bench fleet`: the resident memory of a real `gpufleet server --roles
//! api,fleet` child process watching the simulated fleet, twice — once with only the hosts
//! registered, once after days of health history were written into the same fleet database —
//! so the figure shows whether memory grows with history.
//!
//! Each run: the server starts on a fresh port with the bench's config file (health and metrics
//! cycles every [`CYCLE_INTERVAL`], the simulated agents' token, the bench's `--keepalive` as
//! `agent_keepalive`, otherwise defaults), an admin key in
//! `GPUFLEET_ADMIN_KEY`, every other inherited `GPUFLEET_*` removed), and
//! `GET /api/v1/fleet/workers/status` is polled (bounded deadline) until the health worker has
//! run at least two full cycles (`checks_performed ≥ 2 · hosts`) and the metrics worker has
//! fetched every host once; then `VmHWM` and `VmRSS` are read from `/proc/<pid>/status` and the
//! server is stopped with SIGTERM. Between the runs [`prefill_history`] writes the history
//! (hosts × days × 86,400 s / spacing rows) with bulk SQL.

use super::super::proc::{dir_bytes, free_port, kb_to_mb, ChildProc, POLL};
use anyhow::{bail, Context, Result};
use gpufleet_fleet::bench::{prefill_history, register_hosts, PrefillReport};
use gpufleet_fleet::SqliteFleetStore;
use serde::Serialize;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Health and metrics interval of the measured server: longer than the 5 s check timeout (as
/// the config requires); the default 30 s / 60 s would make the wait for two cycles take a
/// minute, and memory per cycle does not depend on the interval.
const CYCLE_INTERVAL: &str = "6s";
/// Longest wait for the server's cycles.
const CYCLES_DEADLINE: Duration = Duration::from_secs(120);

/// Memory of one server run.
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct RssRun {
    /// Peak resident set (`VmHWM`), MB (10^6 bytes).
    pub(super) vm_hwm_mb: f64,
    /// Resident set when read (`VmRSS`), MB.
    pub(super) vm_rss_mb: f64,
    /// Rows in the health history when the server started.
    pub(super) history_rows: u64,
    /// Size of the fleet database files (`fleet.db*`), MB.
    pub(super) fleet_db_mb: f64,
    /// Health cycles and checks the server had done when memory was read.
    pub(super) health_cycles: u64,
    /// Health checks performed.
    pub(super) health_checks: u64,
    /// Host-metrics fetches performed.
    pub(super) metrics_fetches: u64,
    /// Seconds from start until the cycles were done.
    pub(super) wait_s: f64,
}

/// Both runs and what was prefilled between them.
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct ServerRss {
    /// Hosts registered.
    pub(super) hosts: usize,
    /// Only the hosts registered.
    pub(super) no_history: RssRun,
    /// After the prefill.
    pub(super) with_history: RssRun,
    /// Days of history prefilled.
    pub(super) history_days: u32,
    /// Spacing of the prefilled checks, seconds.
    pub(super) history_every_s: f64,
    /// What the prefill wrote.
    pub(super) prefill: PrefillReport,
}

/// Runs both measurements against the simulated fleet `hosts` (`(name, agent_url)`).
pub(super) async fn measure(exe: &Path, hosts: &[(String, String)], days: u32, every: Duration, token: &str, keepalive: usize) -> Result<ServerRss> {
    let dir = tempfile::Builder::new().prefix("gpufleet-bench-fleet-").tempdir().context("creating a work directory")?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let db = data.join("fleet.db");
    let config = dir.path().join("gpufleet.toml");
    std::fs::write(
        &config,
        format!(
            "[fleet]\nhealth_interval = \"{CYCLE_INTERVAL}\"\nmetrics_interval = \"{CYCLE_INTERVAL}\"\nagent_token = \"{token}\"\nagent_keepalive = {keepalive}\n"
        ),
    )?;
    eprintln!("server RSS: registering {} hosts in {} …", hosts.len(), db.display());
    {
        let store = SqliteFleetStore::open(&db).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        register_hosts(&store, hosts).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        store.close().await;
    }
    // One admin key for both runs: the first run stores it, the second finds it.
    let key = gpufleet_auth::ApiKey::generate().expose_secret().to_owned();
    let no_history = run_server(exe, &config, &data, hosts.len(), &key).await.context("server run without history")?;
    eprintln!("server RSS: prefilling {days} days of history every {every:?} for {} hosts …", hosts.len());
    let prefill = {
        let store = SqliteFleetStore::open(&db).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let r = prefill_history(&store, days, every).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        store.close().await;
        r
    };
    eprintln!("server RSS: {} history rows written in {:.1} s", prefill.history_rows, prefill.seconds);
    let with_history = run_server(exe, &config, &data, hosts.len(), &key).await.context("server run with history")?;
    Ok(ServerRss { hosts: hosts.len(), no_history, with_history, history_days: days, history_every_s: every.as_secs_f64(), prefill })
}

async fn run_server(exe: &Path, config: &Path, data: &Path, hosts: usize, key: &str) -> Result<RssRun> {
    let history_rows = history_rows(&data.join("fleet.db")).await?;
    let fleet_db_mb = db_bytes(data)? as f64 / 1e6;
    let port = free_port()?;
    let mut cmd = Command::new(exe);
    cmd.args(["server", "--roles", "api,fleet", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(data).arg("--config").arg(config);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("GPUFLEET_")) {
        cmd.env_remove(k);
    }
    cmd.env("GPUFLEET_ADMIN_KEY", key).env("GPUFLEET_LOG_LEVEL", "warn").stdout(Stdio::null()).stderr(Stdio::inherit());
    let mut server = ChildProc::spawn_graceful(&mut cmd, "gpufleet server --roles api,fleet")?;
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{port}/api/v1/fleet/workers/status");
    let client = reqwest::Client::new();
    let deadline = started + CYCLES_DEADLINE;
    let (health, metrics) = loop {
        server.ensure_running()?;
        if let Some((health, metrics)) = status(&client, &url, key).await {
            let cycles = health["cycles"].as_u64().unwrap_or(0);
            let checks = health["checks_performed"].as_u64().unwrap_or(0);
            let fetches = metrics["checks_performed"].as_u64().unwrap_or(0);
            if cycles >= 2 && checks >= 2 * hosts as u64 && fetches >= hosts as u64 {
                break (health, metrics);
            }
        }
        if Instant::now() >= deadline {
            bail!("the server did not run two health cycles and one metrics cycle over {hosts} hosts within {CYCLES_DEADLINE:?}");
        }
        tokio::time::sleep(POLL * 10).await;
    };
    let wait_s = started.elapsed().as_secs_f64();
    let (hwm_kb, rss_kb) = vm_kb(server.pid())?;
    server.terminate(Duration::from_secs(30), |_| {}).await?;
    let run = RssRun {
        vm_hwm_mb: kb_to_mb(hwm_kb),
        vm_rss_mb: kb_to_mb(rss_kb),
        history_rows,
        fleet_db_mb,
        health_cycles: health["cycles"].as_u64().unwrap_or(0),
        health_checks: health["checks_performed"].as_u64().unwrap_or(0),
        metrics_fetches: metrics["checks_performed"].as_u64().unwrap_or(0),
        wait_s,
    };
    eprintln!(
        "server RSS: {} history rows → VmHWM {:.1} MB, VmRSS {:.1} MB after {} health cycles ({:.1} s)",
        run.history_rows, run.vm_hwm_mb, run.vm_rss_mb, run.health_cycles, run.wait_s
    );
    Ok(run)
}

/// `(fleet.health, fleet.metrics)` of the workers status, when the server answers.
async fn status(client: &reqwest::Client, url: &str, key: &str) -> Option<(serde_json::Value, serde_json::Value)> {
    let resp = client.get(url).bearer_auth(key).timeout(Duration::from_secs(5)).send().await.ok()?;
    let v: serde_json::Value = resp.error_for_status().ok()?.json().await.ok()?;
    let workers = v["workers"].as_array()?;
    let find = |name: &str| workers.iter().find(|w| w["name"] == name).cloned();
    Some((find("fleet.health")?, find("fleet.metrics")?))
}

async fn history_rows(db: &Path) -> Result<u64> {
    let store = SqliteFleetStore::open(db).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let n = gpufleet_fleet::bench::history_rows(&store).await.map_err(|e| anyhow::anyhow!("{e}"));
    store.close().await;
    n
}

/// Bytes of `fleet.db` and its `-wal`/`-shm` files.
fn db_bytes(data: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(data)? {
        let entry = entry?;
        // SQLite removes `-wal`/`-shm` when the last connection closes: one may vanish between
        // the listing and the size.
        if entry.file_name().to_string_lossy().starts_with("fleet.db") {
            match dir_bytes(&entry.path()) {
                Ok(n) => total += n,
                Err(_) if !entry.path().exists() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(total)
}

/// `(VmHWM, VmRSS)` of a live process, kB.
fn vm_kb(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Option<u64> { text.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok() };
    Ok((field("VmHWM:").context("no VmHWM")?, field("VmRSS:").context("no VmRSS")?))
}
