//! The registry's vocabulary: [`Host`] with its [`HostStatus`] (what an operator set) and
//! [`HostState`] (what the health worker found), one health check's [`CheckResult`], and the
//! [`StateChange`] event. Plain data; no I/O.

use gpufleet_agent::wire::Component;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// What an operator set: whether the host is checked at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Checked by the health and metrics workers.
    #[default]
    Active,
    /// Kept in the registry but not checked (decommissioned, not yet installed).
    Inactive,
    /// Not checked, and alerts and the watchdog leave it alone (someone is working on it).
    Maintenance,
}

impl HostStatus {
    /// Every status.
    pub const ALL: [HostStatus; 3] = [HostStatus::Active, HostStatus::Inactive, HostStatus::Maintenance];

    /// `active`, `inactive` or `maintenance`.
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Active => "active",
            HostStatus::Inactive => "inactive",
            HostStatus::Maintenance => "maintenance",
        }
    }
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HostStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a host status (expected active, inactive or maintenance)"))
    }
}

/// What the health worker found ([`crate::classify`] decides it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Every component is `ok`.
    Healthy,
    /// Some component is `warn` (a model server down, a disk over 85 %…), or the agent answers
    /// but not with a health report.
    Degraded,
    /// Some component is `critical` (a disk over 95 %, a GPU XID error, an OOM kill).
    Critical,
    /// No answer within the timeout after `unreachable_after` tries in a row.
    Unreachable,
    /// Never checked yet.
    #[default]
    Unknown,
}

impl HostState {
    /// Every state, in display order.
    pub const ALL: [HostState; 5] =
        [HostState::Healthy, HostState::Degraded, HostState::Critical, HostState::Unreachable, HostState::Unknown];

    /// `healthy`, `degraded`, `critical`, `unreachable` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Healthy => "healthy",
            HostState::Degraded => "degraded",
            HostState::Critical => "critical",
            HostState::Unreachable => "unreachable",
            HostState::Unknown => "unknown",
        }
    }

    /// How urgent the state is, for "top problems" ordering: critical and unreachable first,
    /// healthy last.
    pub fn severity(self) -> u8 {
        match self {
            HostState::Critical => 4,
            HostState::Unreachable => 3,
            HostState::Degraded => 2,
            HostState::Unknown => 1,
            HostState::Healthy => 0,
        }
    }

    /// Whether the metrics worker reads this host (it answers and is not broken).
    pub fn takes_metrics(self) -> bool {
        matches!(self, HostState::Healthy | HostState::Degraded)
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HostState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostState::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a host state (expected healthy, degraded, critical, unreachable or unknown)"))
    }
}

/// One registered host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// Registry id (assigned by the store, never reused within one store).
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Address for people and tools (IP or DNS name); not used to reach the agent.
    pub address: String,
    /// Base URL of the host's agent (`http://10.0.0.5:9100`); the workers call
    /// `{agent_url}/health` and `{agent_url}/metrics/host`.
    pub agent_url: String,
    /// Groups (`gpu`, `rack-3`), sorted, no duplicates.
    pub groups: Vec<String>,
    /// Free-form labels.
    pub tags: BTreeMap<String, String>,
    /// Whether it is checked.
    pub status: HostStatus,
    /// Whether the watchdog may restart its unhealthy containers (opt-in).
    pub watchdog: bool,
    /// Last classified state.
    pub state: HostState,
    /// Last time the agent answered with a health report (epoch ms).
    pub last_seen_ms: Option<i64>,
    /// Last time it was checked, answered or not (epoch ms).
    pub last_check_ms: Option<i64>,
    /// Tries in a row that got no health report (0 after an answer).
    pub consecutive_failures: u32,
    /// When it was registered (epoch ms).
    pub created_ms: i64,
    /// When its registry fields last changed (epoch ms).
    pub updated_ms: i64,
}

/// The outcome of checking one host once (all tries of one cycle).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The host.
    pub host_id: i64,
    /// When the check ended (epoch ms).
    pub at_ms: i64,
    /// The classified state.
    pub state: HostState,
    /// Duration of the last try, ms (until the answer, the error or the timeout).
    pub latency_ms: f64,
    /// The agent's components; `ok` ones other than containers and model servers without their
    /// `detail`, which the health worker does not parse. Stores keep only those that are not `ok`
    /// (so a healthy check is a small row); the broadcast of [`crate::Fleet::subscribe_checks`]
    /// carries them all.
    pub components: Vec<Component>,
    /// Why no health report was had (`None` when one was).
    pub error: Option<String>,
    /// Tries in a row without a health report after this check (0 when it answered).
    pub consecutive_failures: u32,
}

impl CheckResult {
    /// Whether the agent answered with a health report.
    pub fn answered(&self) -> bool {
        self.error.is_none()
    }
}

/// A host changed state. Stored, and sent to subscribers of [`crate::Fleet::subscribe`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// Event id assigned by the store (0 in the broadcast copy, which is sent before it is stored).
    pub id: i64,
    /// The host.
    pub host_id: i64,
    /// The host's name when it changed.
    pub host: String,
    /// When the check that saw it ended (epoch ms).
    pub at_ms: i64,
    /// State before.
    pub from: HostState,
    /// State now.
    pub to: HostState,
    /// Why, in one line: the error, or the messages of the worst components.
    pub reason: String,
}
