//! `gpufleet bench gateway`: what the OpenAI-compatible gateway adds to a request, measured as the
//! peer script `bench/peers/gateway/run.sh` measures nginx: three mock "GPU hosts" (one nginx,
//! one worker, three loopback ports answering a fixed chat.completion), an nginx `least_conn`
//! reverse proxy over them, and `gpufleet up` children (API keys on, then off) routing to them;
//! `wrk` loads each target and the report gives req/s, p50/p99 and p99 added over the direct
//! backend. Every process started here is stopped on every exit path (see [`procs::ChildProc`]).

mod procs;
mod wrk;

use anyhow::{Context, Result};
use procs::{free_port, start_nginx, wait_ok, ChildProc};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use wrk::WrkResult;

/// Which `gpufleet up` variants to load.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// API keys required (the default configuration).
    On,
    /// `server.auth = false` (loopback only).
    Off,
    /// Both, one child after the other.
    Both,
}

/// Flags of `bench gateway`.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayBenchArgs {
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// Seconds of warm-up before each measured run.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Connection counts, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![16u32, 64])]
    pub connections: Vec<u32>,
    /// gpufleet with API keys on, off, or both.
    #[arg(long, value_enum, default_value = "both")]
    pub auth: AuthMode,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Target RSS of the gateway at 64 connections, MB.
const RSS_TARGET_MB: f64 = 50.0;
/// Longest a gpufleet child may take to answer its first proxied completion.
const START_LIMIT: Duration = Duration::from_secs(60);
const PATH: &str = "/v1/chat/completions";

/// One measured row.
struct Row {
    target: &'static str,
    conns: u32,
    r: WrkResult,
}

/// Runs the benchmark (blocking work on a blocking thread).
pub async fn run(args: &GatewayBenchArgs) -> Result<()> {
    let args = args.clone();
    tokio::task::spawn_blocking(move || run_blocking(&args))
        .await
        .context("benchmark thread")?
}

fn run_blocking(args: &GatewayBenchArgs) -> Result<()> {
    anyhow::ensure!(
        !args.connections.is_empty() && args.seconds > 0,
        "need at least one connection count and --seconds > 0"
    );
    procs::ensure_tools()?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let key = gpufleet_auth::ApiKey::generate().expose_secret().to_owned();
    let script = dir.path().join("post.lua");
    std::fs::write(&script, wrk::lua_script(&key)).context("writing post.lua")?;
    let backends = [free_port()?, free_port()?, free_port()?];
    let proxy_port = free_port()?;
    let mut mock = start_nginx(
        &dir.path().join("mock"),
        &procs::mock_conf(&dir.path().join("mock"), &backends),
        "the mock nginx",
    )?;
    let mut proxy = start_nginx(
        &dir.path().join("proxy"),
        &procs::proxy_conf(&dir.path().join("proxy"), proxy_port, &backends),
        "the proxy nginx",
    )?;
    for p in backends {
        wait_ok(
            &mut mock,
            p,
            PATH,
            &key,
            wrk::CHAT_BODY,
            Duration::from_secs(10),
        )?;
    }
    wait_ok(
        &mut proxy,
        proxy_port,
        PATH,
        &key,
        wrk::CHAT_BODY,
        Duration::from_secs(10),
    )?;

    let mut rows = Vec::new();
    let load = |rows: &mut Vec<Row>, target: &'static str, port: u16| -> Result<()> {
        for &c in &args.connections {
            let url = format!("http://127.0.0.1:{port}{PATH}");
            let r = wrk::run(&script, &url, c, args.warmup, args.seconds)
                .with_context(|| format!("{target} at {c} connections"))?;
            rows.push(Row {
                target,
                conns: c,
                r,
            });
        }
        Ok(())
    };
    load(&mut rows, "direct", backends[0])?;
    load(&mut rows, "nginx", proxy_port)?;
    let mut rss = Map::new();
    let variants: &[(bool, &'static str)] = match args.auth {
        AuthMode::On => &[(true, "gpufleet_auth_on")],
        AuthMode::Off => &[(false, "gpufleet_auth_off")],
        AuthMode::Both => &[(true, "gpufleet_auth_on"), (false, "gpufleet_auth_off")],
    };
    for &(auth, name) in variants {
        let (mut child, port) = start_gpufleet(dir.path(), name, &backends, &key, auth)?;
        load(&mut rows, name, port)?;
        child.ensure_running()?;
        rss.insert(name.to_owned(), procs::vm_hwm_mb(child.pid())?.into());
        drop(child);
    }
    mock.ensure_running()?;
    proxy.ensure_running()?;
    drop(proxy);
    drop(mock);
    report(args, &rows, &rss)
}

/// Starts `gpufleet up` (this executable) with the three backends, waits until a completion is
/// routed through it; returns the child and its port.
fn start_gpufleet(
    work: &Path,
    name: &str,
    backends: &[u16],
    key: &str,
    auth: bool,
) -> Result<(ChildProc, u16)> {
    let home = work.join(name);
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let config = home.join("gpufleet.toml");
    std::fs::write(&config, procs::gpufleet_conf(backends))
        .context("writing the gpufleet config")?;
    let port = free_port()?;
    let log =
        std::fs::File::create(home.join("gpufleet.log")).context("creating the gpufleet log")?;
    let mut cmd = Command::new(std::env::current_exe().context("finding this executable")?);
    cmd.arg("--config")
        .arg(&config)
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(home.join("data"))
        .current_dir(&home);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("GPUFLEET_")) {
        cmd.env_remove(k);
    }
    cmd.env("GPUFLEET_ADMIN_KEY", key)
        .env("GPUFLEET_LOG_LEVEL", "warn");
    if !auth {
        // Loopback only; the server refuses this on any other address.
        cmd.env("GPUFLEET_SERVER_AUTH", "false");
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    let mut child = ChildProc::spawn_graceful(&mut cmd, format!("gpufleet up ({name})"))?;
    wait_ok(&mut child, port, PATH, key, wrk::CHAT_BODY, START_LIMIT).with_context(|| {
        format!(
            "gpufleet ({name}) did not route a completion; log in {}",
            home.join("gpufleet.log").display()
        )
    })?;
    Ok((child, port))
}

fn find<'a>(rows: &'a [Row], target: &str, conns: u32) -> Option<&'a WrkResult> {
    rows.iter()
        .find(|r| r.target == target && r.conns == conns)
        .map(|r| &r.r)
}

fn added_p99(rows: &[Row], target: &str, conns: u32) -> Option<f64> {
    Some(find(rows, target, conns)?.p99_ms - find(rows, "direct", conns)?.p99_ms)
}

fn report(args: &GatewayBenchArgs, rows: &[Row], rss: &Map<String, Value>) -> Result<()> {
    let gf = if rows.iter().any(|r| r.target == "gpufleet_auth_on") {
        "gpufleet_auth_on"
    } else {
        "gpufleet_auth_off"
    };
    let rss_mb = rss.values().filter_map(Value::as_f64).fold(0.0, f64::max);
    let mut targets = Map::new();
    for row in rows {
        let entry = targets.entry(row.target).or_insert_with(|| json!({}));
        entry[row.conns.to_string()] = json!({
            "rps": row.r.rps, "p50_ms": row.r.p50_ms, "p99_ms": row.r.p99_ms,
            "added_p99_ms": if row.target == "direct" { Value::Null } else { added_p99(rows, row.target, row.conns).into() },
            "non_2xx": row.r.non_2xx, "socket_errors": row.r.socket_errors,
        });
    }
    let mut auth_added = Map::new();
    let mut checks = Vec::new();
    for &c in &args.connections {
        if let (Some(on), Some(off)) = (
            find(rows, "gpufleet_auth_on", c),
            find(rows, "gpufleet_auth_off", c),
        ) {
            auth_added.insert(c.to_string(), (on.p99_ms - off.p99_ms).into());
        }
        if let (Some(g), Some(n)) = (find(rows, gf, c), find(rows, "nginx", c)) {
            checks.push((
                format!(
                    "{gf} req/s >= nginx req/s at {c} conns ({:.0} vs {:.0})",
                    g.rps, n.rps
                ),
                g.rps >= n.rps,
            ));
        }
        if let (Some(g), Some(n)) = (added_p99(rows, gf, c), added_p99(rows, "nginx", c)) {
            checks.push((
                format!("{gf} added p99 <= nginx added p99 at {c} conns ({g:.3} vs {n:.3} ms)"),
                g <= n,
            ));
        }
    }
    if args.connections.contains(&64) {
        checks.push((
            format!("gpufleet peak RSS <= {RSS_TARGET_MB} MB after 64 conns ({rss_mb:.1} MB)"),
            rss_mb <= RSS_TARGET_MB,
        ));
    }
    if args.json {
        let out = json!({
            "seconds": args.seconds, "warmup_seconds": args.warmup, "targets": targets,
            "gpufleet_rss_mb": rss_mb, "gpufleet_rss_mb_by_variant": rss,
            "auth_on_minus_off_p99_ms": auth_added,
            "checks": checks.iter().map(|(what, met)| json!({"target": what, "met": met})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("gateway overhead ({} s per run after {} s warm-up, wrk -t1, mock backends = nginx return 200):", args.seconds, args.warmup);
    println!(
        "  {:<18} {:>5} {:>10} {:>9} {:>9} {:>12} {:>8} {:>8}",
        "target", "conns", "req/s", "p50 ms", "p99 ms", "added p99", "non-2xx", "sockerr"
    );
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by_key(|r| r.conns);
    for r in sorted {
        let added = if r.target == "direct" {
            "-".to_owned()
        } else {
            added_p99(rows, r.target, r.conns).map_or("-".to_owned(), |a| format!("{a:.3}"))
        };
        println!(
            "  {:<18} {:>5} {:>10.0} {:>9.3} {:>9.3} {:>12} {:>8} {:>8}",
            r.target,
            r.conns,
            r.r.rps,
            r.r.p50_ms,
            r.r.p99_ms,
            added,
            r.r.non_2xx,
            r.r.socket_errors
        );
    }
    for (name, v) in rss {
        println!(
            "  {name} peak RSS (VmHWM): {:.1} MB",
            v.as_f64().unwrap_or(0.0)
        );
    }
    for (c, v) in &auth_added {
        println!(
            "  auth on − off p99 at {c} conns: {:.3} ms",
            v.as_f64().unwrap_or(0.0)
        );
    }
    for (what, met) in &checks {
        println!(
            "  target: {what} -> {}",
            if *met { "met" } else { "MISSED" }
        );
    }
    Ok(())
}
