//! The JSON contract between an agent (real or simulated) and the server's health and metrics
//! workers: [`HealthReport`] (`GET /health`) and [`HostMetrics`] (`GET /metrics/host`).
//!
//! Plain serde data with no behaviour beyond [`Status::worst`] and [`HealthReport::new`]; the rules
//! that turn metrics into component statuses live in [`crate::health`]. Units are in the field
//! names where they are not obvious (`_bytes`, `_ms`, `_s`, `_percent`, `_c`, `_w`, `_mhz`) and in
//! every field's doc. Fields added later are optional (`#[serde(default)]`) so an older server
//! reads a newer agent.

use serde::{Deserialize, Serialize};

/// How healthy something is. Ordered by severity: `ok < warn < critical`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Working as expected.
    #[default]
    Ok,
    /// Needs attention soon (disk > 85 %, container unhealthy, model server down…).
    Warn,
    /// Broken or about to break (disk > 95 %, GPU XID error, OOM kill…).
    Critical,
}

impl Status {
    /// The more severe of the two.
    pub fn worst(self, other: Status) -> Status {
        self.max(other)
    }

    /// `ok`, `warn` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Critical => "critical",
        }
    }
}

/// What a [`Component`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// The agent itself (version, sampling, probe errors).
    Agent,
    /// CPU usage and load.
    Cpu,
    /// RAM and OOM kills.
    Memory,
    /// Swap.
    Swap,
    /// One mounted file system.
    Disk,
    /// One GPU, or the GPU driver when there is none.
    Gpu,
    /// One container, or the container runtime when it cannot be read.
    Container,
    /// One configured model server (llama.cpp, Ollama, vLLM).
    ModelServer,
}

/// One checked part of a host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// Stable name within the host: `cpu`, `memory`, `disk:/var`, `gpu:0`, `container:web`,
    /// `model_server:llama`.
    pub name: String,
    /// What it is.
    pub kind: ComponentKind,
    /// Its status under the rules of [`crate::health`].
    pub status: Status,
    /// One human-readable line: why it has this status.
    pub message: String,
    /// Kind-specific numbers behind the status (for display; not part of the stable contract).
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// `GET /health`: the host's overall status and every component's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Host name as configured on the agent (`[agent] host_name`, default the kernel host name).
    pub host: String,
    /// Version of the agent that answered (`CARGO_PKG_VERSION`, `-sim` suffix when simulated).
    pub agent_version: String,
    /// When the report was made, epoch milliseconds.
    pub time_ms: i64,
    /// The worst component status (`ok` when there are no components).
    pub status: Status,
    /// Every component, in a stable order (agent, cpu, memory, swap, disks, gpus, containers,
    /// model servers).
    pub components: Vec<Component>,
}

impl HealthReport {
    /// A report whose `status` is the worst of `components`.
    pub fn new(host: impl Into<String>, agent_version: impl Into<String>, time_ms: i64, components: Vec<Component>) -> Self {
        let status = components.iter().fold(Status::Ok, |s, c| s.worst(c.status));
        Self { host: host.into(), agent_version: agent_version.into(), time_ms, status, components }
    }
}

/// CPU time by mode in percent of all CPUs over the sampling window (the fields add up to ~100).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuPercent {
    /// Normal user processes (includes guest time on kernels that report it).
    pub user: f64,
    /// Niced user processes.
    pub nice: f64,
    /// Kernel.
    pub system: f64,
    /// Idle.
    pub idle: f64,
    /// Idle while I/O was outstanding (0 on kernels before 2.6).
    pub iowait: f64,
    /// Hardware interrupts.
    pub irq: f64,
    /// Soft interrupts.
    pub softirq: f64,
    /// Stolen by the hypervisor for other guests (0 on kernels before 2.6.11).
    pub steal: f64,
}

/// One mounted file system, from `statvfs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// Mount point (`/`, `/var/lib/docker`).
    pub mount: String,
    /// File system type from `/proc/mounts` (`ext4`, `xfs`, `nfs4`).
    pub fs: String,
    /// Size, bytes (`f_blocks · f_frsize`).
    pub total_bytes: u64,
    /// Used, bytes (`(f_blocks − f_bfree) · f_frsize`).
    pub used_bytes: u64,
    /// Available to unprivileged users, bytes (`f_bavail · f_frsize`; excludes the root reserve,
    /// as `df` does).
    pub free_bytes: u64,
}

impl Disk {
    /// Used percent as `df` shows it: `used / (used + free) · 100` (0 for an empty file system).
    pub fn used_percent(&self) -> f64 {
        let denom = self.used_bytes.saturating_add(self.free_bytes);
        if denom == 0 {
            0.0
        } else {
            self.used_bytes as f64 * 100.0 / denom as f64
        }
    }
}

/// One network interface's throughput over the sampling window (`lo` is left out).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Net {
    /// Interface name (`eth0`).
    pub iface: String,
    /// Received, bytes per second.
    pub rx_bytes_per_s: f64,
    /// Sent, bytes per second.
    pub tx_bytes_per_s: f64,
}

/// One process using a GPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuProcess {
    /// Process id on the host.
    pub pid: u32,
    /// Command name from `/proc/<pid>/comm` (empty when unreadable, e.g. another PID namespace).
    pub name: String,
    /// GPU memory used, bytes (`None` when the driver cannot tell).
    pub used_memory_bytes: Option<u64>,
}

/// One GPU as NVML reports it. A reading the GPU does not support is `None`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuState {
    /// NVML index on the host.
    pub index: u32,
    /// GPU UUID (`GPU-…`).
    pub uuid: String,
    /// Product name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// SM utilisation over the driver's last sample period, percent.
    pub util_percent: Option<f64>,
    /// Memory controller utilisation, percent.
    pub mem_util_percent: Option<f64>,
    /// Frame buffer used, bytes.
    pub memory_used_bytes: Option<u64>,
    /// Frame buffer size, bytes.
    pub memory_total_bytes: Option<u64>,
    /// Core temperature, °C.
    pub temperature_c: Option<f64>,
    /// Power draw, watts.
    pub power_w: Option<f64>,
    /// Enforced power limit, watts.
    pub power_limit_w: Option<f64>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Memory clock, MHz.
    pub mem_clock_mhz: Option<u32>,
    /// Critical XID errors seen since the agent started.
    pub xid_errors: u64,
    /// The last XID error code seen since the agent started.
    pub last_xid: Option<u64>,
    /// Compute processes on this GPU.
    pub processes: Vec<GpuProcess>,
}

/// Whether GPUs could be read on this host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GpuDriver {
    /// `libnvidia-ml.so.1` could not be loaded: no NVIDIA driver (not an error on CPU hosts).
    #[default]
    Absent,
    /// NVML loaded and initialised.
    Loaded {
        /// Driver version (`550.54.15`).
        driver_version: String,
    },
    /// The library loaded but NVML failed (driver/library mismatch, no permission…).
    Failed {
        /// NVML's error.
        error: String,
    },
}

/// One container from the Docker/Podman Engine API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Full container id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image reference.
    #[serde(default)]
    pub image: String,
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited` or `dead`.
    pub state: String,
    /// Health-check status (`starting`, `healthy`, `unhealthy`); `None` without a health check.
    pub health: Option<String>,
    /// The last health-check results, oldest first, one line each: `exit N: output`.
    pub health_log: Vec<String>,
    /// Restarts done by the engine's restart policy.
    pub restart_count: u64,
    /// Killed by the kernel OOM killer at its last exit.
    #[serde(default)]
    pub oom_killed: bool,
    /// Exit code of the last run (meaningful when not running).
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Not running because someone stopped it, not because it crashed: see
    /// [`crate::containers::stopped_on_purpose`]. Restarting it through the agent is refused.
    pub stopped_on_purpose: bool,
}

/// The kinds of model server the agent knows how to probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelServerKind {
    /// llama.cpp `llama-server`: `/health`, `/slots`, `/v1/models`.
    Llamacpp,
    /// Ollama: `/api/ps`.
    Ollama,
    /// vLLM: `/metrics` (`vllm:num_requests_running`/`waiting`), `/v1/models`.
    Vllm,
}

/// One configured model server as last probed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelServerState {
    /// Name from the agent configuration.
    pub name: String,
    /// Its kind.
    pub kind: ModelServerKind,
    /// Base URL probed.
    pub url: String,
    /// Answered its health endpoint with success.
    pub up: bool,
    /// Models it has loaded (or serves).
    pub models: Vec<String>,
    /// Requests being processed now (llama.cpp busy slots, vLLM running requests).
    pub slots_busy: Option<u32>,
    /// Parallel request capacity (llama.cpp slots; `None` when the server does not say).
    pub slots_total: Option<u32>,
    /// Requests waiting (vLLM), when known.
    #[serde(default)]
    pub queued: Option<u32>,
    /// Why it is down or only partly read.
    #[serde(default)]
    pub error: Option<String>,
}

/// A source the agent could not read in the last sample (becomes a `warn` component).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeError {
    /// The kind of component the source feeds.
    pub kind: ComponentKind,
    /// The source (`/proc/stat`, `docker socket /var/run/docker.sock`).
    pub source: String,
    /// What went wrong.
    pub error: String,
}

/// `GET /metrics/host`: everything the agent measured in its last sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMetrics {
    /// Host name as configured on the agent.
    #[serde(default)]
    pub host: String,
    /// When the sample was taken, epoch milliseconds.
    pub time_ms: i64,
    /// CPU time by mode over the last `cpu_window_ms` (since boot when that is 0).
    pub cpu: CpuPercent,
    /// Length of the window `cpu` and `net` rates cover, ms; 0 on the first sample, where `cpu` is
    /// the average since boot and `net` rates are 0.
    #[serde(default)]
    pub cpu_window_ms: u64,
    /// Logical CPUs (`cpuN` lines of `/proc/stat`).
    #[serde(default)]
    pub cpus: u32,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// `MemTotal`, bytes.
    pub mem_total_bytes: u64,
    /// `MemAvailable`, bytes (estimated as `MemFree + Buffers + Cached` on kernels before 3.14).
    pub mem_available_bytes: u64,
    /// `SwapTotal`, bytes.
    pub swap_total_bytes: u64,
    /// `SwapTotal − SwapFree`, bytes.
    pub swap_used_bytes: u64,
    /// `SwapCached` (swapped out, then read back and still in swap), bytes.
    pub swap_cached_bytes: u64,
    /// OOM kills since the agent started (`/proc/vmstat` `oom_kill` delta; `None` on kernels before
    /// 4.13, which lack the counter).
    #[serde(default)]
    pub oom_kills: Option<u64>,
    /// Real file systems (block devices, network file systems and `/`), one per device.
    pub disks: Vec<Disk>,
    /// Interfaces other than `lo`.
    pub net: Vec<Net>,
    /// Seconds since boot.
    pub uptime_s: f64,
    /// Whether GPUs could be read.
    #[serde(default)]
    pub gpu_driver: GpuDriver,
    /// GPUs (empty without a driver).
    pub gpus: Vec<GpuState>,
    /// Containers (empty without a container socket).
    pub containers: Vec<ContainerState>,
    /// Configured model servers.
    pub model_servers: Vec<ModelServerState>,
    /// Sources that could not be read in this sample.
    #[serde(default)]
    pub probe_errors: Vec<ProbeError>,
}
