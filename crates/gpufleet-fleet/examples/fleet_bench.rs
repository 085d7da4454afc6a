//! One health cycle over N simulated hosts through the real worker code path
//! ([`gpufleet_fleet::bench::run_cycle_bench`]), with the simulated fleet in a child process (this
//! example re-executed with `--serve`) so that each process has its own descriptors and the
//! fleet's CPU is not counted as the checker's.
//!
//! ```text
//! cargo run --release -p gpufleet-fleet --example fleet_bench -- --hosts 10000 \
//!     [--base-port 20000] [--concurrency 256] [--warm 3] [--keepalive 4096] [--threads 2] [--sim-threads 2]
//! ```
//!
//! Without `--base-port` the kernel picks each simulated host's port (no clash with other
//! services on the machine); the child prints the agent URLs after `READY`.
//!
//! Prints one JSON object: the [`CycleBenchReport`](gpufleet_fleet::bench::CycleBenchReport) plus
//! `checker_rss_mb` (peak RSS of this process) and the fleet's request count.

use gpufleet_agent::{run_sim_fleet, SimFleetConfig};
use gpufleet_fleet::bench::{run_cycle_bench, BenchOptions};
use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let hosts: usize = arg(&args, "--hosts", 10_000);
    let base_port: u16 = arg(&args, "--base-port", 0);
    let sim_threads: usize = arg(&args, "--sim-threads", 2);
    if args.iter().any(|a| a == "--serve") {
        return serve(hosts, base_port, sim_threads);
    }
    let opts = BenchOptions {
        concurrency: arg(&args, "--concurrency", 256),
        warm_cycles: arg(&args, "--warm", 3),
        keepalive: arg(&args, "--keepalive", 4096),
        ..BenchOptions::default()
    };
    let threads: usize = arg(&args, "--threads", 2);

    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", "--hosts", &hosts.to_string(), "--base-port", &base_port.to_string(), "--sim-threads", &sim_threads.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = std::io::BufReader::new(child.stdout.take().ok_or_else(|| anyhow::anyhow!("no child stdout"))?);
    let mut ready = String::new();
    out.read_line(&mut ready)?;
    anyhow::ensure!(ready.starts_with("READY"), "simulated fleet did not start: {ready:?}");

    let mut urls = String::new();
    out.read_line(&mut urls)?;
    let urls: Vec<String> = serde_json::from_str(&urls)?;
    let list: Vec<(String, String)> = urls.into_iter().enumerate().map(|(i, u)| (format!("sim-host-{i:05}"), u)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).thread_name("checker").enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let (fleet_cpu0, self_cpu0) = (cpu_s(child.id()), cpu_s(std::process::id()));
    let report = rt.block_on(run_cycle_bench(&list, &opts, dir.path()));
    let (fleet_cpu, self_cpu) = (cpu_s(child.id()) - fleet_cpu0, cpu_s(std::process::id()) - self_cpu0);
    // Closing stdin stops the child; it prints its counters.
    drop(child.stdin.take());
    let mut rest = String::new();
    out.read_to_string(&mut rest)?;
    child.wait()?;
    let report = report?;
    let mut json = serde_json::to_value(&report)?;
    json["checker_rss_mb"] = serde_json::json!(peak_rss_mb());
    json["concurrency"] = serde_json::json!(opts.concurrency);
    json["keepalive"] = serde_json::json!(opts.keepalive);
    // CPU over registration and every cycle: the checker's (this process) and the fleet's.
    json["checker_cpu_s"] = serde_json::json!(self_cpu);
    json["fleet_cpu_s"] = serde_json::json!(fleet_cpu);
    json["fleet"] = serde_json::json!(rest.trim());
    println!("{json}");
    std::io::stdout().flush()?;
    Ok(())
}

/// User + system CPU seconds of a process so far (`/proc/<pid>/stat`, 100 ticks per second).
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn serve(hosts: usize, base_port: u16, threads: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).thread_name("sim").enable_all().build()?;
    rt.block_on(async {
        let cfg = SimFleetConfig { hosts, base_port: (base_port > 0).then_some(base_port), ..SimFleetConfig::default() };
        let fleet = run_sim_fleet(cfg, std::future::pending()).await?;
        println!("READY hosts={hosts}");
        let urls: Vec<String> = fleet.hosts().into_iter().map(|h| h.agent_url).collect();
        println!("{}", serde_json::to_string(&urls)?);
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        println!("requests={} open_connections={} shed_connections={}", fleet.requests(), fleet.open_connections(), fleet.shed_connections());
        fleet.stop().await;
        anyhow::Ok(())
    })
}
