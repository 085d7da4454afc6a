//! Taking one [`HostMetrics`] sample: `/proc` and `statvfs` ([`HostSampler`], blocking), GPUs
//! ([`GpuProbe`], blocking), containers and model servers (async), put together by [`Sampler`].
//!
//! Rates (CPU percent, network bytes/s) need two samples. The first sample of a process reports
//! CPU percent averaged since boot, network rates of 0, and `cpu_window_ms = 0` to say so. OOM
//! kills count from the agent's first sample (the `oom_kill` value at start is the base).
//!
//! A file system whose `statvfs` hangs (a dead NFS server) stalls the blocking sampling thread;
//! `/health` keeps answering from the last sample and its `agent` component turns `warn` once the
//! sample is older than three intervals.

use crate::containers::DockerClient;
use crate::models::ModelProbe;
use crate::nvml::GpuProbe;
use crate::proc::netdev::NetCounters;
use crate::proc::stat::CpuTimes;
use crate::proc::{mounts, statfs, ProcReader};
use crate::wire::{ComponentKind, HostMetrics, Net, ProbeError};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

struct Prev {
    at: Instant,
    cpu: CpuTimes,
    net: Vec<NetCounters>,
}

/// Samples `/proc` and disk usage; keeps the previous counters for rates.
pub struct HostSampler {
    proc: ProcReader,
    host: String,
    prev: Option<Prev>,
    oom_base: Option<u64>,
}

impl HostSampler {
    /// A sampler of `proc` reporting as `host`.
    pub fn new(proc: ProcReader, host: impl Into<String>) -> Self {
        Self { proc, host: host.into(), prev: None, oom_base: None }
    }

    /// Reads every `/proc` source and each disk. A source that fails is left at its default and
    /// listed in [`HostMetrics::probe_errors`]. Blocking.
    pub fn sample(&mut self, now: Instant, time_ms: i64) -> HostMetrics {
        let mut m = HostMetrics { host: self.host.clone(), time_ms, ..Default::default() };
        let mut errors = Vec::new();
        let mut fail = |kind: ComponentKind, source: &str, e: &dyn std::fmt::Display| {
            errors.push(ProbeError { kind, source: source.to_owned(), error: e.to_string() });
        };
        let root = self.proc.root().to_path_buf();
        let src = |name: &str| root.join(name).display().to_string();

        let stat = self.proc.stat().map_err(|e| fail(ComponentKind::Cpu, &src("stat"), &e)).ok();
        let net = self.proc.netdev().map_err(|e| fail(ComponentKind::Agent, &src("net/dev"), &e)).unwrap_or_default();
        if let Some(s) = &stat {
            m.cpus = s.cpus;
            let windowed = self.prev.as_ref().and_then(|p| s.cpu.percent_since(&p.cpu).map(|c| (c, p.at)));
            match windowed {
                Some((c, at)) => {
                    m.cpu = c;
                    m.cpu_window_ms = u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX).max(1);
                }
                None => m.cpu = s.cpu.percent_since_boot().unwrap_or_default(),
            }
        }
        m.net = net_rates(&net, self.prev.as_ref().map(|p| (&p.net[..], now.saturating_duration_since(p.at).as_secs_f64())));
        if let Some(s) = stat {
            self.prev = Some(Prev { at: now, cpu: s.cpu, net });
        }

        match self.proc.loadavg() {
            Ok(l) => m.load = l,
            Err(e) => fail(ComponentKind::Cpu, &src("loadavg"), &e),
        }
        match self.proc.meminfo() {
            Ok(mi) => {
                m.mem_total_bytes = mi.total;
                m.mem_available_bytes = mi.available;
                m.swap_total_bytes = mi.swap_total;
                m.swap_used_bytes = mi.swap_used();
                m.swap_cached_bytes = mi.swap_cached;
            }
            Err(e) => fail(ComponentKind::Memory, &src("meminfo"), &e),
        }
        match self.proc.vmstat() {
            Ok(v) => {
                if let Some(now_kills) = v.oom_kill {
                    let base = *self.oom_base.get_or_insert(now_kills);
                    m.oom_kills = Some(now_kills.saturating_sub(base));
                }
            }
            Err(e) => fail(ComponentKind::Memory, &src("vmstat"), &e),
        }
        match self.proc.uptime() {
            Ok(u) => m.uptime_s = u,
            Err(e) => fail(ComponentKind::Agent, &src("uptime"), &e),
        }
        match self.proc.mounts() {
            Ok(all) => {
                for mnt in mounts::disk_mounts(&all) {
                    match statfs::disk_usage(Path::new(&mnt.mount_point), &mnt.fs_type) {
                        Ok(d) => m.disks.push(d),
                        Err(e) => fail(ComponentKind::Disk, &format!("statvfs {}", mnt.mount_point), &e),
                    }
                }
            }
            Err(e) => fail(ComponentKind::Disk, &src("mounts"), &e),
        }
        m.probe_errors = errors;
        m
    }
}

/// Bytes per second per interface (not `lo`) between two counter sets `secs` apart; 0 without a
/// previous set. A counter that went backwards (driver reload, 32-bit wrap) gives 0.
pub fn net_rates(cur: &[NetCounters], prev: Option<(&[NetCounters], f64)>) -> Vec<Net> {
    cur.iter()
        .filter(|c| c.iface != "lo")
        .map(|c| {
            let (rx, tx) = match prev {
                Some((p, secs)) if secs > 0.0 => match p.iter().find(|x| x.iface == c.iface) {
                    Some(x) => (c.rx_bytes.saturating_sub(x.rx_bytes) as f64 / secs, c.tx_bytes.saturating_sub(x.tx_bytes) as f64 / secs),
                    None => (0.0, 0.0),
                },
                _ => (0.0, 0.0),
            };
            Net { iface: c.iface.clone(), rx_bytes_per_s: rx, tx_bytes_per_s: tx }
        })
        .collect()
}

/// Where containers are read from.
#[derive(Clone, Debug)]
pub enum DockerSource {
    /// A configured socket: its absence is a probe error.
    Configured(DockerClient),
    /// The first existing candidate at each sample; none means "no container runtime" (no error).
    Detect(Vec<PathBuf>, std::time::Duration),
}

impl DockerSource {
    /// The client to use now, if any.
    pub fn client(&self) -> Option<DockerClient> {
        match self {
            DockerSource::Configured(c) => Some(c.clone()),
            DockerSource::Detect(paths, timeout) => paths.iter().find(|p| p.exists()).map(|p| DockerClient::new(p.clone(), *timeout)),
        }
    }
}

/// Takes whole samples.
#[derive(Clone)]
pub struct Sampler {
    host: Arc<Mutex<HostSampler>>,
    gpu: Arc<Mutex<GpuProbe>>,
    docker: DockerSource,
    models: ModelProbe,
}

impl Sampler {
    /// A sampler over these sources.
    pub fn new(host: HostSampler, gpu: GpuProbe, docker: DockerSource, models: ModelProbe) -> Self {
        Self { host: Arc::new(Mutex::new(host)), gpu: Arc::new(Mutex::new(gpu)), docker, models }
    }

    /// The container source (restarts use it too).
    pub fn docker(&self) -> &DockerSource {
        &self.docker
    }

    /// One full sample.
    pub async fn sample(&self) -> HostMetrics {
        let (host, gpu) = (self.host.clone(), self.gpu.clone());
        let blocking = tokio::task::spawn_blocking(move || {
            let mut m = host.lock().sample(Instant::now(), gpufleet_core::time::now_ms());
            let mut g = gpu.lock();
            m.gpu_driver = g.driver().clone();
            let (gpus, errors) = g.sample();
            m.gpus = gpus;
            m.probe_errors.extend(errors);
            m
        });
        let containers = async {
            match self.docker.client() {
                None => (Vec::new(), None),
                Some(c) => match c.states().await {
                    Ok(v) => (v, None),
                    Err(e) => (Vec::new(), Some(ProbeError { kind: ComponentKind::Container, source: format!("container API {}", c.socket().display()), error: e.to_string() })),
                },
            }
        };
        let (blocking, (containers, cerr), models) = tokio::join!(blocking, containers, self.models.probe_all());
        let mut m = match blocking {
            Ok(m) => m,
            Err(e) => HostMetrics {
                time_ms: gpufleet_core::time::now_ms(),
                probe_errors: vec![ProbeError { kind: ComponentKind::Agent, source: "sampler".into(), error: e.to_string() }],
                ..Default::default()
            },
        };
        m.containers = containers;
        m.probe_errors.extend(cerr);
        m.model_servers = models;
        m
    }
}
