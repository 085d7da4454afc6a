//! Host metric names used by alert rules (`metric = "…"`), trends (`?metric=`) and the digest,
//! and [`named_values`], which reads them from one [`HostMetrics`] sample. The fleet store is
//! asked for series by these names (see [`crate::source::MetricHistory`]).
//!
//! | name | value |
//! |---|---|
//! | `cpu_steal_percent`, `cpu_iowait_percent`, `cpu_busy_percent` | CPU time by mode, % |
//! | `load1`, `load5`, `load15` | load averages |
//! | `mem_available_bytes`, `mem_available_percent`, `mem_used_percent` | memory |
//! | `swap_used_bytes`, `swap_used_percent`, `swap_cached_bytes` | swap |
//! | `disk_used_percent` | fullest file system, % |
//! | `disk_used_percent:<mount>`, `disk_free_bytes:<mount>` | one file system |
//! | `gpu_util_percent` (mean), `gpu_memory_used_percent` (max), `gpu_temperature_c` (max), `gpu_xid_errors` (sum) | GPUs |
//! | `unhealthy_containers`, `model_servers_down` | counts |
//! | `oom_kills` | OOM kills since the agent started |

use gpufleet_agent::health::container_component;
use gpufleet_agent::wire::{HostMetrics, Status};
use std::collections::BTreeMap;

/// CPU steal, %.
pub const CPU_STEAL_PERCENT: &str = "cpu_steal_percent";
/// Fullest file system, %.
pub const DISK_USED_PERCENT: &str = "disk_used_percent";
/// Swap used, bytes.
pub const SWAP_USED_BYTES: &str = "swap_used_bytes";
/// Memory available, bytes.
pub const MEM_AVAILABLE_BYTES: &str = "mem_available_bytes";
/// Unhealthy containers.
pub const UNHEALTHY_CONTAINERS: &str = "unhealthy_containers";

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Every named value of one sample.
pub fn named_values(m: &HostMetrics) -> BTreeMap<String, f64> {
    let mut v = BTreeMap::new();
    let mut put = |k: &str, x: f64| {
        if x.is_finite() {
            v.insert(k.to_owned(), x);
        }
    };
    put(CPU_STEAL_PERCENT, m.cpu.steal);
    put("cpu_iowait_percent", m.cpu.iowait);
    put("cpu_busy_percent", (100.0 - m.cpu.idle - m.cpu.iowait).max(0.0));
    put("load1", m.load[0]);
    put("load5", m.load[1]);
    put("load15", m.load[2]);
    put(MEM_AVAILABLE_BYTES, m.mem_available_bytes as f64);
    put("mem_available_percent", pct(m.mem_available_bytes, m.mem_total_bytes));
    put("mem_used_percent", 100.0 - pct(m.mem_available_bytes, m.mem_total_bytes));
    put(SWAP_USED_BYTES, m.swap_used_bytes as f64);
    put("swap_used_percent", pct(m.swap_used_bytes, m.swap_total_bytes));
    put("swap_cached_bytes", m.swap_cached_bytes as f64);
    let mut fullest: Option<f64> = None;
    for d in &m.disks {
        let p = d.used_percent();
        put(&format!("{DISK_USED_PERCENT}:{}", d.mount), p);
        put(&format!("disk_free_bytes:{}", d.mount), d.free_bytes as f64);
        fullest = Some(fullest.map_or(p, |f| f.max(p)));
    }
    if let Some(f) = fullest {
        put(DISK_USED_PERCENT, f);
    }
    let utils: Vec<f64> = m.gpus.iter().filter_map(|g| g.util_percent).collect();
    if !utils.is_empty() {
        put("gpu_util_percent", utils.iter().sum::<f64>() / utils.len() as f64);
    }
    let mem_used = m.gpus.iter().filter_map(|g| Some(pct(g.memory_used_bytes?, g.memory_total_bytes?))).fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
    if let Some(x) = mem_used {
        put("gpu_memory_used_percent", x);
    }
    if let Some(t) = m.gpus.iter().filter_map(|g| g.temperature_c).fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x)))) {
        put("gpu_temperature_c", t);
    }
    if !m.gpus.is_empty() {
        put("gpu_xid_errors", m.gpus.iter().map(|g| g.xid_errors as f64).sum());
    }
    put(UNHEALTHY_CONTAINERS, unhealthy_containers(m).len() as f64);
    put("model_servers_down", m.model_servers.iter().filter(|s| !s.up).count() as f64);
    if let Some(o) = m.oom_kills {
        put("oom_kills", o as f64);
    }
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
        assert_eq!(v[CPU_STEAL_PERCENT], 7.5);
        assert_eq!(v["cpu_busy_percent"], 45.0);
        assert_eq!(v["mem_available_percent"], 25.0);
        assert_eq!(v["mem_used_percent"], 75.0);
        assert_eq!(v["swap_used_percent"], 25.0);
        assert_eq!(v[DISK_USED_PERCENT], 90.0);
        assert_eq!(v["disk_used_percent:/"], 20.0);
        assert_eq!(v["disk_free_bytes:/data"], 10.0);
        assert_eq!(v[UNHEALTHY_CONTAINERS], 0.0);
        assert!(!v.contains_key("gpu_util_percent"));
        assert!(!v.contains_key("oom_kills"));
    }
}
