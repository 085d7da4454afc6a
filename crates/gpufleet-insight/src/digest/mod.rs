//! The weekly digest: per host the CPU steal average, disk used (now and its change over the
//! week), space freed by cleanup jobs, swap peak, unhealthy containers and the one action that
//! would help most — a pure function over the week's histories ([`host_digest`], [`build`]) with
//! text, Markdown and JSON renderers, and [`worker::DigestWorker`], which sends it every week.
//!
//! **Top action**, the first that applies:
//! 1. the fullest disk is at 85 % or more, or its trend reaches 90 % within 7 days → free space;
//! 2. containers are unhealthy now → fix them (named);
//! 3. steal averaged 5 % or more → move work off the host;
//! 4. swap peaked at 1 GiB or more → add memory or lower the load;
//! 5. the score card's weakest dimension, when it lost points → its advice;
//!
//! otherwise none. Hosts are listed with actions first (in that priority), then by score.

pub mod worker;

use crate::score::{Dimension, ScoreCard};
use crate::trend::human_days;
use gpufleet_agent::health::human_bytes;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Disk used at or above this is an action.
pub const DISK_ACTION_PCT: f64 = 85.0;
/// Steal average at or above this is an action.
pub const STEAL_ACTION_PCT: f64 = 5.0;
/// Swap peak at or above this is an action.
pub const SWAP_ACTION_BYTES: f64 = (1u64 << 30) as f64;

/// One host's week, as read from the stores.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DigestInput {
    /// Host id.
    pub host_id: String,
    /// Host name.
    pub host: String,
    /// `cpu_steal_pct` over the week.
    pub steal: Vec<(i64, f64)>,
    /// `disk_used_pct` (fullest mount) over the week.
    pub disk_used: Vec<(i64, f64)>,
    /// `swap_used_bytes` over the week.
    pub swap_used: Vec<(i64, f64)>,
    /// `containers_unhealthy` over the week.
    pub containers_unhealthy: Vec<(i64, f64)>,
    /// Containers unhealthy at digest time.
    pub unhealthy_now: Vec<String>,
    /// Bytes freed by cleanup jobs during the week (`None`: unknown).
    pub freed_bytes: Option<u64>,
    /// Days until the fullest disk reaches 90 % on its trend (`None`: not rising or unknown).
    pub disk_days_to_90: Option<f64>,
    /// The score card now.
    pub score: Option<ScoreCard>,
}

/// What to do, with its rank (1 most urgent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// 1–5, the rule of the module docs that produced it.
    pub priority: u8,
    /// The advice.
    pub text: String,
}

/// One host's digest line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostDigest {
    /// Host id.
    pub host_id: String,
    /// Host name.
    pub host: String,
    /// Mean CPU steal, %.
    pub steal_avg_pct: Option<f64>,
    /// Fullest disk at the end of the week, %.
    pub disk_used_pct: Option<f64>,
    /// Its change over the week, percentage points.
    pub disk_change_pct: Option<f64>,
    /// Freed by cleanup jobs, bytes.
    pub freed_bytes: Option<u64>,
    /// Highest swap use, bytes.
    pub swap_peak_bytes: Option<f64>,
    /// Most containers unhealthy at once.
    pub unhealthy_containers_max: Option<u32>,
    /// Containers unhealthy now.
    pub unhealthy_now: Vec<String>,
    /// Score now.
    pub score: Option<u32>,
    /// The one thing to do.
    pub top_action: Option<Action>,
}

/// The whole digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// Week start, epoch ms.
    pub from_ms: i64,
    /// Week end, epoch ms.
    pub to_ms: i64,
    /// Mean score of the hosts that have one.
    pub fleet_score: Option<f64>,
    /// Hosts with an action.
    pub hosts_with_actions: usize,
    /// Every host, actions first.
    pub hosts: Vec<HostDigest>,
}

fn values(points: &[(i64, f64)]) -> impl Iterator<Item = f64> + '_ {
    points.iter().map(|(_, v)| *v).filter(|v| v.is_finite())
}

fn mean(points: &[(i64, f64)]) -> Option<f64> {
    let n = values(points).count();
    (n > 0).then(|| values(points).sum::<f64>() / n as f64)
}

fn peak(points: &[(i64, f64)]) -> Option<f64> {
    values(points).fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
}

fn first_last(points: &[(i64, f64)]) -> Option<(f64, f64)> {
    let finite = || points.iter().filter(|(_, v)| v.is_finite());
    let first = finite().min_by_key(|(t, _)| *t)?.1;
    let last = finite().max_by_key(|(t, _)| *t)?.1;
    Some((first, last))
}

fn advice(d: Dimension) -> &'static str {
    match d {
        Dimension::CpuSteal => "Ask for dedicated CPUs or move work off this host",
        Dimension::Memory => "Free memory or add RAM",
        Dimension::Disk => "Clean up the fullest file system",
        Dimension::ServiceHealth => "Fix the unhealthy containers and model servers",
        Dimension::MaintenanceHygiene => "Schedule a cleanup job",
        Dimension::LlmReadiness => "Free VRAM or RAM for the largest model",
    }
}

/// One host's digest from its week.
pub fn host_digest(i: &DigestInput) -> HostDigest {
    let steal = mean(&i.steal);
    let disk = first_last(&i.disk_used);
    let swap = peak(&i.swap_used);
    let unhealthy_max = peak(&i.containers_unhealthy).map(|v| v.max(0.0).round() as u32);
    let disk_now = disk.map(|(_, l)| l);
    let soon = i.disk_days_to_90.filter(|d| *d < 7.0);
    let top_action = if disk_now.is_some_and(|d| d >= DISK_ACTION_PCT) || soon.is_some() {
        let now = disk_now.map_or_else(String::new, |d| format!("disk at {d:.0} %"));
        let when = soon.map_or_else(String::new, |d| format!("{}reaches 90 % in {}", if now.is_empty() { "" } else { ", " }, human_days(d)));
        Some(Action { priority: 1, text: format!("Free disk space: {now}{when}") })
    } else if !i.unhealthy_now.is_empty() {
        Some(Action { priority: 2, text: format!("Fix unhealthy containers: {}", i.unhealthy_now.join(", ")) })
    } else if let Some(s) = steal.filter(|s| *s >= STEAL_ACTION_PCT) {
        Some(Action { priority: 3, text: format!("Move work off this host or ask for dedicated CPUs: steal averaged {s:.1} %") })
    } else if let Some(s) = swap.filter(|s| *s >= SWAP_ACTION_BYTES) {
        Some(Action { priority: 4, text: format!("Add memory or lower the load: swap peaked at {}", human_bytes(s as u64)) })
    } else {
        i.score.as_ref().and_then(|c| c.weakest()).map(|w| Action { priority: 5, text: format!("{}: {}", advice(w.dimension), w.reason) })
    };
    HostDigest {
        host_id: i.host_id.clone(),
        host: i.host.clone(),
        steal_avg_pct: steal,
        disk_used_pct: disk_now,
        disk_change_pct: disk.map(|(f, l)| l - f),
        freed_bytes: i.freed_bytes,
        swap_peak_bytes: swap,
        unhealthy_containers_max: unhealthy_max,
        unhealthy_now: i.unhealthy_now.clone(),
        score: i.score.as_ref().map(|c| c.total),
        top_action,
    }
}

/// The digest of the week `[from_ms, to_ms)`.
pub fn build(from_ms: i64, to_ms: i64, inputs: &[DigestInput]) -> Digest {
    let mut hosts: Vec<HostDigest> = inputs.iter().map(host_digest).collect();
    hosts.sort_by(|a, b| {
        let rank = |h: &HostDigest| (h.top_action.as_ref().map_or(u8::MAX, |a| a.priority), h.score.unwrap_or(0));
        rank(a).cmp(&rank(b)).then_with(|| a.host.cmp(&b.host))
    });
    let scores: Vec<f64> = hosts.iter().filter_map(|h| h.score).map(f64::from).collect();
    let fleet_score = (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64);
    let hosts_with_actions = hosts.iter().filter(|h| h.top_action.is_some()).count();
    Digest { from_ms, to_ms, fleet_score, hosts_with_actions, hosts }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "–".to_owned(), f)
}

fn day(ms: i64) -> String {
    gpufleet_core::time::format_rfc3339(ms).chars().take(10).collect()
}

/// The digest's title line.
pub fn title(d: &Digest) -> String {
    let score = opt(d.fleet_score, |s| format!("{s:.0}/100"));
    format!("gpufleet weekly digest {} – {}: {} hosts, fleet score {score}, {} with something to do", day(d.from_ms), day(d.to_ms), d.hosts.len(), d.hosts_with_actions)
}

fn host_numbers(h: &HostDigest) -> String {
    format!(
        "steal {} · disk {} ({}) · freed {} · swap peak {} · unhealthy containers {}",
        opt(h.steal_avg_pct, |s| format!("{s:.1} %")),
        opt(h.disk_used_pct, |d| format!("{d:.0} %")),
        opt(h.disk_change_pct, |c| format!("{c:+.1} pts")),
        h.freed_bytes.map_or_else(|| "–".to_owned(), human_bytes),
        opt(h.swap_peak_bytes, |s| human_bytes(s as u64)),
        h.unhealthy_containers_max.map_or_else(|| "–".to_owned(), |n| n.to_string()),
    )
}

/// Plain text, at most `max_hosts` hosts (the rest counted).
pub fn render_text(d: &Digest, max_hosts: usize) -> String {
    let mut s = title(d);
    for h in d.hosts.iter().take(max_hosts) {
        let score = h.score.map_or_else(|| "–".to_owned(), |s| s.to_string());
        let _ = write!(s, "\n\n{} (score {score})\n  {}", h.host, host_numbers(h));
        if let Some(a) = &h.top_action {
            let _ = write!(s, "\n  → {}", a.text);
        }
    }
    if d.hosts.len() > max_hosts {
        let _ = write!(s, "\n\n… and {} more hosts", d.hosts.len() - max_hosts);
    }
    s
}

/// A Markdown table with one row per host.
pub fn render_markdown(d: &Digest) -> String {
    let mut s = format!("## {}\n\n", title(d));
    s.push_str("| host | score | steal avg | disk | disk change | freed | swap peak | unhealthy | top action |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for h in &d.hosts {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            h.host.replace('|', "\\|"),
            h.score.map_or_else(|| "–".to_owned(), |v| v.to_string()),
            opt(h.steal_avg_pct, |v| format!("{v:.1} %")),
            opt(h.disk_used_pct, |v| format!("{v:.0} %")),
            opt(h.disk_change_pct, |v| format!("{v:+.1}")),
            h.freed_bytes.map_or_else(|| "–".to_owned(), human_bytes),
            opt(h.swap_peak_bytes, |v| human_bytes(v as u64)),
            h.unhealthy_containers_max.map_or_else(|| "–".to_owned(), |v| v.to_string()),
            h.top_action.as_ref().map_or_else(|| "–".to_owned(), |a| a.text.replace('|', "\\|")),
        );
    }
    s
}

/// The JSON form (the [`Digest`] itself).
pub fn render_json(d: &Digest) -> serde_json::Value {
    serde_json::to_value(d).unwrap_or(serde_json::Value::Null)
}

/// The notification carrying a digest: text (first 30 hosts) and the whole digest as JSON.
pub fn message(d: &Digest) -> crate::notify::Message {
    let text = render_text(d, 30);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let title = if lines.is_empty() { title(d) } else { lines.remove(0) };
    crate::notify::Message { title, lines, severity: None, payload: serde_json::json!({ "kind": "digest", "digest": render_json(d) }) }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
