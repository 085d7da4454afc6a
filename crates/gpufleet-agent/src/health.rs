//! The rules that turn one [`HostMetrics`] sample into [`Component`]s, and so a host's
//! [`HealthReport`]. Pure functions, shared by the real agent and the simulated fleet.
//!
//! | component | ok | warn | critical |
//! |---|---|---|---|
//! | `agent` | sampled recently | a source could not be read ([`HostMetrics::probe_errors`]); or the last sample is older than 3 sample intervals | — |
//! | `cpu` | always (informational: busy %, steal %, load) | — | — |
//! | `memory` | otherwise | available < 5 % of total | an OOM kill since the agent started (`/proc/vmstat` `oom_kill` grew) |
//! | `swap` | always (informational: used, SwapCached) | — | — |
//! | `disk:<mount>` | ≤ 85 % used | > 85 % used | > 95 % used (`used / (used + available)`, as `df`) |
//! | `gpu` (no GPUs listed) | no NVIDIA driver (a CPU host) | NVML loaded but failed | — |
//! | `gpu:<index>` | otherwise | — | a critical XID error since the agent started |
//! | `container:<name>` | running and not unhealthy, or stopped on purpose | health check `unhealthy`; `restarting`; exited/dead without being stopped on purpose | — |
//! | `model_server:<name>` | up | a configured model server is down | — |
//!
//! The host's status is the worst component status.

use crate::wire::{Component, ComponentKind, ContainerState, Disk, GpuDriver, GpuState, HealthReport, HostMetrics, ModelServerState, Status};
use serde_json::json;

/// Disk used above this percentage → `warn`.
pub const DISK_WARN_PERCENT: f64 = 85.0;
/// Disk used above this percentage → `critical`.
pub const DISK_CRITICAL_PERCENT: f64 = 95.0;
/// Memory available below this percentage of total → `warn`.
pub const MEM_AVAILABLE_WARN_PERCENT: f64 = 5.0;

/// What the agent knows about itself when it builds a report.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentInfo {
    /// Version string reported in [`HealthReport::agent_version`].
    pub version: String,
    /// Age of the sample the report is built from, ms.
    pub sample_age_ms: u64,
    /// The configured sampling interval, ms (a sample older than 3 of these is stale).
    pub sample_interval_ms: u64,
}

/// A full report: every component of `m` under the rules above, timed `now_ms`.
pub fn report(m: &HostMetrics, agent: &AgentInfo, now_ms: i64) -> HealthReport {
    HealthReport::new(m.host.clone(), agent.version.clone(), now_ms, components(m, agent))
}

/// Every component of one sample, in the documented order.
pub fn components(m: &HostMetrics, agent: &AgentInfo) -> Vec<Component> {
    let mut out = Vec::with_capacity(4 + m.disks.len() + m.gpus.len().max(1) + m.containers.len() + m.model_servers.len());
    out.push(agent_component(m, agent));
    out.push(cpu_component(m));
    out.push(memory_component(m));
    out.push(swap_component(m));
    out.extend(m.disks.iter().map(disk_component));
    if m.gpus.is_empty() {
        out.push(gpu_driver_component(&m.gpu_driver));
    } else {
        out.extend(m.gpus.iter().map(gpu_component));
    }
    out.extend(m.containers.iter().map(container_component));
    out.extend(m.model_servers.iter().map(model_server_component));
    out
}

fn component(name: String, kind: ComponentKind, status: Status, message: String, detail: serde_json::Value) -> Component {
    Component { name, kind, status, message, detail }
}

/// `agent`: warns on probe errors and on a stale sample.
pub fn agent_component(m: &HostMetrics, agent: &AgentInfo) -> Component {
    let stale = agent.sample_interval_ms > 0 && agent.sample_age_ms > agent.sample_interval_ms.saturating_mul(3);
    let (status, message) = if let Some(first) = m.probe_errors.first() {
        let more = m.probe_errors.len() - 1;
        let tail = if more > 0 { format!(" (and {more} more)") } else { String::new() };
        (Status::Warn, format!("cannot read {}: {}{tail}", first.source, first.error))
    } else if stale {
        (Status::Warn, format!("last sample is {} ms old (interval {} ms): sampling is stuck", agent.sample_age_ms, agent.sample_interval_ms))
    } else {
        (Status::Ok, format!("agent {} sampling every {} ms", agent.version, agent.sample_interval_ms))
    };
    let detail = json!({
        "version": agent.version,
        "sample_age_ms": agent.sample_age_ms,
        "sample_interval_ms": agent.sample_interval_ms,
        "probe_errors": m.probe_errors,
    });
    component("agent".into(), ComponentKind::Agent, status, message, detail)
}

/// `cpu`: informational.
pub fn cpu_component(m: &HostMetrics) -> Component {
    let busy = (100.0 - m.cpu.idle - m.cpu.iowait).max(0.0);
    let window = if m.cpu_window_ms == 0 { "since boot".to_owned() } else { format!("over {:.1} s", m.cpu_window_ms as f64 / 1000.0) };
    let message = format!(
        "{busy:.1} % busy, {:.1} % steal {window}; load {:.2} {:.2} {:.2} on {} CPUs",
        m.cpu.steal, m.load[0], m.load[1], m.load[2], m.cpus
    );
    let detail = json!({ "percent": m.cpu, "window_ms": m.cpu_window_ms, "load": m.load, "cpus": m.cpus });
    component("cpu".into(), ComponentKind::Cpu, Status::Ok, message, detail)
}

/// `memory`: critical on OOM kills, warn when available < 5 %.
pub fn memory_component(m: &HostMetrics) -> Component {
    let avail_pct = if m.mem_total_bytes == 0 { 100.0 } else { m.mem_available_bytes as f64 * 100.0 / m.mem_total_bytes as f64 };
    let oom = m.oom_kills.unwrap_or(0);
    let (status, message) = if oom > 0 {
        (Status::Critical, format!("{oom} OOM kill(s) since the agent started; {avail_pct:.1} % memory available"))
    } else if avail_pct < MEM_AVAILABLE_WARN_PERCENT {
        (Status::Warn, format!("only {avail_pct:.1} % memory available ({} of {})", human_bytes(m.mem_available_bytes), human_bytes(m.mem_total_bytes)))
    } else {
        (Status::Ok, format!("{avail_pct:.1} % available ({} of {})", human_bytes(m.mem_available_bytes), human_bytes(m.mem_total_bytes)))
    };
    let detail = json!({
        "total_bytes": m.mem_total_bytes,
        "available_bytes": m.mem_available_bytes,
        "available_percent": avail_pct,
        "oom_kills": m.oom_kills,
    });
    component("memory".into(), ComponentKind::Memory, status, message, detail)
}

/// `swap`: informational.
pub fn swap_component(m: &HostMetrics) -> Component {
    let message = if m.swap_total_bytes == 0 {
        "no swap".to_owned()
    } else {
        format!("{} of {} used, {} cached", human_bytes(m.swap_used_bytes), human_bytes(m.swap_total_bytes), human_bytes(m.swap_cached_bytes))
    };
    let detail = json!({ "total_bytes": m.swap_total_bytes, "used_bytes": m.swap_used_bytes, "cached_bytes": m.swap_cached_bytes });
    component("swap".into(), ComponentKind::Swap, Status::Ok, message, detail)
}

/// `disk:<mount>`: > 85 % warn, > 95 % critical.
pub fn disk_component(d: &Disk) -> Component {
    let pct = d.used_percent();
    let status = if pct > DISK_CRITICAL_PERCENT {
        Status::Critical
    } else if pct > DISK_WARN_PERCENT {
        Status::Warn
    } else {
        Status::Ok
    };
    let message = format!("{pct:.1} % used, {} free of {} ({})", human_bytes(d.free_bytes), human_bytes(d.total_bytes), d.fs);
    let detail = json!({ "mount": d.mount, "fs": d.fs, "used_percent": pct, "total_bytes": d.total_bytes, "used_bytes": d.used_bytes, "free_bytes": d.free_bytes });
    component(format!("disk:{}", d.mount), ComponentKind::Disk, status, message, detail)
}

/// `gpu` when no GPU is listed: ok without a driver, warn when NVML failed.
pub fn gpu_driver_component(driver: &GpuDriver) -> Component {
    let (status, message) = match driver {
        GpuDriver::Absent => (Status::Ok, crate::nvml::NO_DRIVER_MESSAGE.to_owned()),
        GpuDriver::Loaded { driver_version } => (Status::Ok, format!("NVIDIA driver {driver_version}, no GPUs")),
        GpuDriver::Failed { error } => (Status::Warn, format!("NVML failed: {error}")),
    };
    component("gpu".into(), ComponentKind::Gpu, status, message, json!({ "driver": driver }))
}

/// `gpu:<index>`: critical after an XID error.
pub fn gpu_component(g: &GpuState) -> Component {
    let status = if g.xid_errors > 0 { Status::Critical } else { Status::Ok };
    let message = if g.xid_errors > 0 {
        format!("{} XID error(s) since the agent started, last XID {}", g.xid_errors, g.last_xid.map_or_else(|| "unknown".to_owned(), |x| x.to_string()))
    } else {
        let util = g.util_percent.map_or_else(|| "?".to_owned(), |u| format!("{u:.0}"));
        let temp = g.temperature_c.map_or_else(|| "?".to_owned(), |t| format!("{t:.0}"));
        format!("{} {util} % busy, {temp} °C", g.name)
    };
    let detail = serde_json::to_value(g).unwrap_or(serde_json::Value::Null);
    component(format!("gpu:{}", g.index), ComponentKind::Gpu, status, message, detail)
}

/// `container:<name>`: warn when unhealthy, restarting, or stopped without intent.
pub fn container_component(c: &ContainerState) -> Component {
    let unhealthy = c.health.as_deref() == Some("unhealthy");
    let (status, message) = if unhealthy {
        let last = c.health_log.last().map(String::as_str).unwrap_or("no health log");
        (Status::Warn, format!("unhealthy ({} restarts): {last}", c.restart_count))
    } else if c.state == "restarting" {
        (Status::Warn, format!("restarting ({} restarts so far)", c.restart_count))
    } else if matches!(c.state.as_str(), "exited" | "dead") && !c.stopped_on_purpose {
        let why = if c.oom_killed { "OOM-killed".to_owned() } else { format!("exit code {}", c.exit_code.unwrap_or(-1)) };
        (Status::Warn, format!("{} without being stopped on purpose ({why})", c.state))
    } else if c.stopped_on_purpose {
        (Status::Ok, format!("{} (stopped on purpose)", c.state))
    } else {
        let health = c.health.as_deref().map_or_else(String::new, |h| format!(", {h}"));
        (Status::Ok, format!("{}{health}, {} restarts", c.state, c.restart_count))
    };
    let detail = serde_json::to_value(c).unwrap_or(serde_json::Value::Null);
    component(format!("container:{}", c.name), ComponentKind::Container, status, message, detail)
}

/// `model_server:<name>`: warn when down.
pub fn model_server_component(s: &ModelServerState) -> Component {
    let (status, message) = if s.up {
        let slots = match (s.slots_busy, s.slots_total) {
            (Some(b), Some(t)) => format!(", {b}/{t} slots busy"),
            (Some(b), None) => format!(", {b} requests running"),
            _ => String::new(),
        };
        (Status::Ok, format!("up, {} model(s){slots}", s.models.len()))
    } else {
        (Status::Warn, format!("down: {}", s.error.as_deref().unwrap_or("no answer")))
    };
    let detail = serde_json::to_value(s).unwrap_or(serde_json::Value::Null);
    component(format!("model_server:{}", s.name), ComponentKind::ModelServer, status, message, detail)
}

/// `1.5 GiB`-style sizes for messages.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
