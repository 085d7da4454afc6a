//! Throughput of the simulated fleet: how many `GET /health` per second it serves over loopback
//! with keep-alive, measured the way the server's health worker calls it.
//!
//! ```text
//! cargo run --release -p gpufleet-agent --example sim_load -- --hosts 10000 --base-port 20000 \
//!     --workers 64 --seconds 20 [--max-requests 2000000] [--sim-threads 2]
//! ```
//!
//! The fleet runs in a child process (this example re-executed with `--serve`), so the load
//! generator's sockets do not eat the fleet's descriptors and the fleet's CPU can be read from
//! `/proc/<child>/stat` alone. Each of `--workers` client tasks sweeps its share of the hosts
//! round-robin (worker k: hosts k, k+W, k+2W, …) and keeps one HTTP/1.1 keep-alive connection per
//! host, like a pooled client; a connection the fleet closed is reopened on the next visit. The run
//! is bounded by `--seconds` and `--max-requests`. It prints requests/s, errors, reconnects, and
//! the fleet process's CPU (cores used) over the run.

use bytes::Bytes;
use gpufleet_agent::{run_sim_fleet, SimFleetConfig};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let hosts: usize = arg(&args, "--hosts", 10_000);
    let base_port: u16 = arg(&args, "--base-port", 20_000);
    if args.iter().any(|a| a == "--serve") {
        return serve(hosts, base_port, arg(&args, "--sim-threads", 2));
    }
    let workers: usize = arg(&args, "--workers", 64);
    let seconds: u64 = arg(&args, "--seconds", 20);
    let max_requests: u64 = arg(&args, "--max-requests", 5_000_000);
    let sim_threads: usize = arg(&args, "--sim-threads", 2);

    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", "--hosts", &hosts.to_string(), "--base-port", &base_port.to_string(), "--sim-threads", &sim_threads.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = std::io::BufReader::new(child.stdout.take().ok_or_else(|| anyhow::anyhow!("no child stdout"))?);
    let mut ready = String::new();
    out.read_line(&mut ready)?;
    anyhow::ensure!(ready.starts_with("READY"), "fleet did not start: {ready:?}");
    println!("fleet: {}", ready.trim());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let stats = Arc::new(Stats::default());
    let cpu0 = proc_cpu_s(child.id())?;
    let t0 = Instant::now();
    rt.block_on(async {
        let deadline = t0 + Duration::from_secs(seconds);
        let mut set = tokio::task::JoinSet::new();
        for k in 0..workers {
            let stats = stats.clone();
            let mine: Vec<u16> = (k..hosts).step_by(workers).map(|i| base_port + i as u16).collect();
            set.spawn(worker(mine, deadline, max_requests, stats));
        }
        while set.join_next().await.is_some() {}
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = proc_cpu_s(child.id())? - cpu0;
    drop(child.stdin.take()); // the child stops when its stdin closes
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    child.wait()?;
    let ok = stats.ok.load(Ordering::Relaxed);
    println!(
        "hosts={hosts} workers={workers} wall_s={wall:.1} ok={ok} errors={} connects={} req_per_s={:.0} fleet_cpu_cores={:.2} req_per_s_per_fleet_core={:.0}",
        stats.errors.load(Ordering::Relaxed),
        stats.connects.load(Ordering::Relaxed),
        ok as f64 / wall,
        cpu / wall,
        ok as f64 / cpu.max(1e-9),
    );
    print!("{rest}");
    Ok(())
}

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    errors: AtomicU64,
    connects: AtomicU64,
}

async fn connect(port: u16, stats: &Stats) -> Option<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    stats.connects.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(conn); // example code: the driver ends with the connection
    Some(send)
}

async fn worker(ports: Vec<u16>, deadline: Instant, max_requests: u64, stats: Arc<Stats>) {
    let mut pool: HashMap<u16, SendRequest<Empty<Bytes>>> = HashMap::new();
    'outer: loop {
        for &port in &ports {
            if Instant::now() >= deadline || stats.ok.load(Ordering::Relaxed) + stats.errors.load(Ordering::Relaxed) >= max_requests {
                break 'outer;
            }
            let reusable = match pool.get_mut(&port) {
                Some(s) => s.ready().await.is_ok(),
                None => false,
            };
            if !reusable {
                pool.remove(&port);
                match connect(port, &stats).await {
                    Some(s) => {
                        pool.insert(port, s);
                    }
                    None => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            let Some(send) = pool.get_mut(&port) else { continue };
            let req = hyper::Request::get("/health").header("host", format!("127.0.0.1:{port}")).body(Empty::<Bytes>::new()).unwrap();
            let ok = match send.send_request(req).await {
                Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
                Err(_) => false,
            };
            if ok {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                pool.remove(&port);
            }
        }
    }
}

/// utime + stime of a process, seconds.
fn proc_cpu_s(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok((t(11) + t(12)) / 100.0)
}

fn serve(hosts: usize, base_port: u16, threads: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).enable_all().build()?;
    rt.block_on(async {
        let cfg = SimFleetConfig { hosts, base_port: Some(base_port), ..SimFleetConfig::default() };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let fleet = run_sim_fleet(cfg, async {
            let _ = rx.await;
        })
        .await?;
        println!("READY hosts={hosts} first={} nofile={} ", fleet.hosts()[0].agent_url, fleet.nofile_limit());
        // Wait for stdin to close (the parent is done) on a blocking thread.
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        println!(
            "fleet: requests={} open_connections={} evicted_connections={} shed_connections={}",
            fleet.requests(),
            fleet.open_connections(),
            fleet.evicted_connections(),
            fleet.shed_connections()
        );
        let _ = tx.send(());
        fleet.stop().await;
        anyhow::Ok(())
    })
}
