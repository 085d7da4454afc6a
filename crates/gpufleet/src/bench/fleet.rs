//! `gpufleet bench fleet --hosts N`: one full health cycle over N simulated hosts on loopback,
//! through the real health-worker code path (`gpufleet_fleet::bench::run_cycle_bench`: stale-first
//! listing, concurrent checks on the shared keep-alive client, classification, batched history
//! writes), beside the tuned Python asyncio checker of `../shared/bench/peers/fleet-health`
//! (aiohttp, 256 concurrent, keep-alive; the same code as the peers script's `sem_cycle`) against
//! the same simulated fleet in the same run.
//!
//! The simulated fleet runs in child processes (`gpufleet sim fleet --hosts N --base-port P`, at
//! most `--shard-hosts` hosts each: [`shards`]), so the checker and the agents compete for the two
//! cores as they would on one machine. Then a real `gpufleet server --roles api,fleet` watches the
//! same fleet for the server-memory figure, without and with 30 days of history ([`server_rss`]).

mod server_rss;
mod shards;

use super::proc::on_path;
use anyhow::{bail, Context, Result};
use gpufleet_fleet::bench::{run_cycle_bench, BenchOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Flags of `bench fleet`.
#[derive(clap::Args, Debug, Clone)]
pub struct FleetBenchArgs {
    /// Simulated hosts.
    #[arg(long, default_value_t = 10_000)]
    pub hosts: usize,
    /// First loopback port of the simulated fleet (host i listens on base + i). Keep the range
    /// below the ephemeral ports (32768 on Linux), where outgoing connections would collide.
    #[arg(long, default_value_t = 15_000)]
    pub base_port: u16,
    /// Checks in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Idle keep-alive connections the checker keeps (`[fleet] agent_keepalive`, default 10000),
    /// in the cycles and in the measured server alike; agents beyond it get a new connection per
    /// check.
    #[arg(long, default_value_t = gpufleet_fleet::DEFAULT_AGENT_KEEPALIVE)]
    pub keepalive: usize,
    /// Warm cycles measured after the first.
    #[arg(long, default_value_t = 3)]
    pub cycles: usize,
    /// Most simulated hosts per `sim fleet` process (each holds a listener and up to one
    /// connection per host, within the open-file limit).
    #[arg(long, default_value_t = 5_000)]
    pub shard_hosts: usize,
    /// Skip the Python asyncio baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Skip the server-memory measurement (`server_rss_mb`).
    #[arg(long)]
    pub no_server_rss: bool,
    /// Days of health history prefilled for the server-memory measurement.
    #[arg(long, default_value_t = 30)]
    pub history_days: u32,
    /// Spacing of the prefilled history (e.g. 10m, 1h); the server checks every 30 s by default,
    /// which for 30 days would be 864 M rows at 10,000 hosts.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub history_every: Duration,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The tuned asyncio checker of the peers script (its `sem_cycle`), over contiguous ports.
const BASELINE_PY: &str = r#"
import asyncio, json, statistics, sys, time, aiohttp
base, n, cycles = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
URLS = [f"http://127.0.0.1:{p}/health" for p in range(base, base + n)]
TO = aiohttp.ClientTimeout(total=2.0)
async def check(s, url):
    try:
        async with s.get(url, timeout=TO) as r:
            body = await r.json()
            return r.status == 200 and body.get("status") in ("ok", "warn", "critical")
    except Exception:
        return False
async def sem_cycle(s, limit=256):
    sem = asyncio.Semaphore(limit)
    async def one(u):
        async with sem: return await check(s, u)
    return sum(await asyncio.gather(*(one(u) for u in URLS)))
async def main():
    s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False))
    ts, oks = [], []
    for _ in range(cycles + 1):
        t = time.perf_counter(); ok = await sem_cycle(s); ts.append(time.perf_counter() - t); oks.append(ok)
    await s.close()
    warm = ts[1:] or ts
    med = statistics.median(warm)
    print(json.dumps({"cycle_s": med, "checks_per_s": n / med, "cold_cycle_s": ts[0], "answered": min(oks)}))
asyncio.run(main())
"#;

/// Runs the benchmark and prints its figures.
pub async fn run(args: &FleetBenchArgs) -> Result<()> {
    if args.hosts == 0 || args.hosts > 20_000 {
        bail!("--hosts must be 1..=20000");
    }
    if usize::from(args.base_port) + args.hosts > 65_000 {
        bail!("--base-port {} + --hosts {} runs past port 65000", args.base_port, args.hosts);
    }
    let exe = std::env::current_exe().context("locating the gpufleet binary")?;
    // The bench process holds a connection per kept-alive agent: lift its own soft limit.
    gpufleet_runtime::limits::raise_nofile(args.hosts as u64 + 2048);
    let mut sims = shards::Shards::start(&exe, args.hosts, args.base_port, args.shard_hosts).await?;
    eprintln!("{} simulated hosts on 127.0.0.1:{}.. in {} sim fleet processes", args.hosts, args.base_port, sims.count());
    let dir = tempfile::tempdir()?;
    let opts = BenchOptions { concurrency: args.concurrency, timeout: Duration::from_secs(5), warm_cycles: args.cycles, keepalive: args.keepalive };
    eprintln!("gpufleet health cycles ({} warm)…", args.cycles);
    let ours = run_cycle_bench(&sims.hosts, &opts, dir.path()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let baseline = if args.no_baseline { None } else { baseline(args).await.map_err(|e| eprintln!("baseline skipped: {e:#}")).ok() };
    sims.ensure_running()?;
    let server = if args.no_server_rss {
        None
    } else {
        let token = gpufleet_agent::sim::DEFAULT_SIM_TOKEN;
        Some(server_rss::measure(&exe, &sims.hosts, args.history_days, args.history_every, token, args.keepalive).await?)
    };
    sims.stop().await;

    let base_rate = baseline.as_ref().and_then(|b| b["checks_per_s"].as_f64());
    let ratio = base_rate.map(|b| ours.checks_per_s / b);
    if args.json {
        let v = serde_json::json!({
            "hosts": ours.hosts,
            "cycle_s": ours.cycle_s,
            "checks_per_s": ours.checks_per_s,
            "cold_cycle_s": ours.cold_cycle_s,
            "answered": ours.answered,
            "baseline_checks_per_s": base_rate,
            "ratio_vs_baseline": ratio,
            "baseline": baseline,
            "requests": ours.requests,
            "store_s": ours.store_s,
            "warm_cycles_s": ours.warm_cycles_s,
            "sim_processes": args.hosts.div_ceil(args.shard_hosts.max(1)),
            "keepalive": args.keepalive,
            "server_rss_mb": server.as_ref().map(|s| s.with_history.vm_hwm_mb),
            "server_rss": server,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("fleet health cycle over {} simulated hosts ({} concurrent checks, {} kept-alive connections)", ours.hosts, args.concurrency, args.keepalive);
        println!("  gpufleet      {:>8.3} s/cycle  {:>9.0} checks/s  (cold cycle {:.3} s; answered {})", ours.cycle_s, ours.checks_per_s, ours.cold_cycle_s, ours.answered);
        match (&baseline, ratio) {
            (Some(b), Some(r)) => println!(
                "  asyncio tuned {:>8.3} s/cycle  {:>9.0} checks/s  → ratio {r:.2} (target >= 2.5, cycle <= 1 s)",
                b["cycle_s"].as_f64().unwrap_or(0.0),
                b["checks_per_s"].as_f64().unwrap_or(0.0)
            ),
            _ => println!("  asyncio baseline: not measured"),
        }
        match &server {
            Some(s) => {
                for (what, r) in [("no history", &s.no_history), ("with history", &s.with_history)] {
                    println!(
                        "  server RSS    {what:<12}  VmHWM {:>6.1} MB  VmRSS {:>6.1} MB  ({} history rows, fleet.db {:.0} MB, {} health cycles, {} metrics fetches)",
                        r.vm_hwm_mb, r.vm_rss_mb, r.history_rows, r.fleet_db_mb, r.health_cycles, r.metrics_fetches
                    );
                }
                println!(
                    "  history prefilled: {} days, one check per host every {:.0} s ({} rows in {:.1} s); target <= 200 MB",
                    s.history_days, s.history_every_s, s.prefill.history_rows, s.prefill.seconds
                );
            }
            None => println!("  server RSS: not measured"),
        }
    }
    Ok(())
}

/// Runs the asyncio checker in a venv with aiohttp (created under target/ when missing).
async fn baseline(args: &FleetBenchArgs) -> Result<serde_json::Value> {
    let venv = PathBuf::from("target/peers-venv");
    let python = ensure_aiohttp(&venv)?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("checker.py");
    std::fs::write(&script, BASELINE_PY)?;
    eprintln!("asyncio baseline ({} warm cycles)…", args.cycles);
    let run_args = [args.base_port.to_string(), args.hosts.to_string(), args.cycles.to_string()];
    let out = tokio::task::spawn_blocking(move || Command::new(&python).arg(&script).args(run_args).output())
        .await?
        .context("running the asyncio checker")?;
    if !out.status.success() {
        bail!("asyncio checker failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("asyncio checker output")
}

fn ensure_aiohttp(venv: &Path) -> Result<PathBuf> {
    let python = venv.join("bin/python");
    if !python.is_file() {
        if !on_path("python3") {
            bail!("python3 is not on PATH");
        }
        let st = Command::new("python3").args(["-m", "venv"]).arg(venv).status()?;
        if !st.success() {
            bail!("python3 -m venv {} failed", venv.display());
        }
    }
    let has = Command::new(&python).args(["-c", "import aiohttp"]).stderr(Stdio::null()).status()?.success();
    if !has {
        let st = Command::new(venv.join("bin/pip")).args(["install", "--quiet", "aiohttp"]).status()?;
        if !st.success() {
            bail!("pip install aiohttp failed");
        }
    }
    Ok(python)
}
