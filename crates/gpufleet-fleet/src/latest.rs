//! [`compact`]: the copy of a host metrics sample that [`crate::Fleet`] keeps in memory as each
//! host's latest ([`crate::Fleet::latest_metrics`]). It holds what the readers on the server use
//! — `gpufleet-insight`'s score card, alert values (`named_values`), disk outlook and digest —
//! and nothing else; the full sample is what the store gets.
//!
//! Kept: the time and every host number (CPU by mode, load, memory, swap, OOM kills, uptime,
//! CPUs), the GPU driver, every disk's mount and sizes, every GPU's readings, every container's
//! name and the fields its status is judged on (state, health, restarts, OOM kill, exit code,
//! stopped on purpose), every model server's name, kind and whether it is up.
//! Emptied: the host name, file system types, GPU uuids, names and processes, container ids,
//! images and health logs, model server URLs, models, slots and errors, probe errors. The network
//! interfaces become one entry with an empty `iface` holding their summed rates (readers use the
//! sums only; the sums are the same numbers). Every list is allocated at its exact length.
//!
//! A simulated 8-GPU host's sample as parsed from the agent's JSON asks for 4.7 KB of heap (5.6 KB
//! of RSS per host with 10,000 hosts); its compact copy 3.2 KB (3.6 KB of RSS), most of it the
//! eight `GpuState`s (the ignored test `measure_a_sim_host_entry` prints these figures).

use gpufleet_agent::wire::{ContainerState, Disk, GpuState, HostMetrics, ModelServerState, Net};

/// The compact copy of `m`; see the module docs.
pub fn compact(m: &HostMetrics) -> HostMetrics {
    let net = if m.net.is_empty() {
        Vec::new()
    } else {
        vec![Net { iface: String::new(), rx_bytes_per_s: m.net.iter().map(|n| n.rx_bytes_per_s).sum(), tx_bytes_per_s: m.net.iter().map(|n| n.tx_bytes_per_s).sum() }]
    };
    HostMetrics {
        host: String::new(),
        time_ms: m.time_ms,
        cpu: m.cpu,
        cpu_window_ms: m.cpu_window_ms,
        cpus: m.cpus,
        load: m.load,
        mem_total_bytes: m.mem_total_bytes,
        mem_available_bytes: m.mem_available_bytes,
        swap_total_bytes: m.swap_total_bytes,
        swap_used_bytes: m.swap_used_bytes,
        swap_cached_bytes: m.swap_cached_bytes,
        oom_kills: m.oom_kills,
        disks: m.disks.iter().map(disk).collect(),
        net,
        uptime_s: m.uptime_s,
        gpu_driver: m.gpu_driver.clone(),
        gpus: m.gpus.iter().map(gpu).collect(),
        containers: m.containers.iter().map(container).collect(),
        model_servers: m.model_servers.iter().map(model_server).collect(),
        probe_errors: Vec::new(),
    }
}

fn disk(d: &Disk) -> Disk {
    Disk { mount: d.mount.clone(), fs: String::new(), total_bytes: d.total_bytes, used_bytes: d.used_bytes, free_bytes: d.free_bytes }
}

fn gpu(g: &GpuState) -> GpuState {
    // Destructured so that a field added to the wire type needs a decision here.
    let GpuState {
        index,
        uuid: _,
        name: _,
        util_percent,
        mem_util_percent,
        memory_used_bytes,
        memory_total_bytes,
        temperature_c,
        power_w,
        power_limit_w,
        sm_clock_mhz,
        mem_clock_mhz,
        xid_errors,
        last_xid,
        processes: _,
    } = g;
    GpuState {
        index: *index,
        uuid: String::new(),
        name: String::new(),
        util_percent: *util_percent,
        mem_util_percent: *mem_util_percent,
        memory_used_bytes: *memory_used_bytes,
        memory_total_bytes: *memory_total_bytes,
        temperature_c: *temperature_c,
        power_w: *power_w,
        power_limit_w: *power_limit_w,
        sm_clock_mhz: *sm_clock_mhz,
        mem_clock_mhz: *mem_clock_mhz,
        xid_errors: *xid_errors,
        last_xid: *last_xid,
        processes: Vec::new(),
    }
}

fn container(c: &ContainerState) -> ContainerState {
    let ContainerState { id: _, name, image: _, state, health, health_log: _, restart_count, oom_killed, exit_code, stopped_on_purpose } = c;
    ContainerState {
        id: String::new(),
        name: name.clone(),
        image: String::new(),
        state: state.clone(),
        health: health.clone(),
        health_log: Vec::new(),
        restart_count: *restart_count,
        oom_killed: *oom_killed,
        exit_code: *exit_code,
        stopped_on_purpose: *stopped_on_purpose,
    }
}

fn model_server(s: &ModelServerState) -> ModelServerState {
    let ModelServerState { name, kind, url: _, up, models: _, slots_busy: _, slots_total: _, queued: _, error: _ } = s;
    ModelServerState { name: name.clone(), kind: *kind, url: String::new(), up: *up, models: Vec::new(), slots_busy: None, slots_total: None, queued: None, error: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lean::LeanReport;
    use gpufleet_agent::health::{container_component, model_server_component};
    use gpufleet_agent::sim::host::SimHostState;
    use gpufleet_agent::wire::{Component, HealthReport, Status};
    use gpufleet_agent::Scenario;
    use std::mem::size_of;
    use std::sync::Arc;

    fn sim(scenario: Scenario) -> SimHostState {
        SimHostState::new("sim-host-1234".into(), 1234, 8, scenario, None)
    }

    /// A sample as the metrics worker has it: the agent's JSON parsed.
    fn parsed(s: &SimHostState) -> HostMetrics {
        serde_json::from_slice(&serde_json::to_vec(&s.metrics(1_000)).unwrap()).unwrap()
    }

    #[test]
    fn the_compact_copy_keeps_what_scores_and_alerts_read() {
        let scenarios = [Scenario::Healthy, Scenario::Degraded, Scenario::GpuXid, Scenario::ContainerFlapping { period_ms: 1_000 }];
        for scenario in scenarios {
            let mut full = parsed(&sim(scenario.clone()));
            full.net.push(Net { iface: "eth1".into(), rx_bytes_per_s: 1.5, tx_bytes_per_s: 2.25 });
            let c = compact(&full);
            let rx: f64 = full.net.iter().map(|n| n.rx_bytes_per_s).sum();
            let tx: f64 = full.net.iter().map(|n| n.tx_bytes_per_s).sum();
            assert_eq!(c.net.iter().map(|n| n.rx_bytes_per_s).sum::<f64>(), rx, "{scenario:?}");
            assert_eq!(c.net.iter().map(|n| n.tx_bytes_per_s).sum::<f64>(), tx, "{scenario:?}");
            let numbers = |m: &HostMetrics| (m.time_ms, m.cpu, m.load, m.mem_total_bytes, m.mem_available_bytes, m.swap_used_bytes, m.oom_kills, m.uptime_s);
            assert_eq!(numbers(&c), numbers(&full));
            let disks = |m: &HostMetrics| m.disks.iter().map(|d| (d.mount.clone(), d.used_percent(), d.free_bytes)).collect::<Vec<_>>();
            assert_eq!(disks(&c), disks(&full));
            let gpus = |m: &HostMetrics| m.gpus.iter().map(|g| (g.util_percent, g.memory_used_bytes, g.memory_total_bytes, g.temperature_c, g.xid_errors)).collect::<Vec<_>>();
            assert_eq!(gpus(&c), gpus(&full));
            assert_eq!(c.gpus.len(), 8);
            let containers = |m: &HostMetrics| m.containers.iter().map(|x| (x.name.clone(), container_component(x).status)).collect::<Vec<_>>();
            assert_eq!(containers(&c), containers(&full));
            let servers = |m: &HostMetrics| m.model_servers.iter().map(|s| (s.name.clone(), s.up, model_server_component(s).status)).collect::<Vec<_>>();
            assert_eq!(servers(&c), servers(&full));
        }
        let flapping = compact(&parsed(&sim(Scenario::ContainerFlapping { period_ms: 60_000 })));
        assert!(flapping.containers.iter().any(|x| container_component(x).status != Status::Ok), "an unhealthy container stays unhealthy");
    }

    fn string(s: &str) -> usize {
        s.len()
    }

    /// Heap bytes asked for by one sample (capacities; malloc adds 8–16 bytes per block).
    fn heap_bytes(m: &HostMetrics) -> usize {
        let mut n = string(&m.host) + m.disks.capacity() * size_of::<Disk>() + m.net.capacity() * size_of::<Net>();
        n += m.disks.iter().map(|d| string(&d.mount) + string(&d.fs)).sum::<usize>();
        n += m.net.iter().map(|x| string(&x.iface)).sum::<usize>();
        n += m.gpus.capacity() * size_of::<GpuState>() + m.gpus.iter().map(|g| string(&g.uuid) + string(&g.name) + g.processes.capacity() * size_of::<gpufleet_agent::wire::GpuProcess>()).sum::<usize>();
        n += m.containers.capacity() * size_of::<ContainerState>();
        n += m.containers.iter().map(|c| string(&c.id) + string(&c.name) + string(&c.image) + string(&c.state) + c.health.as_deref().map_or(0, string) + c.health_log.iter().map(|l| 24 + l.len()).sum::<usize>()).sum::<usize>();
        n += m.model_servers.capacity() * size_of::<ModelServerState>();
        n += m.model_servers.iter().map(|s| string(&s.name) + string(&s.url) + s.models.iter().map(|l| 24 + l.len()).sum::<usize>() + s.error.as_deref().map_or(0, string)).sum::<usize>();
        n + size_of::<HostMetrics>() + 16
    }

    fn vm_rss_kb() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
    }

    /// RSS growth of this process (kB) while `build` makes and keeps 10,000 entries.
    fn grows<T>(build: impl Fn(i64) -> T) -> (u64, Vec<T>) {
        let before = vm_rss_kb();
        let kept: Vec<T> = (0..10_000).map(build).collect();
        (vm_rss_kb().saturating_sub(before), kept)
    }

    /// Measures what one simulated host costs in the two per-host caches (`Fleet::latest` and
    /// `gpufleet-insight`'s `ReportCache`), as kept before and compact: heap bytes asked for, and
    /// the growth of this process's RSS with 10,000 hosts (glibc malloc, so block headers and
    /// rounding included). Compact entries are built first (freed memory is reused, not given
    /// back). Run alone:
    /// `cargo test -p gpufleet-fleet --lib measure_a_sim_host_entry -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; prints figures"]
    fn measure_a_sim_host_entry() {
        let host = sim(Scenario::Healthy);
        let metrics_json = serde_json::to_vec(&host.metrics(1_000)).unwrap();
        let report_json = serde_json::to_vec(&host.report()).unwrap();
        let metrics = || serde_json::from_slice::<HostMetrics>(&metrics_json).unwrap();
        let lean = || serde_json::from_slice::<LeanReport>(&report_json).unwrap().0.components;
        let full = metrics();
        println!("host metrics: JSON {} B; heap asked for: parsed {} B, compact {} B", metrics_json.len(), heap_bytes(&full), heap_bytes(&compact(&full)));
        let components = lean();
        println!("health report: JSON {} B, {} components, {} not ok", report_json.len(), components.len(), components.iter().filter(|c| c.status != Status::Ok).count());

        let (m_compact, a) = grows(|_| Arc::new(compact(&metrics())));
        let (r_compact, b) = grows(|id| {
            let kept: Vec<Component> = lean().into_iter().filter(|c| c.status != Status::Ok).collect();
            Arc::new(HealthReport::new(id.to_string(), "", 1, kept))
        });
        let (m_full, c) = grows(|_| Arc::new(metrics()));
        let (r_full, d) = grows(|id| Arc::new(HealthReport::new(id.to_string(), "", 1, lean().clone())));
        let per_host = |kb: u64| kb * 1024 / 10_000;
        println!("RSS growth per host, 10,000 hosts: latest metrics {} B before, {} B compact; last report {} B before, {} B compact", per_host(m_full), per_host(m_compact), per_host(r_full), per_host(r_compact));
        assert_eq!((a.len(), b.len(), c.len(), d.len()), (10_000, 10_000, 10_000, 10_000));
        assert!(heap_bytes(&compact(&full)) < heap_bytes(&full));
    }
}
