//! `gpufleet bench gateway`: what the OpenAI-compatible gateway adds to a request, measured as the
//! peer script `bench/peers/gateway/run.sh` measures nginx: three mock "GPU hosts" (one nginx,
//! one worker, three loopback ports answering a fixed chat.completion), an nginx `least_conn`
//! reverse proxy over them, and `gpufleet up` children (API keys on, then off) routing to them;
//! `wrk` loads each target and the report gives req/s, p50/p99 and p99 added over the direct
//! backend. `--peer litellm` adds the LiteLLM proxy (one worker) as the peer script runs it
//! ([`litellm`]); `--soak SECONDS` instead loads gpufleet alone for a long run and follows its
//! memory ([`soak`]). Every process started here is stopped on every exit path (see
//! [`procs::ChildProc`]).

mod cpu;
mod litellm;
mod procs;
mod report;
mod rounds;
mod soak;
mod wrk;

use anyhow::{Context, Result};
use procs::{free_port, start_nginx, wait_ok, ChildProc};
use report::{report, Row};
use serde_json::{json, Map};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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
    /// Rounds: every target (direct, nginx, the gpufleet variants) is loaded once per round,
    /// the order rotated each round; the report gives each figure's median over the rounds and
    /// in how many rounds each target held on its own. LiteLLM is loaded once, after them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,
    /// Connection counts, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![16u32, 64])]
    pub connections: Vec<u32>,
    /// gpufleet with API keys on, off, or both.
    #[arg(long, value_enum, default_value = "both")]
    pub auth: AuthMode,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also measure a peer gateway at the same connection counts (`litellm`: the LiteLLM proxy
    /// with one worker, as `bench/peers/gateway/run.sh` starts it).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub peer: Vec<Peer>,
    /// The virtual environment LiteLLM runs from; created with `pip install 'litellm[proxy]'`
    /// when neither it nor the peer script's `/tmp/gpufleet-peers/venv` has LiteLLM. Default:
    /// `litellm-venv` in the cargo target directory this executable was built in (else
    /// `./target/litellm-venv`).
    #[arg(long, value_name = "DIR")]
    pub litellm_venv: Option<PathBuf>,
    /// Instead of the comparison: load gpufleet (API keys as `--auth`; `both` = on) at 64
    /// connections for SECONDS and sample its RSS every 10 s (first/last/max, slope).
    #[arg(long, value_name = "SECONDS")]
    pub soak: Option<u64>,
    /// The gpufleet executable started as the gateway (default: this one), to compare builds
    /// with the same harness.
    #[arg(long, value_name = "PATH")]
    pub gpufleet_bin: Option<PathBuf>,
    /// Worker threads of the gpufleet gateway (`TOKIO_WORKER_THREADS` of the child; default: one
    /// per core). `1` gives it the same one-thread budget as the one nginx worker.
    #[arg(long, value_name = "N")]
    pub gpufleet_threads: Option<u16>,
    /// Inference lane threads of the gpufleet gateway (`[server] lane_threads`; default: the
    /// server's, half the cores).
    #[arg(long, value_name = "N")]
    pub lane_threads: Option<u16>,
}

/// A peer gateway to measure beside gpufleet.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The LiteLLM proxy (Python), one uvicorn worker.
    Litellm,
}

/// Longest a gpufleet child may take to answer its first proxied completion.
const START_LIMIT: Duration = Duration::from_secs(60);
const PATH: &str = "/v1/chat/completions";

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
    anyhow::ensure!(
        args.soak != Some(0),
        "--soak needs a positive number of seconds"
    );
    procs::ensure_tools()?;
    let dir = tempfile::tempdir().context("temp dir")?;
    // LiteLLM is installed first: a failure is reported beside the other figures, not fatal.
    let litellm_exe = args.peer.contains(&Peer::Litellm).then(|| {
        let venv = args
            .litellm_venv
            .clone()
            .unwrap_or_else(litellm::default_venv);
        litellm::ensure_installed(&venv, &dir.path().join("pip.log")).map_err(|e| format!("{e:#}"))
    });
    let key = gpufleet_auth::ApiKey::generate().expose_secret().to_owned();
    let script = dir.path().join("post.lua");
    std::fs::write(&script, wrk::lua_script(&key)).context("writing post.lua")?;
    let backends = [free_port()?, free_port()?, free_port()?];
    let mut mock = start_nginx(
        &dir.path().join("mock"),
        &procs::mock_conf(&dir.path().join("mock"), &backends),
        "the mock nginx",
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
    if let Some(seconds) = args.soak {
        let auth = args.auth != AuthMode::Off;
        let name = if auth {
            "gpufleet_auth_on"
        } else {
            "gpufleet_auth_off"
        };
        let (mut child, port) = start_gpufleet(args, dir.path(), name, &backends, &key, auth)?;
        let url = format!("http://127.0.0.1:{port}{PATH}");
        let r = soak::run(&mut child, &script, &url, args.warmup, seconds)?;
        mock.ensure_running()?;
        return r.print(args.json);
    }
    let proxy_port = free_port()?;
    let mut proxy = start_nginx(
        &dir.path().join("proxy"),
        &procs::proxy_conf(&dir.path().join("proxy"), proxy_port, &backends),
        "the proxy nginx",
    )?;
    wait_ok(
        &mut proxy,
        proxy_port,
        PATH,
        &key,
        wrk::CHAT_BODY,
        Duration::from_secs(10),
    )?;

    let mut rows = Vec::new();
    let target = |name, port, pid| Target {
        name,
        port,
        pid,
        script: &script,
    };
    let variants: &[(bool, &'static str)] = match args.auth {
        AuthMode::On => &[(true, "gpufleet_auth_on")],
        AuthMode::Off => &[(false, "gpufleet_auth_off")],
        AuthMode::Both => &[(true, "gpufleet_auth_on"), (false, "gpufleet_auth_off")],
    };
    // Every gpufleet variant runs from the start (an unloaded one uses no CPU), so rounds can
    // rotate over all targets.
    let mut children = Vec::new();
    for &(auth, name) in variants {
        let (child, port) = start_gpufleet(args, dir.path(), name, &backends, &key, auth)?;
        children.push((name, child, port));
    }
    let mut targets = vec![
        target("direct", backends[0], mock.pid()),
        target("nginx", proxy_port, proxy.pid()),
    ];
    for (name, child, port) in &children {
        targets.push(target(name, *port, child.pid()));
    }
    for round in 0..args.rounds {
        for k in 0..targets.len() {
            let t = &targets[(k + round as usize) % targets.len()];
            load(args, &mut rows, t, round)?;
        }
    }
    let mut rss = Map::new();
    for (name, mut child, _) in children {
        child.ensure_running()?;
        rss.insert(name.to_owned(), procs::vm_hwm_mb(child.pid())?.into());
    }
    let mut peers = Map::new();
    if let Some(exe) = litellm_exe {
        let measured = exe.and_then(|exe| {
            measure_litellm(args, &exe, dir.path(), &backends, &mut rows)
                .map_err(|e| format!("{e:#}"))
        });
        peers.insert(
            "litellm".to_owned(),
            match measured {
                Ok(rss_mb) => json!({"measured": true, "rss_mb": rss_mb}),
                Err(e) => {
                    eprintln!("LiteLLM not measured: {e}");
                    json!({"measured": false, "error": e})
                }
            },
        );
    }
    mock.ensure_running()?;
    proxy.ensure_running()?;
    drop(proxy);
    drop(mock);
    report(args, &rows, &rss, &peers)
}

/// A server under load: its name in the report, port, process (for its CPU) and wrk script.
struct Target<'a> {
    name: &'static str,
    port: u16,
    pid: u32,
    script: &'a Path,
}

/// Measures `t` at every connection count, one row each.
fn load(args: &GatewayBenchArgs, rows: &mut Vec<Row>, t: &Target<'_>, round: u32) -> Result<()> {
    let url = format!("http://127.0.0.1:{}{PATH}", t.port);
    for &c in &args.connections {
        let r = wrk::run(t.script, &url, c, args.warmup, args.seconds, Some(t.pid))
            .with_context(|| format!("{} at {c} connections", t.name))?;
        rows.push(Row {
            target: t.name,
            conns: c,
            round,
            r,
        });
    }
    Ok(())
}

/// Starts LiteLLM, loads it like the others (its own script: LiteLLM's master key), stops it;
/// its peak RSS in MB.
fn measure_litellm(
    args: &GatewayBenchArgs,
    exe: &Path,
    work: &Path,
    backends: &[u16],
    rows: &mut Vec<Row>,
) -> Result<f64> {
    let key = litellm::master_key();
    let dir = work.join("litellm");
    let port = free_port()?;
    let mut child = litellm::start(exe, &dir, backends, port, &key, wrk::CHAT_BODY)?;
    let script = dir.join("post.lua");
    std::fs::write(&script, wrk::lua_script(&key)).context("writing LiteLLM's post.lua")?;
    let t = Target {
        name: "litellm",
        port,
        pid: child.pid(),
        script: &script,
    };
    load(args, rows, &t, 0)?;
    child.ensure_running()?;
    procs::vm_hwm_mb(child.pid())
}

/// Starts `gpufleet up` (this executable) with the three backends, waits until a completion is
/// routed through it; returns the child and its port.
fn start_gpufleet(
    args: &GatewayBenchArgs,
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
    let exe = match &args.gpufleet_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    let mut cmd = Command::new(exe);
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
    match args.gpufleet_threads {
        Some(n) => cmd.env("TOKIO_WORKER_THREADS", n.max(1).to_string()),
        None => cmd.env_remove("TOKIO_WORKER_THREADS"),
    };
    if let Some(n) = args.lane_threads {
        cmd.env("GPUFLEET_SERVER_LANE_THREADS", n.to_string());
    }
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
