//! Host metric names used by alert rules (`metric = "…"`), trends (`?metric=`) and the digest —
//! the names the fleet store keeps series under (`gpufleet-fleet`'s `metric_row::METRICS`) — and
//! [`named_values`], which reads them from one [`HostMetrics`] sample with the same formulas.
//!
//! | name | value |
//! |---|---|
//! | `cpu_user_pct` (with nice), `cpu_system_pct` (with irq, softirq), `cpu_iowait_pct`, `cpu_steal_pct`, `cpu_idle_pct` | CPU time by mode, % |
//! | `load1`, `load5`, `load15` | load averages |
//! | `mem_total_bytes`, `mem_available_bytes`, `mem_available_pct` | memory |
//! | `swap_total_bytes`, `swap_used_bytes`, `swap_cached_bytes` | swap |
//! | `disk_used_pct` (fullest mount), `disk_free_bytes` (sum) | file systems |
//! | `disk_used_pct:<mount>`, `disk_free_bytes:<mount>` | one file system |
//! | `net_rx_bytes_per_s`, `net_tx_bytes_per_s` | network, summed |
//! | `uptime_s` | seconds since boot |
//! | `gpu_count`, `gpu_util_pct` (mean), `gpu_mem_used_bytes`, `gpu_mem_total_bytes` (sums), `gpu_temp_max_c`, `gpu_xid_errors` (sum) | GPUs (absent without GPUs) |
//! | `containers_unhealthy`, `model_servers_down` | counts |
//! | `oom_kills` | OOM kills since the agent started (absent before kernel 4.13) |

use gpufleet_agent::health::container_component;
use gpufleet_agent::wire::{HostMetrics, Status};
use std::collections::BTreeMap;

/// CPU steal, %.
pub const CPU_STEAL_PCT: &str = "cpu_steal_pct";
/// Fullest file system, %.
pub const DISK_USED_PCT: &str = "disk_used_pct";
/// Swap used, bytes.
pub const SWAP_USED_BYTES: &str = "swap_used_bytes";
/// Memory available, bytes.
pub const MEM_AVAILABLE_BYTES: &str = "mem_available_bytes";
/// Unhealthy containers.
pub const CONTAINERS_UNHEALTHY: &str = "containers_unhealthy";

fn sum_or_none(it: impl Iterator<Item = f64>) -> Option<f64> {
    it.fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

fn max_or_none(it: impl Iterator<Item = f64>) -> Option<f64> {
    it.fold(None, |acc: Option<f64>, v| Some(acc.map_or(v, |a| a.max(v))))
}

/// Every named value of one sample (a reading the host does not have is absent).
pub fn named_values(m: &HostMetrics) -> BTreeMap<String, f64> {
    let mut v = BTreeMap::new();
    let mut put = |k: &str, x: Option<f64>| {
        if let Some(x) = x.filter(|x| x.is_finite()) {
            v.insert(k.to_owned(), x);
        }
    };
    put("cpu_user_pct", Some(m.cpu.user + m.cpu.nice));
    put("cpu_system_pct", Some(m.cpu.system + m.cpu.irq + m.cpu.softirq));
    put("cpu_iowait_pct", Some(m.cpu.iowait));
    put(CPU_STEAL_PCT, Some(m.cpu.steal));
    put("cpu_idle_pct", Some(m.cpu.idle));
    put("load1", Some(m.load[0]));
    put("load5", Some(m.load[1]));
    put("load15", Some(m.load[2]));
    put("mem_total_bytes", Some(m.mem_total_bytes as f64));
    put(MEM_AVAILABLE_BYTES, Some(m.mem_available_bytes as f64));
    put("mem_available_pct", (m.mem_total_bytes > 0).then(|| m.mem_available_bytes as f64 * 100.0 / m.mem_total_bytes as f64));
    put("swap_total_bytes", Some(m.swap_total_bytes as f64));
    put(SWAP_USED_BYTES, Some(m.swap_used_bytes as f64));
    put("swap_cached_bytes", Some(m.swap_cached_bytes as f64));
    put(DISK_USED_PCT, max_or_none(m.disks.iter().map(|d| d.used_percent())));
    put("disk_free_bytes", sum_or_none(m.disks.iter().map(|d| d.free_bytes as f64)));
    for d in &m.disks {
        put(&format!("{DISK_USED_PCT}:{}", d.mount), Some(d.used_percent()));
        put(&format!("disk_free_bytes:{}", d.mount), Some(d.free_bytes as f64));
    }
    put("net_rx_bytes_per_s", Some(m.net.iter().map(|n| n.rx_bytes_per_s).sum()));
    put("net_tx_bytes_per_s", Some(m.net.iter().map(|n| n.tx_bytes_per_s).sum()));
    put("uptime_s", Some(m.uptime_s));
    put("gpu_count", Some(m.gpus.len() as f64));
    let utils: Vec<f64> = m.gpus.iter().filter_map(|g| g.util_percent).collect();
    put("gpu_util_pct", (!utils.is_empty()).then(|| utils.iter().sum::<f64>() / utils.len() as f64));
    put("gpu_mem_used_bytes", sum_or_none(m.gpus.iter().filter_map(|g| g.memory_used_bytes).map(|b| b as f64)));
    put("gpu_mem_total_bytes", sum_or_none(m.gpus.iter().filter_map(|g| g.memory_total_bytes).map(|b| b as f64)));
    put("gpu_temp_max_c", max_or_none(m.gpus.iter().filter_map(|g| g.temperature_c)));
    put("gpu_xid_errors", (!m.gpus.is_empty()).then(|| m.gpus.iter().map(|g| g.xid_errors as f64).sum()));
    put(CONTAINERS_UNHEALTHY, Some(unhealthy_containers(m).len() as f64));
    put("model_servers_down", Some(m.model_servers.iter().filter(|s| !s.up).count() as f64));
    put("oom_kills", m.oom_kills.map(|k| k as f64));
    v
}

/// Names of the containers the agent's rules call unhealthy (unhealthy, restarting, or exited
/// without being stopped on purpose).
pub fn unhealthy_containers(m: &HostMetrics) -> Vec<String> {
    m.containers.iter().filter(|c| container_component(c).status != Status::Ok).map(|c| c.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_agent::wire::{CpuPercent, Disk};

    #[test]
    fn names_are_read_from_a_sample() {
        let m = HostMetrics {
            cpu: CpuPercent { steal: 7.5, idle: 50.0, iowait: 5.0, ..CpuPercent::default() },
            mem_total_bytes: 1000,
            mem_available_bytes: 250,
            swap_total_bytes: 200,
            swap_used_bytes: 50,
            disks: vec![
                Disk { mount: "/".into(), fs: "ext4".into(), total_bytes: 100, used_bytes: 20, free_bytes: 80 },
                Disk { mount: "/data".into(), fs: "xfs".into(), total_bytes: 100, used_bytes: 90, free_bytes: 10 },
            ],
            ..HostMetrics::default()
        };
        let v = named_values(&m);
        assert_eq!(v[CPU_STEAL_PCT], 7.5);
        assert_eq!(v["cpu_idle_pct"], 50.0);
        assert_eq!(v["mem_available_pct"], 25.0);
        assert_eq!(v[SWAP_USED_BYTES], 50.0);
        assert_eq!(v[DISK_USED_PCT], 90.0);
        assert_eq!(v["disk_free_bytes"], 90.0);
        assert_eq!(v["disk_used_pct:/"], 20.0);
        assert_eq!(v["disk_free_bytes:/data"], 10.0);
        assert_eq!(v[CONTAINERS_UNHEALTHY], 0.0);
        assert_eq!(v["gpu_count"], 0.0);
        assert!(!v.contains_key("gpu_util_pct"));
        assert!(!v.contains_key("oom_kills"));
    }
}
