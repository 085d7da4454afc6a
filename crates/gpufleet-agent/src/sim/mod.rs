//! The simulated fleet: one process serving many simulated agents on loopback ports, each
//! answering the real agent's routes (same [`crate::server`] router, same wire types, same health
//! rules) with scripted failures. Used by tests, benchmarks and `gpufleet demo`.
//!
//! Hosts are `sim-host-00000`, `sim-host-00001`, …; host `i` listens on `127.0.0.1:<base_port + i>`
//! (or a kernel-chosen port without `base_port`), so each host is a distinct address a health
//! worker pools connections to, and an unreachable host refuses connections for real. Why ports on
//! 127.0.0.1 rather than 127.0.0.x addresses: both cost one descriptor per host, and ports work on
//! every loopback set-up; pick a `base_port` below the ephemeral range (32768) for large fleets.
//!
//! Descriptors: the fleet needs one per host plus one per open connection. [`run_sim_fleet`]
//! raises the soft `RLIMIT_NOFILE` to the hard limit; with the hard limit at 20,000 (this
//! project's machines), 10,000 hosts leave ~9,700 connections, and [`listen`] closes a random idle
//! connection to admit a new one rather than running out.
//! `gpufleet bench fleet` therefore splits large fleets over several processes (at most 5,000
//! hosts each by default, contiguous ports), so no process evicts.
//!
//! Measured with `examples/sim_load.rs` (release build, fleet in a child process with 2 tokio
//! workers, load generator of 64 tasks holding one keep-alive connection per host, both on the same
//! 2-core machine while other builds ran, so the load generator, not the fleet, was the limit):
//!
//! | hosts | GET /health per s | fleet CPU (cores) | per fleet core | reconnects | errors |
//! |---|---|---|---|---|---|
//! | 1,000 | 44,575 | 0.50 | 89,000 | 0 | 0 |
//! | 5,000 | 21,670 | 0.60 | 36,000 | 0 | 0 |
//! | 10,000 | 12,762 | 0.72 | 17,800 | 12,430 evictions in 20 s (5 %) | 69 of 255,483 (eviction races) |
//!
//! A health worker should retry a check once on a connection error before calling a host down:
//! a request can meet a keep-alive connection in the instant the fleet evicts it.
//!
//! # Layout
//! - [`scenario`]: [`Scenario`] and the seeded mix [`scenario::assign`].
//! - [`host`]: [`host::SimHostState`], one host's metrics, report and restart counts.
//! - [`listen`]: the per-host listener task, keep-alive and descriptor budget.
//! - [`register`]: [`register_hosts`] into a server's registry.

pub mod host;
pub mod listen;
pub mod register;
pub mod scenario;

pub use register::register_hosts;
pub use scenario::Scenario;

use anyhow::{bail, Context};
use gpufleet_runtime::Shutdown;
use host::SimHostState;
use listen::{host_loop, Ctl, FleetStats};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Agent token of simulated hosts unless configured otherwise.
pub const DEFAULT_SIM_TOKEN: &str = "gpufleet-sim-agent-token";

/// How to build a simulated fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct SimFleetConfig {
    /// Number of hosts.
    pub hosts: usize,
    /// Host `i` listens on `127.0.0.1:<base_port + i>`; `None`: kernel-chosen ports.
    pub base_port: Option<u16>,
    /// Host names are this prefix plus a 5-digit index. Default `sim-host-`.
    pub name_prefix: String,
    /// GPUs per host. Default 8.
    pub gpus_per_host: u32,
    /// Fractions of hosts per scenario, e.g. `[(Unreachable, 0.01), (Slow{ms:500}, 0.02)]`; the
    /// rest is healthy.
    pub mix: Vec<(Scenario, f64)>,
    /// Explicit scenarios by host index, applied after `mix`.
    pub assign: Vec<(usize, Scenario)>,
    /// Seed of the mix and of the made-up values. Default 1.
    pub seed: u64,
    /// Agent token of every host (for `/metrics/host` and restarts); `None` disables restarts.
    /// Default [`DEFAULT_SIM_TOKEN`].
    pub token: Option<String>,
    /// Idle time before a keep-alive connection is closed. Default 30 s.
    pub idle_timeout: Duration,
    /// Most connections open at once (all hosts); default `None`: what the open-file limit leaves
    /// after the listeners and a reserve of 256.
    pub max_connections: Option<usize>,
}

impl Default for SimFleetConfig {
    fn default() -> Self {
        Self {
            hosts: 10,
            base_port: None,
            name_prefix: "sim-host-".into(),
            gpus_per_host: 8,
            mix: Vec::new(),
            assign: Vec::new(),
            seed: 1,
            token: Some(DEFAULT_SIM_TOKEN.into()),
            idle_timeout: Duration::from_secs(30),
            max_connections: None,
        }
    }
}

/// One simulated host as the outside sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimHost {
    /// Host name.
    pub name: String,
    /// `http://127.0.0.1:<port>`; the agent routes are under it (`/health`).
    pub agent_url: String,
    /// Its scenario when this was read.
    pub scenario: Scenario,
}

/// A run-time change that failed.
#[derive(Debug, Error)]
pub enum SimError {
    /// No host has that name.
    #[error("no simulated host named {0:?}")]
    UnknownHost(String),
    /// The host's listener task is gone (the fleet stopped).
    #[error("simulated host {0} is not running")]
    Stopped(String),
    /// Its port could not be bound again.
    #[error("simulated host {name} could not listen on {addr} again: {source}")]
    Rebind {
        /// Host.
        name: String,
        /// Address.
        addr: SocketAddr,
        /// Bind error.
        source: std::io::Error,
    },
}

struct HostEntry {
    state: Arc<SimHostState>,
    addr: SocketAddr,
    ctl: mpsc::Sender<Ctl>,
    /// Serialises scenario switches of one host.
    switch: tokio::sync::Mutex<()>,
}

/// A running simulated fleet. Dropping it stops every host (listeners closed, connections dropped).
pub struct SimFleetHandle {
    hosts: Vec<HostEntry>,
    by_name: HashMap<String, usize>,
    stats: Arc<FleetStats>,
    stop: Shutdown,
    tasks: JoinSet<()>,
    nofile: u64,
}

impl std::fmt::Debug for SimFleetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFleetHandle").field("hosts", &self.hosts.len()).field("nofile", &self.nofile).finish()
    }
}

/// Starts `cfg.hosts` simulated hosts in this runtime; they stop when `shutdown` resolves or the
/// handle is stopped or dropped.
pub async fn run_sim_fleet(cfg: SimFleetConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<SimFleetHandle> {
    if cfg.hosts == 0 {
        bail!("a simulated fleet needs at least one host");
    }
    if let Some(base) = cfg.base_port {
        if usize::from(base) + cfg.hosts - 1 > usize::from(u16::MAX) || base == 0 {
            bail!("base port {base} + {} hosts goes past port 65535", cfg.hosts);
        }
    }
    let hosts = cfg.hosts as u64;
    // Listeners, one connection per host, and a reserve.
    let nofile = listen::raise_nofile(2 * hosts + listen::FD_RESERVE);
    if hosts + listen::FD_RESERVE > nofile {
        bail!("{} hosts need at least {} open files but the limit is {nofile} (raise the hard limit: ulimit -Hn)", cfg.hosts, hosts + listen::FD_RESERVE);
    }
    let fd_budget = usize::try_from(nofile - hosts - listen::FD_RESERVE).unwrap_or(usize::MAX);
    let budget = cfg.max_connections.map_or(fd_budget, |m| m.clamp(1, fd_budget));
    let stats = Arc::new(FleetStats::new(budget, cfg.idle_timeout));
    let scenarios = scenario::assign(cfg.hosts, &cfg.mix, &cfg.assign, cfg.seed);
    let stop = Shutdown::new();
    let mut tasks = JoinSet::new();
    let mut entries = Vec::with_capacity(cfg.hosts);
    let mut by_name = HashMap::with_capacity(cfg.hosts);
    for (i, scenario) in scenarios.into_iter().enumerate() {
        let port = cfg.base_port.map_or(0, |b| b + i as u16);
        let listener = TcpListener::bind(("127.0.0.1", port)).await.with_context(|| format!("simulated host {i}: binding 127.0.0.1:{port}"))?;
        let addr = listener.local_addr()?;
        let name = format!("{}{i:05}", cfg.name_prefix);
        let seed = cfg.seed.wrapping_mul(0x100_0000_01B3) ^ i as u64;
        let reachable = scenario.is_reachable();
        let state = Arc::new(SimHostState::new(name.clone(), seed, cfg.gpus_per_host, scenario, cfg.token.as_deref()));
        let (tx, rx) = mpsc::channel(4);
        tasks.spawn(host_loop(state.clone(), addr, reachable.then_some(listener), rx, stop.clone(), stats.clone()));
        by_name.insert(name, i);
        entries.push(HostEntry { state, addr, ctl: tx, switch: tokio::sync::Mutex::new(()) });
    }
    let watcher = stop.clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = shutdown => watcher.trigger(),
            _ = watcher.wait() => {}
        }
    });
    Ok(SimFleetHandle { hosts: entries, by_name, stats, stop, tasks, nofile })
}

impl SimFleetHandle {
    /// Every host with its current scenario, in index order.
    pub fn hosts(&self) -> Vec<SimHost> {
        self.hosts
            .iter()
            .map(|h| SimHost { name: h.state.name().to_owned(), agent_url: format!("http://{}", h.addr), scenario: h.state.scenario() })
            .collect()
    }

    /// One host by name.
    pub fn host(&self, name: &str) -> Option<SimHost> {
        let h = &self.hosts[*self.by_name.get(name)?];
        Some(SimHost { name: name.to_owned(), agent_url: format!("http://{}", h.addr), scenario: h.state.scenario() })
    }

    /// Switches a host's scenario. Returns once it is in effect: after `Unreachable` the port
    /// refuses connections; after any other the port accepts again.
    pub async fn set_scenario(&self, name: &str, scenario: Scenario) -> Result<(), SimError> {
        let i = *self.by_name.get(name).ok_or_else(|| SimError::UnknownHost(name.to_owned()))?;
        let h = &self.hosts[i];
        let _one_at_a_time = h.switch.lock().await;
        let (ack, done) = oneshot::channel();
        h.ctl.send(Ctl::Reachable(scenario.is_reachable(), ack)).await.map_err(|_| SimError::Stopped(name.to_owned()))?;
        done.await
            .map_err(|_| SimError::Stopped(name.to_owned()))?
            .map_err(|source| SimError::Rebind { name: name.to_owned(), addr: h.addr, source })?;
        h.state.set_scenario(scenario);
        Ok(())
    }

    /// Restarts done through `POST /containers/{id}/restart` on `host`, per container name.
    pub fn restarts(&self, host: &str) -> Option<BTreeMap<String, u64>> {
        self.by_name.get(host).map(|i| self.hosts[*i].state.restarts())
    }

    /// Requests answered by all hosts.
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.stats.open_conns.load(Ordering::Relaxed)
    }

    /// Connections dropped on accept because the descriptor budget was spent and none was idle.
    pub fn shed_connections(&self) -> u64 {
        self.stats.shed_conns.load(Ordering::Relaxed)
    }

    /// Idle connections closed to make room for new ones (descriptor budget).
    pub fn evicted_connections(&self) -> u64 {
        self.stats.evicted_conns.load(Ordering::Relaxed)
    }

    /// The soft open-file limit in force (after raising it).
    pub fn nofile_limit(&self) -> u64 {
        self.nofile
    }

    /// Stops every host and waits for the listeners to close.
    pub async fn stop(mut self) {
        self.stop.trigger();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for SimFleetHandle {
    fn drop(&mut self) {
        self.stop.trigger();
        self.tasks.abort_all();
    }
}
