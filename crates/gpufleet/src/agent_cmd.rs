//! `gpufleet agent` (the per-host agent) and `gpufleet sim fleet` (many simulated agents on
//! loopback): flags and the `[agent]` section → [`gpufleet_agent`], plus the environment this
//! crate is the only one to read (host name, `$XDG_RUNTIME_DIR` for the rootless Podman socket).

use anyhow::{bail, Context, Result};
use clap::Args;
use gpufleet_agent::{AgentConfig, Scenario, SimFleetConfig};
use gpufleet_runtime::Shutdown;
use std::path::PathBuf;

/// Flags of `gpufleet agent` (override the `[agent]` section).
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Listen address (default 127.0.0.1:9101).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Server to push GPU samples to, e.g. https://fleet:8443.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// API key for pushes (ingest permission).
    #[arg(long, env = "GPUFLEET_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Token the server must present for /metrics/host and container restarts (>= 16 chars).
    #[arg(long, env = "GPUFLEET_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Host name to report (default: the kernel's).
    #[arg(long)]
    pub host_name: Option<String>,
    /// Docker/Podman API socket (default: detected).
    #[arg(long, value_name = "PATH")]
    pub docker_socket: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback listen address (a private network or a TLS proxy in front).
    #[arg(long)]
    pub insecure_http: bool,
}

/// Runs the agent until shutdown.
pub async fn agent(mut cfg: AgentConfig, args: &AgentArgs, shutdown: Shutdown) -> Result<()> {
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(s) = &args.server {
        cfg.server_url = Some(s.clone());
    }
    if args.api_key.is_some() {
        cfg.api_key = args.api_key.clone();
    }
    if args.token.is_some() {
        cfg.token = args.token.clone();
    }
    if let Some(h) = &args.host_name {
        cfg.host_name = h.clone();
    }
    if cfg.host_name.is_empty() {
        cfg.host_name = std::env::var("HOSTNAME").unwrap_or_default();
    }
    if let Some(d) = &args.docker_socket {
        cfg.docker_socket = Some(d.clone());
    } else if cfg.docker_socket.is_none() {
        let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
        cfg.docker_socket = gpufleet_agent::config::docker_socket_candidates(xdg.as_deref()).into_iter().find(|p| p.exists());
    }
    // The agent serves plain HTTP: off loopback only when the operator says the network is safe.
    crate::serve::check_plain_http(cfg.listen, false, args.insecure_http)?;
    cfg.validate().map_err(|e| anyhow::anyhow!("[agent] {e}"))?;
    println!("gpufleet agent listening on http://{} (host {})", cfg.listen, cfg.effective_host_name());
    gpufleet_agent::run(cfg, async move { shutdown.wait().await }).await
}

/// Flags of `gpufleet sim fleet`.
#[derive(Args, Debug, Clone)]
pub struct SimFleetArgs {
    /// Number of simulated hosts.
    #[arg(long, default_value_t = 10)]
    pub hosts: usize,
    /// Host i listens on 127.0.0.1:<base-port + i> (default: ports chosen by the kernel).
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Share of hosts per scenario, e.g. `--mix unreachable=0.01 --mix slow:500=0.02`
    /// (scenarios: healthy, unreachable, slow:MS, degraded, disk-filling:PCT_PER_DAY,
    /// container-flapping:MS, gpu-xid).
    #[arg(long, value_name = "SCENARIO=FRACTION")]
    pub mix: Vec<String>,
    /// Scenario of one host by index, e.g. `--assign 3=unreachable`.
    #[arg(long, value_name = "INDEX=SCENARIO")]
    pub assign: Vec<String>,
    /// Seed of the mix and the simulated values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Add the hosts to this server's registry (POST /api/v1/hosts), e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "SERVER_URL")]
    pub register: Option<String>,
    /// API key for --register.
    #[arg(long, env = "GPUFLEET_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print the hosts as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Serves the simulated fleet until shutdown.
pub async fn sim_fleet(args: &SimFleetArgs, shutdown: Shutdown) -> Result<()> {
    let mut cfg = SimFleetConfig { hosts: args.hosts, base_port: args.base_port, seed: args.seed, ..SimFleetConfig::default() };
    for m in &args.mix {
        let (s, f) = m.rsplit_once('=').with_context(|| format!("--mix {m:?}: expected SCENARIO=FRACTION"))?;
        let scenario: Scenario = s.parse().map_err(|e| anyhow::anyhow!("--mix {m:?}: {e}"))?;
        let frac: f64 = f.parse().ok().filter(|x: &f64| (0.0..=1.0).contains(x)).with_context(|| format!("--mix {m:?}: fraction must be 0..1"))?;
        cfg.mix.push((scenario, frac));
    }
    for a in &args.assign {
        let (i, s) = a.split_once('=').with_context(|| format!("--assign {a:?}: expected INDEX=SCENARIO"))?;
        let idx: usize = i.parse().with_context(|| format!("--assign {a:?}: index must be a number"))?;
        if idx >= args.hosts {
            bail!("--assign {a:?}: index must be below --hosts {}", args.hosts);
        }
        cfg.assign.push((idx, s.parse().map_err(|e| anyhow::anyhow!("--assign {a:?}: {e}"))?));
    }
    let sd = shutdown.clone();
    let fleet = gpufleet_agent::run_sim_fleet(cfg, async move { sd.wait().await }).await?;
    let hosts = fleet.hosts();
    if args.json {
        for h in &hosts {
            println!("{}", serde_json::to_string(h)?);
        }
    } else {
        println!("simulated fleet: {} hosts on 127.0.0.1 (first {}, last {})", hosts.len(), hosts.first().map_or("-", |h| h.agent_url.as_str()), hosts.last().map_or("-", |h| h.agent_url.as_str()));
    }
    if let Some(server) = &args.register {
        let key = args.api_key.as_deref().context("--register needs --api-key (or GPUFLEET_API_KEY)")?;
        gpufleet_agent::register_hosts(server, key, &hosts).await.context("registering the simulated hosts")?;
        eprintln!("registered {} hosts with {server}", hosts.len());
    }
    shutdown.wait().await;
    fleet.stop().await;
    Ok(())
}
