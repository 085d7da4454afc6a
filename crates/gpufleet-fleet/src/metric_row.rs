//! How one [`HostMetrics`] sample is stored: one row per host and sample with a column per
//! scalar metric of [`METRICS`] (`NULL` where the host has no such reading, e.g. GPU columns on a
//! CPU host) plus the per-mount disk numbers as a compact JSON column. Both stores use this one
//! definition; [`MetricSelector`] turns a metric name of `host_metrics_range` into a column or a
//! per-mount reading.
//!
//! # Metric names
//! Every name of [`METRICS`] (see each `doc`), plus per mount `disk_used_pct:<mount>` and
//! `disk_free_bytes:<mount>` (e.g. `disk_used_pct:/var/lib/docker`).

use crate::error::FleetError;
use gpufleet_agent::health::container_component;
use gpufleet_agent::wire::{HostMetrics, Status};

/// One stored metric: its column name, what it is, and how it is read from a sample.
pub struct MetricDef {
    /// Column and metric name (`[a-z0-9_]+`).
    pub name: &'static str,
    /// What it measures, with its unit.
    pub doc: &'static str,
    get: fn(&HostMetrics) -> Option<f64>,
}

impl std::fmt::Debug for MetricDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn sum_or_none(it: impl Iterator<Item = f64>) -> Option<f64> {
    it.fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

fn max_or_none(it: impl Iterator<Item = f64>) -> Option<f64> {
    it.fold(None, |acc: Option<f64>, v| Some(acc.map_or(v, |a| a.max(v))))
}

const fn def(name: &'static str, doc: &'static str, get: fn(&HostMetrics) -> Option<f64>) -> MetricDef {
    MetricDef { name, doc, get }
}

/// Every scalar metric, in column order.
pub const METRICS: &[MetricDef] = &[
    def("cpu_user_pct", "CPU time in user mode (with nice), % of all CPUs", |m| Some(m.cpu.user + m.cpu.nice)),
    def("cpu_system_pct", "CPU time in kernel mode (with irq, softirq), %", |m| Some(m.cpu.system + m.cpu.irq + m.cpu.softirq)),
    def("cpu_iowait_pct", "CPU time idle waiting for I/O, %", |m| Some(m.cpu.iowait)),
    def("cpu_steal_pct", "CPU time stolen by the hypervisor, %", |m| Some(m.cpu.steal)),
    def("cpu_idle_pct", "CPU time idle, %", |m| Some(m.cpu.idle)),
    def("load1", "1-minute load average", |m| Some(m.load[0])),
    def("load5", "5-minute load average", |m| Some(m.load[1])),
    def("load15", "15-minute load average", |m| Some(m.load[2])),
    def("mem_total_bytes", "MemTotal, bytes", |m| Some(m.mem_total_bytes as f64)),
    def("mem_available_bytes", "MemAvailable, bytes", |m| Some(m.mem_available_bytes as f64)),
    def("mem_available_pct", "MemAvailable in % of MemTotal", |m| {
        (m.mem_total_bytes > 0).then(|| m.mem_available_bytes as f64 * 100.0 / m.mem_total_bytes as f64)
    }),
    def("swap_total_bytes", "SwapTotal, bytes", |m| Some(m.swap_total_bytes as f64)),
    def("swap_used_bytes", "SwapTotal − SwapFree, bytes", |m| Some(m.swap_used_bytes as f64)),
    def("swap_cached_bytes", "SwapCached, bytes", |m| Some(m.swap_cached_bytes as f64)),
    def("disk_used_pct", "the fullest mount's used %, as df shows it", |m| max_or_none(m.disks.iter().map(|d| d.used_percent()))),
    def("disk_free_bytes", "bytes available to users, summed over mounts", |m| sum_or_none(m.disks.iter().map(|d| d.free_bytes as f64))),
    def("net_rx_bytes_per_s", "received bytes/s, summed over interfaces", |m| Some(m.net.iter().map(|n| n.rx_bytes_per_s).sum())),
    def("net_tx_bytes_per_s", "sent bytes/s, summed over interfaces", |m| Some(m.net.iter().map(|n| n.tx_bytes_per_s).sum())),
    def("uptime_s", "seconds since boot", |m| Some(m.uptime_s)),
    def("gpu_count", "GPUs seen through NVML", |m| Some(m.gpus.len() as f64)),
    def("gpu_util_pct", "mean SM utilisation of the GPUs that report it, %", |m| {
        let known: Vec<f64> = m.gpus.iter().filter_map(|g| g.util_percent).collect();
        (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
    }),
    def("gpu_mem_used_bytes", "GPU memory used, summed over GPUs, bytes", |m| {
        sum_or_none(m.gpus.iter().filter_map(|g| g.memory_used_bytes).map(|b| b as f64))
    }),
    def("gpu_mem_total_bytes", "GPU memory, summed over GPUs, bytes", |m| {
        sum_or_none(m.gpus.iter().filter_map(|g| g.memory_total_bytes).map(|b| b as f64))
    }),
    def("gpu_temp_max_c", "hottest GPU, °C", |m| max_or_none(m.gpus.iter().filter_map(|g| g.temperature_c))),
    def("gpu_xid_errors", "critical XID errors since the agent started, summed over GPUs", |m| {
        (!m.gpus.is_empty()).then(|| m.gpus.iter().map(|g| g.xid_errors as f64).sum())
    }),
    def("containers_unhealthy", "containers the agent's rules judge not ok (unhealthy, restarting, crashed)", |m| {
        Some(m.containers.iter().filter(|c| container_component(c).status != Status::Ok).count() as f64)
    }),
    def("model_servers_down", "configured model servers that are down", |m| Some(m.model_servers.iter().filter(|s| !s.up).count() as f64)),
    def("oom_kills", "OOM kills since the agent started (absent before kernel 4.13)", |m| m.oom_kills.map(|k| k as f64)),
];

/// One stored sample.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricRow {
    /// Host id.
    pub host_id: i64,
    /// Sample time (epoch ms).
    pub ts_ms: i64,
    /// One value per [`METRICS`] entry, in order.
    pub values: Vec<Option<f64>>,
    /// `[[mount, used_pct, free_bytes], …]` as JSON.
    pub mounts: String,
}

impl MetricRow {
    /// The row of one sample taken at `ts_ms`.
    pub fn new(host_id: i64, ts_ms: i64, m: &HostMetrics) -> Self {
        let values = METRICS.iter().map(|d| (d.get)(m).filter(|v| v.is_finite())).collect();
        let mounts: Vec<(&str, f64, u64)> = m.disks.iter().map(|d| (d.mount.as_str(), d.used_percent(), d.free_bytes)).collect();
        let mounts = serde_json::to_string(&mounts).unwrap_or_else(|_| "[]".to_owned());
        Self { host_id, ts_ms, values, mounts }
    }
}

/// What a metric name of `host_metrics_range` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricSelector {
    /// A column: the index into [`METRICS`].
    Column(usize),
    /// `disk_used_pct:<mount>`.
    MountUsedPct(String),
    /// `disk_free_bytes:<mount>`.
    MountFreeBytes(String),
}

impl MetricSelector {
    /// Parses a metric name; an unknown one is an `Invalid { field: "metric" }` listing the names.
    pub fn parse(name: &str) -> Result<Self, FleetError> {
        if let Some(i) = METRICS.iter().position(|d| d.name == name) {
            return Ok(MetricSelector::Column(i));
        }
        match name.split_once(':') {
            Some(("disk_used_pct", mount)) if !mount.is_empty() => Ok(MetricSelector::MountUsedPct(mount.to_owned())),
            Some(("disk_free_bytes", mount)) if !mount.is_empty() => Ok(MetricSelector::MountFreeBytes(mount.to_owned())),
            _ => Err(FleetError::invalid(
                "metric",
                format!(
                    "unknown host metric {name:?}; known: {}, disk_used_pct:<mount>, disk_free_bytes:<mount>",
                    METRICS.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// The value for this selector from a stored row's `mounts` JSON (per-mount selectors only).
    pub fn from_mounts(&self, mounts: &str) -> Option<f64> {
        let (want, used) = match self {
            MetricSelector::Column(_) => return None,
            MetricSelector::MountUsedPct(m) => (m, true),
            MetricSelector::MountFreeBytes(m) => (m, false),
        };
        let parsed: Vec<(String, f64, u64)> = serde_json::from_str(mounts).ok()?;
        parsed.into_iter().find(|(m, _, _)| m == want).map(|(_, pct, free)| if used { pct } else { free as f64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_agent::wire::{CpuPercent, Disk, GpuState};

    pub(crate) fn sample() -> HostMetrics {
        let disk = |mount: &str, used: u64, free: u64| Disk { mount: mount.into(), fs: "ext4".into(), total_bytes: used + free, used_bytes: used, free_bytes: free };
        HostMetrics {
            cpu: CpuPercent { user: 10.0, nice: 1.0, system: 5.0, idle: 70.0, iowait: 2.0, irq: 0.5, softirq: 0.5, steal: 11.0 },
            load: [1.0, 2.0, 3.0],
            mem_total_bytes: 1000,
            mem_available_bytes: 250,
            disks: vec![disk("/", 40, 60), disk("/data", 90, 10)],
            ..Default::default()
        }
    }

    fn value(row: &MetricRow, name: &str) -> Option<f64> {
        match MetricSelector::parse(name).unwrap() {
            MetricSelector::Column(i) => row.values[i],
            sel => sel.from_mounts(&row.mounts),
        }
    }

    #[test]
    fn a_sample_becomes_a_row() {
        let row = MetricRow::new(7, 1_000, &sample());
        assert_eq!(row.values.len(), METRICS.len());
        assert_eq!(value(&row, "cpu_steal_pct"), Some(11.0));
        assert_eq!(value(&row, "cpu_user_pct"), Some(11.0));
        assert_eq!(value(&row, "mem_available_pct"), Some(25.0));
        assert_eq!(value(&row, "disk_used_pct"), Some(90.0), "the fullest mount");
        assert_eq!(value(&row, "disk_free_bytes"), Some(70.0));
        assert_eq!(value(&row, "disk_used_pct:/"), Some(40.0));
        assert_eq!(value(&row, "disk_free_bytes:/data"), Some(10.0));
        assert_eq!(value(&row, "disk_used_pct:/nope"), None);
        assert_eq!(value(&row, "gpu_util_pct"), None, "no GPUs: no reading");
        assert_eq!(value(&row, "gpu_count"), Some(0.0));
        assert_eq!(value(&row, "oom_kills"), None);
    }

    #[test]
    fn gpu_columns_aggregate_over_gpus() {
        let mut m = sample();
        let gpu = |i: u32, util: Option<f64>, temp: f64| GpuState {
            index: i,
            uuid: format!("GPU-{i}"),
            name: "H100".into(),
            util_percent: util,
            mem_util_percent: None,
            memory_used_bytes: Some(10),
            memory_total_bytes: Some(80),
            temperature_c: Some(temp),
            power_w: None,
            power_limit_w: None,
            sm_clock_mhz: None,
            mem_clock_mhz: None,
            xid_errors: u64::from(i),
            last_xid: None,
            processes: vec![],
        };
        m.gpus = vec![gpu(0, Some(50.0), 60.0), gpu(1, Some(100.0), 70.0), gpu(2, None, 65.0)];
        let row = MetricRow::new(1, 0, &m);
        assert_eq!(value(&row, "gpu_util_pct"), Some(75.0));
        assert_eq!(value(&row, "gpu_mem_total_bytes"), Some(240.0));
        assert_eq!(value(&row, "gpu_temp_max_c"), Some(70.0));
        assert_eq!(value(&row, "gpu_xid_errors"), Some(3.0));
    }

    #[test]
    fn names_are_plain_identifiers_and_unknown_ones_are_refused() {
        for d in METRICS {
            assert!(d.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{}", d.name);
        }
        let err = MetricSelector::parse("cpu_stael_pct").unwrap_err().to_string();
        assert!(err.starts_with("metric: unknown host metric") && err.contains("cpu_steal_pct"), "{err}");
        assert!(MetricSelector::parse("disk_used_pct:").is_err());
    }
}
