//! One simulated host: its made-up but plausible [`HostMetrics`] (8 GPUs, three containers, a
//! llama.cpp server, two disks), shaped by its current [`Scenario`], and its answers to the agent
//! routes through [`AgentBackend`], judged by the same rules as the real agent's ([`crate::health`]).
//!
//! Values are a deterministic function of the host's seed and the time since the scenario was set;
//! nothing is random per request, so tests can predict statuses.

use super::Scenario;
use crate::health::{self, AgentInfo};
use crate::server::{AgentBackend, RestartError, TokenDigest};
use crate::wire::{ContainerState, CpuPercent, Disk, GpuDriver, GpuState, HealthReport, HostMetrics, ModelServerKind, ModelServerState, Net};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Version reported by simulated hosts.
pub const SIM_AGENT_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "-sim");

/// Containers every simulated host has: `(name, state, stopped on purpose)`.
pub const SIM_CONTAINERS: [(&str, &str, bool); 3] = [("inference", "running", false), ("node-exporter", "running", false), ("backup-job", "exited", true)];

const GIB: u64 = 1 << 30;

/// One simulated host's state.
pub struct SimHostState {
    name: String,
    seed: u64,
    gpus: u32,
    started: Instant,
    scenario: RwLock<(Scenario, Instant)>,
    restarts: Mutex<BTreeMap<String, u64>>,
    token: Option<TokenDigest>,
    requests: AtomicU64,
    /// Bumped by every change (scenario, restart) so a cached report is not served after it.
    generation: AtomicU64,
    cache: Mutex<Option<CachedReport>>,
}

/// How long a simulated host serves the same serialised `/health` answer while nothing scripted
/// changed: the sample interval it reports (`sample_interval_ms`), as the real agent answers
/// from its last sample. So a check costs HTTP handling, not report building (building and
/// serialising one report takes tens of µs; a health worker sweeping 10,000 hosts once a second
/// would otherwise rebuild every one on every request, on the same cores as the checker). A
/// scenario switch, a restart, a flapping phase or a disk status band ends it at once
/// ([`SimHostState::script_key`]); only drifting values (utilisation, rates) may be that old.
pub const REPORT_CACHE: Duration = Duration::from_millis(SAMPLE_INTERVAL_MS);

/// The sample interval simulated hosts report, ms.
const SAMPLE_INTERVAL_MS: u64 = 5_000;

/// A serialised `/health` answer, the script key it was built under and when.
struct CachedReport {
    at: Instant,
    key: ScriptKey,
    body: Bytes,
}

/// What the scripted part of a report depends on: the change generation (scenario switches,
/// restarts) and the time-driven step of the scenario (flapping phase, `/data` disk status band).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScriptKey {
    generation: u64,
    step: u64,
}

impl std::fmt::Debug for SimHostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHostState").field("name", &self.name).field("scenario", &self.scenario.read().0).finish()
    }
}

impl SimHostState {
    /// A host named `name` with `gpus` GPUs.
    pub fn new(name: String, seed: u64, gpus: u32, scenario: Scenario, token: Option<&str>) -> Self {
        let now = Instant::now();
        Self {
            name,
            seed,
            gpus,
            started: now,
            scenario: RwLock::new((scenario, now)),
            restarts: Mutex::new(BTreeMap::new()),
            token: token.map(TokenDigest::new),
            requests: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            cache: Mutex::new(None),
        }
    }

    /// Host name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current scenario.
    pub fn scenario(&self) -> Scenario {
        self.scenario.read().0.clone()
    }

    /// Switches scenario; time-based effects (disk filling, flapping) start over.
    pub fn set_scenario(&self, s: Scenario) {
        *self.scenario.write() = (s, Instant::now());
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Restarts done through the API, per container name.
    pub fn restarts(&self) -> BTreeMap<String, u64> {
        self.restarts.lock().clone()
    }

    /// Requests answered by this host's routes.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn unit(&self, salt: u64) -> f64 {
        // splitmix64: a stable pseudo-random number in [0, 1) per (host, salt).
        let mut z = self.seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }

    /// The metrics this host reports now.
    pub fn metrics(&self, time_ms: i64) -> HostMetrics {
        let (scenario, since) = self.scenario.read().clone();
        let t = self.started.elapsed().as_secs_f64();
        let in_scenario = since.elapsed();
        let wobble = |salt: u64, period: f64| (t / period + self.unit(salt) * std::f64::consts::TAU).sin();
        let busy = 30.0 + 20.0 * wobble(1, 60.0);
        let steal = 0.5 + 0.5 * self.unit(2);
        let cpu = CpuPercent { user: busy * 0.8, nice: 0.0, system: busy * 0.2 - steal.min(busy * 0.2), idle: 100.0 - busy - 1.0, iowait: 1.0, irq: 0.0, softirq: 0.0, steal };
        let mem_total = 512 * GIB;
        let mem_avail_frac = if scenario == Scenario::Degraded { 0.03 } else { 0.6 + 0.2 * self.unit(3) };
        let disks = vec![disk("/", "ext4", GIB * 1024, 35.0 + 10.0 * self.unit(5)), self.data_disk(&scenario, in_scenario)];
        let gpus = (0..self.gpus).map(|i| self.gpu(i, &scenario, t)).collect();
        HostMetrics {
            host: self.name.clone(),
            time_ms,
            cpu,
            cpu_window_ms: 5_000,
            cpus: 128,
            load: [busy * 1.28, busy * 1.2, busy * 1.1],
            mem_total_bytes: mem_total,
            mem_available_bytes: (mem_total as f64 * mem_avail_frac) as u64,
            swap_total_bytes: 8 * GIB,
            swap_used_bytes: (GIB as f64 * self.unit(6)) as u64,
            swap_cached_bytes: (GIB as f64 * 0.1 * self.unit(7)) as u64,
            oom_kills: Some(0),
            disks,
            net: vec![Net { iface: "eth0".into(), rx_bytes_per_s: 5e7 * (1.0 + wobble(8, 20.0)), tx_bytes_per_s: 2e7 * (1.0 + wobble(9, 25.0)) }],
            uptime_s: 86_400.0 * (1.0 + 30.0 * self.unit(10)) + t,
            gpu_driver: GpuDriver::Loaded { driver_version: "550.54.15".into() },
            gpus,
            containers: self.containers(&scenario, in_scenario),
            model_servers: vec![self.model_server(&scenario)],
            probe_errors: Vec::new(),
        }
    }

    /// The `/data` disk: filling from 70 % in `DiskFilling`, a fixed 40–60 % otherwise.
    fn data_disk(&self, scenario: &Scenario, in_scenario: Duration) -> Disk {
        let used_pct = match scenario {
            Scenario::DiskFilling { percent_per_day } => (70.0 + percent_per_day * in_scenario.as_secs_f64() / 86_400.0).min(100.0),
            _ => 40.0 + 20.0 * self.unit(4),
        };
        disk("/data", "xfs", GIB * 8192, used_pct)
    }

    /// The key a cached report must match: see [`ScriptKey`]. Cheap (no report is built).
    fn script_key(&self) -> ScriptKey {
        let generation = self.generation.load(Ordering::SeqCst);
        let (scenario, since) = self.scenario.read().clone();
        let step = match &scenario {
            Scenario::ContainerFlapping { period_ms } => u64::try_from(since.elapsed().as_millis() / u128::from((*period_ms).max(1))).unwrap_or(u64::MAX),
            Scenario::DiskFilling { .. } => health::disk_component(&self.data_disk(&scenario, since.elapsed())).status as u64,
            _ => 0,
        };
        ScriptKey { generation, step }
    }

    fn gpu(&self, i: u32, scenario: &Scenario, t: f64) -> GpuState {
        let salt = 100 + u64::from(i) * 10;
        let util = (60.0 + 35.0 * (t / 45.0 + self.unit(salt) * 6.0).sin()).clamp(0.0, 100.0);
        let xid = *scenario == Scenario::GpuXid && i == 3;
        let total = 80 * GIB;
        GpuState {
            index: i,
            uuid: format!("GPU-{:08x}-{:04x}-sim0-{i:04}-{:012x}", self.seed as u32, i, self.seed >> 16),
            name: "NVIDIA H100 80GB HBM3".into(),
            util_percent: Some(util),
            mem_util_percent: Some(util * 0.6),
            memory_used_bytes: Some((total as f64 * (0.3 + 0.6 * self.unit(salt + 1))) as u64),
            memory_total_bytes: Some(total),
            temperature_c: Some(35.0 + util * 0.4),
            power_w: Some(90.0 + util * 5.5),
            power_limit_w: Some(700.0),
            sm_clock_mhz: Some(1980),
            mem_clock_mhz: Some(2619),
            xid_errors: u64::from(xid),
            last_xid: xid.then_some(79),
            processes: Vec::new(),
        }
    }

    fn containers(&self, scenario: &Scenario, in_scenario: Duration) -> Vec<ContainerState> {
        let restarts = self.restarts.lock();
        SIM_CONTAINERS
            .iter()
            .map(|(name, state, on_purpose)| {
                let api_restarts = restarts.get(*name).copied().unwrap_or(0);
                let mut c = ContainerState {
                    id: container_id(&self.name, name),
                    name: (*name).to_owned(),
                    image: format!("registry.local/{name}:1"),
                    state: (*state).to_owned(),
                    health: (*state == "running").then(|| "healthy".to_owned()),
                    health_log: Vec::new(),
                    restart_count: api_restarts,
                    oom_killed: false,
                    exit_code: (!on_purpose).then_some(0).or(Some(143)),
                    stopped_on_purpose: *on_purpose,
                };
                if let (Scenario::ContainerFlapping { period_ms }, "inference") = (scenario, *name) {
                    let phase = in_scenario.as_millis() / u128::from((*period_ms).max(1));
                    c.restart_count += u64::try_from(phase / 2).unwrap_or(u64::MAX);
                    if phase.is_multiple_of(2) {
                        c.health = Some("unhealthy".into());
                        c.health_log = vec!["exit 1: curl: (7) Failed to connect to localhost port 8000".into()];
                    } else {
                        c.state = "restarting".into();
                        c.health = Some("starting".into());
                    }
                }
                c
            })
            .collect()
    }

    fn model_server(&self, scenario: &Scenario) -> ModelServerState {
        let up = *scenario != Scenario::Degraded;
        ModelServerState {
            name: "llama".into(),
            kind: ModelServerKind::Llamacpp,
            url: "http://127.0.0.1:8081".into(),
            up,
            models: if up { vec!["llama-3.1-8b-instruct".into()] } else { Vec::new() },
            slots_busy: up.then(|| (4.0 * self.unit(11)) as u32),
            slots_total: up.then_some(4),
            queued: None,
            error: (!up).then(|| "GET http://127.0.0.1:8081/health: connection refused".into()),
        }
    }

    /// The health report this host gives now.
    pub fn report(&self) -> HealthReport {
        let now = gpufleet_core::time::now_ms();
        let info = AgentInfo { version: SIM_AGENT_VERSION.to_owned(), sample_age_ms: 0, sample_interval_ms: SAMPLE_INTERVAL_MS };
        health::report(&self.metrics(now), &info, now)
    }

    async fn delay(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let slow = match &self.scenario.read().0 {
            Scenario::Slow { ms } => *ms,
            _ => 0,
        };
        if slow > 0 {
            tokio::time::sleep(Duration::from_millis(slow)).await;
        }
    }
}

fn disk(mount: &str, fs: &str, total: u64, used_pct: f64) -> Disk {
    let used = (total as f64 * used_pct / 100.0) as u64;
    Disk { mount: mount.into(), fs: fs.into(), total_bytes: total, used_bytes: used, free_bytes: total - used.min(total) }
}

/// The container id of `container` on simulated host `host` (`<host>-<container>`).
pub fn container_id(host: &str, container: &str) -> String {
    format!("{host}-{container}")
}

#[async_trait]
impl AgentBackend for SimHostState {
    async fn health(&self) -> HealthReport {
        self.delay().await;
        self.report()
    }

    async fn health_json(&self) -> Bytes {
        self.delay().await;
        let key = self.script_key();
        if let Some(c) = &*self.cache.lock() {
            if c.key == key && c.at.elapsed() < REPORT_CACHE {
                return c.body.clone();
            }
        }
        let body = Bytes::from(serde_json::to_vec(&self.report()).unwrap_or_default());
        *self.cache.lock() = Some(CachedReport { at: Instant::now(), key, body: body.clone() });
        body
    }

    async fn host_metrics(&self) -> HostMetrics {
        self.delay().await;
        self.metrics(gpufleet_core::time::now_ms())
    }

    async fn restart_container(&self, id: &str) -> Result<(), RestartError> {
        self.delay().await;
        let found = SIM_CONTAINERS.iter().find(|(name, _, _)| *name == id || container_id(&self.name, name) == id);
        let Some((name, _, on_purpose)) = found else { return Err(RestartError::NotFound(id.to_owned())) };
        if *on_purpose {
            return Err(RestartError::StoppedOnPurpose((*name).to_owned()));
        }
        *self.restarts.lock().entry((*name).to_owned()).or_insert(0) += 1;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn token(&self) -> Option<&TokenDigest> {
        self.token.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Status;

    fn host(s: Scenario) -> SimHostState {
        SimHostState::new("sim-1".into(), 42, 8, s, None)
    }

    #[test]
    fn scenarios_give_their_status() {
        assert_eq!(host(Scenario::Healthy).report().status, Status::Ok);
        assert_eq!(host(Scenario::Slow { ms: 5 }).report().status, Status::Ok);
        assert_eq!(host(Scenario::Degraded).report().status, Status::Warn);
        assert_eq!(host(Scenario::ContainerFlapping { period_ms: 60_000 }).report().status, Status::Warn);
        let xid = host(Scenario::GpuXid).report();
        assert_eq!(xid.status, Status::Critical);
        assert!(xid.components.iter().any(|c| c.name == "gpu:3" && c.status == Status::Critical));
        // An infinite rate is full at once (the 70 % start plus anything is capped at 100 %).
        let h = host(Scenario::DiskFilling { percent_per_day: f64::INFINITY });
        assert_eq!(h.report().status, Status::Critical);
        let h = host(Scenario::DiskFilling { percent_per_day: 0.0 });
        assert_eq!(h.report().status, Status::Ok);
    }

    #[tokio::test]
    async fn restarts_are_counted_per_container_and_on_purpose_is_refused() {
        let h = host(Scenario::Healthy);
        h.restart_container("inference").await.unwrap();
        h.restart_container(&container_id("sim-1", "inference")).await.unwrap();
        assert!(matches!(h.restart_container("backup-job").await, Err(RestartError::StoppedOnPurpose(_))));
        assert!(matches!(h.restart_container("nope").await, Err(RestartError::NotFound(_))));
        assert_eq!(h.restarts().get("inference"), Some(&2));
        assert_eq!(h.metrics(0).containers[0].restart_count, 2);
        assert_eq!(h.requests(), 4);
    }

    #[tokio::test]
    async fn cached_health_is_dropped_on_scenario_switch() {
        let h = host(Scenario::Healthy);
        let t = Instant::now();
        let first = h.health_json().await;
        let second = h.health_json().await;
        if t.elapsed() < REPORT_CACHE {
            assert_eq!(second, first, "served from the cache within a second");
        }
        h.set_scenario(Scenario::GpuXid);
        let r: HealthReport = serde_json::from_slice(&h.health_json().await).unwrap();
        assert_eq!(r.status, Status::Critical);
    }

    /// Polls the cached `/health` body until `done` holds, for less than [`REPORT_CACHE`] (so
    /// only the script key, not the cache's age, can end a cached answer in time).
    async fn poll_cached(h: &SimHostState, done: impl Fn(&HealthReport) -> bool) -> bool {
        let deadline = Instant::now() + REPORT_CACHE / 2;
        while Instant::now() < deadline {
            let r: HealthReport = serde_json::from_slice(&h.health_json().await).unwrap();
            if done(&r) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn cached_health_follows_the_flapping_phase() {
        let h = host(Scenario::ContainerFlapping { period_ms: 50 });
        let inference = |r: &HealthReport, state: &str| r.components.iter().any(|c| c.name == "container:inference" && c.message.contains(state));
        let first: HealthReport = serde_json::from_slice(&h.health_json().await).unwrap();
        assert_eq!(first.status, Status::Warn);
        assert!(poll_cached(&h, |r| inference(r, "restarting")).await, "the restarting phase was never served");
        assert!(poll_cached(&h, |r| inference(r, "unhealthy")).await, "the unhealthy phase was never served again");
    }

    #[tokio::test]
    async fn cached_health_follows_the_disk_status_band() {
        // 70 % → 85 % (warn) in 0.6 s, → 95 % (critical) in 1 s: well inside the 5 s a cached
        // body would otherwise be served.
        let h = host(Scenario::DiskFilling { percent_per_day: 25.0 * 86_400.0 });
        let first: HealthReport = serde_json::from_slice(&h.health_json().await).unwrap();
        assert_ne!(first.status, Status::Critical, "the first answer is built before the disk is full");
        assert!(poll_cached(&h, |r| r.status == Status::Critical).await, "the full disk was never served");
    }
}
