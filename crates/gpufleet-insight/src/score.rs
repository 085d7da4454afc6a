//! The score card: 0–100 per host from six dimensions, each with its points, its maximum, the
//! measured value and a one-line reason (the drill-down), and the fleet score over many cards.
//!
//! | dimension | max | points |
//! |---|---|---|
//! | CPU steal | 20 | < 2 % → 20, < 5 % → 15, < 10 % → 10, else 5 |
//! | memory available | 20 | > T₁ → 20, > T₂ → 15, > T₃ → 5, else 0 (see below) |
//! | disk used (fullest file system) | 15 | < 40 % → 15, < 55 % → 10, < 70 % → 5, else 0 |
//! | service health (unhealthy containers + model servers down) | 20 | 0 → 20, 1–2 → 15, 3–5 → 8, 6+ → 2 |
//! | maintenance hygiene (age of the last cleanup job) | 15 | < 7 days → 15, < 30 days → 8, else or never → 0 |
//! | LLM/GPU readiness | 10 | the largest configured model fits in free VRAM (all GPUs together) or in available RAM → 10, else 0; no model configured → 10 |
//!
//! **Memory thresholds relative to total memory.** The absolute thresholds 6 / 3 / 1 GiB are fair
//! for hosts of 32–100 GiB. A host with less than 32 GiB could never reach 6 GiB free, so its
//! thresholds shrink in proportion (a 16 GiB host needs 3 / 1.5 / 0.5 GiB); a host with more than
//! 100 GiB would score full points while nearly out of memory (6 GiB is 1.2 % of 512 GiB), so its
//! thresholds are the same share as on a 100 GiB host: 6 % / 3 % / 1 % of total. In one formula:
//! `Tₖ = max(absₖ · min(1, total / 32 GiB), pctₖ · total)`. A host reporting no total is judged on
//! the absolute thresholds.
//!
//! **Missing data.** A dimension whose input is unknown (no metrics sample: the host is unreachable
//! or was never sampled) scores 0 with the reason "no sample": a host we cannot see is not healthy.
//! Comparisons are strict as in the table, so a value exactly on a threshold gets the lower points.
//!
//! **Fleet score** ([`fleet_score`]): the unweighted mean of the host totals (every host counts
//! once, whatever its size), leaving out hosts in maintenance (they are expected to look bad); the
//! per-dimension means are reported beside it, and the lowest-scoring hosts first.

use gpufleet_agent::health::{container_component, human_bytes, model_server_component};
use gpufleet_agent::wire::{HostMetrics, Status};
use serde::{Deserialize, Serialize};

const GIB: u64 = 1 << 30;
const DAY_MS: i64 = 86_400_000;

/// Memory totals at or below this scale the absolute thresholds down.
pub const MEM_REFERENCE_BYTES: u64 = 32 * GIB;
/// Absolute memory thresholds for 20, 15 and 5 points.
pub const MEM_ABS_THRESHOLDS: [u64; 3] = [6 * GIB, 3 * GIB, GIB];
/// Share of total memory for 20, 15 and 5 points on large hosts.
pub const MEM_PCT_THRESHOLDS: [f64; 3] = [0.06, 0.03, 0.01];

/// One of the six things a host is scored on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// CPU time stolen by the hypervisor.
    CpuSteal,
    /// Memory available.
    Memory,
    /// Fullest file system.
    Disk,
    /// Unhealthy containers and model servers down.
    ServiceHealth,
    /// Age of the last cleanup job.
    MaintenanceHygiene,
    /// Room for the largest configured model.
    LlmReadiness,
}

impl Dimension {
    /// Every dimension in display order.
    pub const ALL: [Dimension; 6] =
        [Dimension::CpuSteal, Dimension::Memory, Dimension::Disk, Dimension::ServiceHealth, Dimension::MaintenanceHygiene, Dimension::LlmReadiness];

    /// The most points this dimension gives.
    pub fn max_points(self) -> u32 {
        match self {
            Dimension::CpuSteal | Dimension::Memory | Dimension::ServiceHealth => 20,
            Dimension::Disk | Dimension::MaintenanceHygiene => 15,
            Dimension::LlmReadiness => 10,
        }
    }
}

/// One dimension's result: the drill-down line of the card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DimensionScore {
    /// Which dimension.
    pub dimension: Dimension,
    /// Points given.
    pub points: u32,
    /// Most points possible.
    pub max: u32,
    /// The measured value (`None` when unknown).
    pub value: Option<f64>,
    /// Unit of `value`: `percent`, `bytes`, `count`, `days`.
    pub unit: String,
    /// Why these points, for a person.
    pub reason: String,
}

/// A host's score card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreCard {
    /// Host id.
    pub host: String,
    /// Sum of the dimension points, 0–100.
    pub total: u32,
    /// Always 100.
    pub max: u32,
    /// Each dimension, in [`Dimension::ALL`] order.
    pub dimensions: Vec<DimensionScore>,
    /// When it was computed, epoch ms.
    pub time_ms: i64,
}

impl ScoreCard {
    /// The dimension's line.
    pub fn dimension(&self, d: Dimension) -> Option<&DimensionScore> {
        self.dimensions.iter().find(|s| s.dimension == d)
    }

    /// The dimension that lost the most points (ties: the first in display order); `None` at 100.
    pub fn weakest(&self) -> Option<&DimensionScore> {
        self.dimensions.iter().filter(|d| d.points < d.max).max_by_key(|d| (d.max - d.points, std::cmp::Reverse(d.dimension as u8)))
    }
}

/// Everything the score is computed from. Build it with [`ScoreInput::from_metrics`] or by hand.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreInput {
    /// CPU steal, percent.
    pub steal_percent: Option<f64>,
    /// `MemAvailable`, bytes.
    pub mem_available_bytes: Option<u64>,
    /// `MemTotal`, bytes (0 or `None`: judged on absolute thresholds).
    pub mem_total_bytes: Option<u64>,
    /// Used percent of the fullest file system, and its mount point.
    pub disk_used_pct: Option<(f64, String)>,
    /// Names of unhealthy containers and model servers that are down.
    pub unhealthy_services: Option<Vec<String>>,
    /// When the last cleanup job finished, epoch ms (`None`: never).
    pub last_cleanup_ms: Option<i64>,
    /// Size of the largest model configured for this host, bytes (`None`: none configured).
    pub largest_model_bytes: Option<u64>,
    /// Free VRAM over all GPUs, bytes (`None`: no GPU or unknown).
    pub free_vram_bytes: Option<u64>,
}

impl ScoreInput {
    /// The input from a host's last metrics sample (`None`: no sample) plus what the metrics do
    /// not carry.
    pub fn from_metrics(m: Option<&HostMetrics>, last_cleanup_ms: Option<i64>, largest_model_bytes: Option<u64>) -> Self {
        let Some(m) = m else { return Self { last_cleanup_ms, largest_model_bytes, ..Self::default() } };
        let disk = m
            .disks
            .iter()
            .map(|d| (d.used_percent(), d.mount.clone()))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap_or_else(|| (0.0, String::new()));
        let mut unhealthy: Vec<String> = m.containers.iter().filter(|c| container_component(c).status != Status::Ok).map(|c| format!("container {}", c.name)).collect();
        unhealthy.extend(m.model_servers.iter().filter(|s| model_server_component(s).status != Status::Ok).map(|s| format!("model server {}", s.name)));
        let free_vram = m
            .gpus
            .iter()
            .filter_map(|g| Some(g.memory_total_bytes?.saturating_sub(g.memory_used_bytes?)))
            .fold(None, |acc: Option<u64>, f| Some(acc.unwrap_or(0).saturating_add(f)));
        Self {
            steal_percent: Some(m.cpu.steal),
            mem_available_bytes: Some(m.mem_available_bytes),
            mem_total_bytes: Some(m.mem_total_bytes),
            disk_used_pct: Some(disk),
            unhealthy_services: Some(unhealthy),
            last_cleanup_ms,
            largest_model_bytes,
            free_vram_bytes: free_vram,
        }
    }
}

/// The score card of `host` at `now_ms`.
pub fn score(host: &str, input: &ScoreInput, now_ms: i64) -> ScoreCard {
    let dimensions = vec![
        score_steal(input.steal_percent),
        score_memory(input.mem_available_bytes, input.mem_total_bytes),
        score_disk(input.disk_used_pct.as_ref().map(|(p, m)| (*p, m.as_str()))),
        score_services(input.unhealthy_services.as_deref()),
        score_hygiene(input.last_cleanup_ms, now_ms),
        score_readiness(input.largest_model_bytes, input.free_vram_bytes, input.mem_available_bytes),
    ];
    let total = dimensions.iter().map(|d| d.points).sum();
    ScoreCard { host: host.to_owned(), total, max: 100, dimensions, time_ms: now_ms }
}

fn line(dimension: Dimension, points: u32, value: Option<f64>, unit: &str, reason: String) -> DimensionScore {
    DimensionScore { dimension, points, max: dimension.max_points(), value, unit: unit.to_owned(), reason }
}

fn no_sample(dimension: Dimension, unit: &str) -> DimensionScore {
    line(dimension, 0, None, unit, "no sample: the host has not been measured (unreachable or new)".into())
}

/// CPU steal: < 2 % → 20, < 5 % → 15, < 10 % → 10, else 5.
pub fn score_steal(steal: Option<f64>) -> DimensionScore {
    let d = Dimension::CpuSteal;
    let Some(s) = steal.filter(|s| s.is_finite()) else { return no_sample(d, "percent") };
    let (points, band) = if s < 2.0 {
        (20, "below 2 %")
    } else if s < 5.0 {
        (15, "2–5 %: neighbours on the hypervisor take some CPU")
    } else if s < 10.0 {
        (10, "5–10 %: the hypervisor is overcommitted")
    } else {
        (5, "10 % or more: move work off this host or ask for dedicated CPUs")
    };
    line(d, points, Some(s), "percent", format!("CPU steal {s:.1} % ({band})"))
}

/// The three memory thresholds (20, 15, 5 points) for a host with `total` bytes (module docs).
pub fn memory_thresholds(total: Option<u64>) -> [u64; 3] {
    let total = total.unwrap_or(0);
    let scale = if total == 0 { 1.0 } else { (total as f64 / MEM_REFERENCE_BYTES as f64).min(1.0) };
    let mut out = [0u64; 3];
    for (k, t) in out.iter_mut().enumerate() {
        let abs = (MEM_ABS_THRESHOLDS[k] as f64 * scale) as u64;
        let pct = (MEM_PCT_THRESHOLDS[k] * total as f64) as u64;
        *t = abs.max(pct);
    }
    out
}

/// Memory available: > T₁ → 20, > T₂ → 15, > T₃ → 5, else 0 ([`memory_thresholds`]).
pub fn score_memory(available: Option<u64>, total: Option<u64>) -> DimensionScore {
    let d = Dimension::Memory;
    let Some(a) = available else { return no_sample(d, "bytes") };
    let [t1, t2, t3] = memory_thresholds(total);
    let points = if a > t1 {
        20
    } else if a > t2 {
        15
    } else if a > t3 {
        5
    } else {
        0
    };
    let of = total.filter(|t| *t > 0).map_or_else(String::new, |t| format!(" of {}", human_bytes(t)));
    let next = match points {
        20 => format!("above {}", human_bytes(t1)),
        15 => format!("{} needed for full points", human_bytes(t1 + 1)),
        5 => format!("below {} — memory is tight", human_bytes(t2 + 1)),
        _ => format!("at most {} — the host is about to swap or OOM", human_bytes(t3)),
    };
    line(d, points, Some(a as f64), "bytes", format!("{} available{of} ({next})", human_bytes(a)))
}

/// Disk used on the fullest file system: < 40 % → 15, < 55 % → 10, < 70 % → 5, else 0.
pub fn score_disk(fullest: Option<(f64, &str)>) -> DimensionScore {
    let d = Dimension::Disk;
    let Some((p, mount)) = fullest.filter(|(p, _)| p.is_finite()) else { return no_sample(d, "percent") };
    if mount.is_empty() {
        return line(d, 15, Some(p), "percent", "no file systems reported".into());
    }
    let points = if p < 40.0 {
        15
    } else if p < 55.0 {
        10
    } else if p < 70.0 {
        5
    } else {
        0
    };
    let hint = if points == 15 { "" } else { "; clean up or grow it" };
    line(d, points, Some(p), "percent", format!("{mount} is {p:.1} % used (the fullest file system){hint}"))
}

/// Unhealthy services: 0 → 20, 1–2 → 15, 3–5 → 8, 6+ → 2.
pub fn score_services(unhealthy: Option<&[String]>) -> DimensionScore {
    let d = Dimension::ServiceHealth;
    let Some(list) = unhealthy else { return no_sample(d, "count") };
    let n = list.len();
    let points = match n {
        0 => 20,
        1..=2 => 15,
        3..=5 => 8,
        _ => 2,
    };
    let reason = if n == 0 {
        "every container and model server is healthy".to_owned()
    } else {
        let shown: Vec<&str> = list.iter().take(5).map(String::as_str).collect();
        let more = if n > 5 { format!(" and {} more", n - 5) } else { String::new() };
        format!("{n} unhealthy: {}{more}", shown.join(", "))
    };
    line(d, points, Some(n as f64), "count", reason)
}

/// Last cleanup: < 7 days → 15, < 30 days → 8, else or never → 0.
pub fn score_hygiene(last_cleanup_ms: Option<i64>, now_ms: i64) -> DimensionScore {
    let d = Dimension::MaintenanceHygiene;
    let Some(at) = last_cleanup_ms else { return line(d, 0, None, "days", "no cleanup job has run on this host".into()) };
    let age_ms = now_ms.saturating_sub(at).max(0);
    let days = age_ms as f64 / DAY_MS as f64;
    let points = if age_ms < 7 * DAY_MS {
        15
    } else if age_ms < 30 * DAY_MS {
        8
    } else {
        0
    };
    let hint = if points == 15 { "" } else { "; schedule a cleanup" };
    line(d, points, Some(days), "days", format!("last cleanup job {days:.1} days ago{hint}"))
}

/// Readiness for the largest configured model: fits in free VRAM or available RAM → 10, else 0.
pub fn score_readiness(model: Option<u64>, free_vram: Option<u64>, mem_available: Option<u64>) -> DimensionScore {
    let d = Dimension::LlmReadiness;
    let Some(size) = model else { return line(d, 10, None, "bytes", "no model configured for this host".into()) };
    if free_vram.is_none() && mem_available.is_none() {
        return no_sample(d, "bytes");
    }
    let need = human_bytes(size);
    if let Some(v) = free_vram.filter(|v| *v >= size) {
        return line(d, 10, Some(v as f64), "bytes", format!("{} VRAM free: the largest model ({need}) fits on the GPUs", human_bytes(v)));
    }
    if let Some(r) = mem_available.filter(|r| *r >= size) {
        return line(d, 10, Some(r as f64), "bytes", format!("{} RAM available: the largest model ({need}) fits in RAM (not in free VRAM)", human_bytes(r)));
    }
    let best = free_vram.unwrap_or(0).max(mem_available.unwrap_or(0));
    line(d, 0, Some(best as f64), "bytes", format!("the largest model ({need}) fits neither in free VRAM nor in available RAM (best {})", human_bytes(best)))
}

/// The fleet's score: see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetScore {
    /// Mean host total (0 when no host counts).
    pub score: f64,
    /// Hosts averaged.
    pub hosts: usize,
    /// Hosts left out because they are in maintenance.
    pub in_maintenance: usize,
    /// Mean points per dimension, in [`Dimension::ALL`] order.
    pub dimensions: Vec<FleetDimension>,
    /// Up to 10 lowest-scoring hosts, lowest first: `(host, total)`.
    pub lowest: Vec<(String, u32)>,
}

/// One dimension's mean over the fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetDimension {
    /// Which dimension.
    pub dimension: Dimension,
    /// Mean points.
    pub mean_points: f64,
    /// Most points possible.
    pub max: u32,
}

/// The fleet score over `cards`, each with whether its host is in maintenance.
pub fn fleet_score<'a>(cards: impl IntoIterator<Item = (&'a ScoreCard, bool)>) -> FleetScore {
    let mut counted: Vec<&ScoreCard> = Vec::new();
    let mut in_maintenance = 0;
    for (card, maintenance) in cards {
        if maintenance {
            in_maintenance += 1;
        } else {
            counted.push(card);
        }
    }
    let n = counted.len();
    let mean = |f: &dyn Fn(&ScoreCard) -> u32| if n == 0 { 0.0 } else { counted.iter().map(|c| f64::from(f(c))).sum::<f64>() / n as f64 };
    let dimensions = Dimension::ALL
        .iter()
        .map(|d| FleetDimension { dimension: *d, mean_points: mean(&|c| c.dimension(*d).map_or(0, |s| s.points)), max: d.max_points() })
        .collect();
    let mut lowest: Vec<(String, u32)> = counted.iter().map(|c| (c.host.clone(), c.total)).collect();
    lowest.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    lowest.truncate(10);
    FleetScore { score: mean(&|c| c.total), hosts: n, in_maintenance, dimensions, lowest }
}

#[cfg(test)]
#[path = "score_tests.rs"]
mod tests;
