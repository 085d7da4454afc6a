//! What the alert engine looks at in one evaluation: [`Observations`] of every host
//! ([`HostObservation`]: state, maintenance, named metric values, unhealthy containers, disk
//! projection), of missing partitions and of workers, plus [`WorkerFailureTracker`], which turns
//! supervisor snapshots into "failing" verdicts.

use gpufleet_runtime::WorkerStatus;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

/// A host's health state as the health worker classifies it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostHealth {
    /// Not checked yet.
    #[default]
    Unknown,
    /// Every component ok.
    Healthy,
    /// Some component warns.
    Degraded,
    /// Some component is critical.
    Critical,
    /// No answer within the timeout after N tries.
    Unreachable,
}

impl HostHealth {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostHealth::Unknown => "unknown",
            HostHealth::Healthy => "healthy",
            HostHealth::Degraded => "degraded",
            HostHealth::Critical => "critical",
            HostHealth::Unreachable => "unreachable",
        }
    }
}

impl fmt::Display for HostHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HostHealth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "unknown" => HostHealth::Unknown,
            "healthy" => HostHealth::Healthy,
            "degraded" => HostHealth::Degraded,
            "critical" => HostHealth::Critical,
            "unreachable" => HostHealth::Unreachable,
            other => return Err(format!("unknown host state {other:?}: use healthy, degraded, critical, unreachable or unknown")),
        })
    }
}

/// One host as the alert engine sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostObservation {
    /// Host id (the alert subject).
    pub id: String,
    /// Host name (for messages and selectors).
    pub name: String,
    /// Groups.
    pub groups: Vec<String>,
    /// In maintenance: its alerts are suppressed.
    pub maintenance: bool,
    /// Health state.
    pub state: HostHealth,
    /// Named metric values from the last sample ([`crate::metrics::named_values`]); empty when
    /// there is no sample, which makes metric rules "unknown" (they neither fire nor resolve).
    pub metrics: BTreeMap<String, f64>,
    /// Names of unhealthy containers (`None`: unknown).
    pub unhealthy_containers: Option<Vec<String>>,
    /// The fullest disk's 7-day trend (`None`: unknown, e.g. too little history).
    pub disk_outlook: Option<DiskOutlook>,
    /// Why the host is critical, when it is (the agent's critical components).
    pub critical_reasons: Vec<String>,
}

/// Where the fullest disk is heading.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskOutlook {
    /// Its mount point.
    pub mount: String,
    /// Days until it reaches 90 % on its 7-day trend (0: already there; `None`: not rising).
    pub days_to_90: Option<f64>,
}

/// A background worker as the alert engine sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerObservation {
    /// Worker name.
    pub name: String,
    /// Whether it counts as failing.
    pub failing: bool,
    /// Why (last error, "not running").
    pub detail: String,
}

/// Everything one evaluation looks at.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Observations {
    /// Every registered host.
    pub hosts: Vec<HostObservation>,
    /// Names of metrics partitions that should exist and do not (the current month's).
    pub missing_partitions: Vec<String>,
    /// Workers (`None`: not observed, so `worker_failing` neither fires nor resolves).
    pub workers: Option<Vec<WorkerObservation>>,
}

/// Judges workers from successive supervisor snapshots: a worker is failing when it is not running
/// (stopped after a panic, or between restarts), or when since the previous snapshot it recorded
/// failures and no success. A worker that did nothing in between keeps its last verdict.
#[derive(Debug, Default)]
pub struct WorkerFailureTracker {
    last: HashMap<String, (u64, u64, bool)>,
}

impl WorkerFailureTracker {
    /// A tracker with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verdicts for `snapshot`, remembering it for next time.
    pub fn observe(&mut self, snapshot: &[WorkerStatus]) -> Vec<WorkerObservation> {
        let mut out = Vec::with_capacity(snapshot.len());
        for s in snapshot {
            let (prev_ok, prev_fail, prev_verdict) = self.last.get(&s.name).copied().unwrap_or((0, 0, false));
            let new_ok = s.successes.saturating_sub(prev_ok);
            let new_fail = s.failures.saturating_sub(prev_fail);
            let (failing, detail) = if !s.running {
                (true, format!("not running; last error: {}", s.last_error.as_deref().unwrap_or("none")))
            } else if new_fail > 0 && new_ok == 0 {
                (true, format!("{new_fail} failed run(s) and no success since the last check; last error: {}", s.last_error.as_deref().unwrap_or("none")))
            } else if new_ok > 0 {
                (false, format!("{new_ok} successful run(s) since the last check"))
            } else {
                (prev_verdict, "no run since the last check".to_owned())
            };
            self.last.insert(s.name.clone(), (s.successes, s.failures, failing));
            out.push(WorkerObservation { name: s.name.clone(), failing, detail });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, running: bool, ok: u64, fail: u64) -> WorkerStatus {
        WorkerStatus { name: name.into(), running, runs: ok + fail, successes: ok, failures: fail, last_error: Some("boom".into()), ..Default::default() }
    }

    #[test]
    fn workers_fail_when_down_or_only_failing() {
        let mut t = WorkerFailureTracker::new();
        let v = t.observe(&[status("health", true, 5, 0), status("metrics", false, 0, 1)]);
        assert!(!v[0].failing);
        assert!(v[1].failing && v[1].detail.starts_with("not running"));
        // health now only fails.
        let v = t.observe(&[status("health", true, 5, 2), status("metrics", true, 1, 1)]);
        assert!(v[0].failing, "{v:?}");
        assert!(!v[1].failing);
        // Nothing ran: keep the verdict.
        let v = t.observe(&[status("health", true, 5, 2)]);
        assert!(v[0].failing);
        // Failures and successes mixed: not failing.
        let v = t.observe(&[status("health", true, 6, 3)]);
        assert!(!v[0].failing);
    }

    #[test]
    fn host_states_parse() {
        assert_eq!("Unreachable".parse::<HostHealth>().unwrap(), HostHealth::Unreachable);
        assert!("down".parse::<HostHealth>().is_err());
        assert_eq!(HostHealth::Degraded.to_string(), "degraded");
    }
}
