//! Alert rules: [`Severity`], comparison [`Op`], the `[[alerts.rules]]` entry as written
//! ([`RuleConfig`]) and its checked form ([`Rule`]), the host/group [`Selector`], and the
//! [`Builtin`] rules that need no configuration.

use super::observe::HostHealth;
use super::AlertError;
use crate::config::parse_duration;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How urgent an alert is. `WARN < CRIT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Needs attention soon.
    #[serde(rename = "WARN", alias = "warn", alias = "warning")]
    Warn,
    /// Needs attention now.
    #[serde(rename = "CRIT", alias = "crit", alias = "critical")]
    Crit,
}

impl Severity {
    /// `WARN` or `CRIT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warn => "WARN",
            Severity::Crit => "CRIT",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A comparison of an observed value with a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `==`
    #[serde(rename = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    /// Whether `value op threshold` holds (false for NaN).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

impl FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            ">" | "gt" => Op::Gt,
            ">=" | "ge" => Op::Ge,
            "<" | "lt" => Op::Lt,
            "<=" | "le" => Op::Le,
            "==" | "=" | "eq" => Op::Eq,
            "!=" | "ne" => Op::Ne,
            other => return Err(format!("unknown operator {other:?}: use >, >=, <, <=, == or !=")),
        })
    }
}

/// Which hosts a rule applies to: listed hosts or members of listed groups; empty means all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// Host ids or names.
    pub hosts: Vec<String>,
    /// Group names.
    pub groups: Vec<String>,
}

impl Selector {
    /// Whether a host with this id, name and groups is selected.
    pub fn matches(&self, id: &str, name: &str, groups: &[String]) -> bool {
        if self.hosts.is_empty() && self.groups.is_empty() {
            return true;
        }
        self.hosts.iter().any(|h| h == id || h == name) || self.groups.iter().any(|g| groups.contains(g))
    }
}

/// One `[[alerts.rules]]` entry as written in the configuration file.
///
/// ```toml
/// [[alerts.rules]]
/// name = "data-disk-full"
/// metric = "disk_used_pct:/data"   # or: state = "unreachable"
/// op = ">"                              # default ">" for a metric, "==" for a state
/// threshold = 90
/// for = "10m"                           # default "0s": fire on the first evaluation
/// severity = "CRIT"                     # WARN | CRIT
/// groups = ["training"]                 # and/or hosts = ["gpu-07"]; both empty: every host
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique rule name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// A host metric name (see [`crate::metrics`]); exclusive with `state`.
    #[serde(default)]
    pub metric: Option<String>,
    /// A host state: `healthy`, `degraded`, `critical`, `unreachable`, `unknown`; exclusive with
    /// `metric`.
    #[serde(default)]
    pub state: Option<String>,
    /// Comparison; for a state only `==` and `!=`.
    #[serde(default)]
    pub op: Option<String>,
    /// Threshold of a metric rule.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// How long the condition must hold before the alert fires (`30s`, `5m`).
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    /// `WARN` or `CRIT`.
    pub severity: Severity,
    /// Hosts (ids or names) the rule applies to.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Groups the rule applies to.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// What a checked rule tests.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// A named host metric compared with a threshold.
    Metric {
        /// Metric name.
        metric: String,
        /// Comparison.
        op: Op,
        /// Threshold.
        threshold: f64,
    },
    /// The host's state is (or is not) this one.
    State {
        /// `true` for `==`, `false` for `!=`.
        equals: bool,
        /// The state.
        state: HostHealth,
    },
}

/// A configured rule after [`RuleConfig::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// What it tests.
    pub condition: Condition,
    /// How long it must hold before firing.
    pub for_: Duration,
    /// Severity when firing.
    pub severity: Severity,
    /// Which hosts.
    pub selector: Selector,
}

impl RuleConfig {
    /// The checked rule, or what is wrong with it (naming the rule and the field).
    pub fn validate(&self) -> Result<Rule, AlertError> {
        let bad = |field: &str, why: String| AlertError::InvalidRule { rule: self.name.clone(), field: field.to_owned(), reason: why };
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(bad("name", "use letters, digits, '-', '_' or '.'".into()));
        }
        if Builtin::ALL.iter().any(|b| b.name() == self.name) {
            return Err(bad("name", "is the name of a built-in rule".into()));
        }
        let for_ = match &self.for_ {
            None => Duration::ZERO,
            Some(s) => parse_duration(s).map_err(|e| bad("for", e))?,
        };
        let op = self.op.as_deref().map(str::parse::<Op>).transpose().map_err(|e| bad("op", e))?;
        let condition = match (&self.metric, &self.state) {
            (Some(metric), None) => {
                if metric.trim().is_empty() {
                    return Err(bad("metric", "is empty".into()));
                }
                let threshold = self.threshold.ok_or_else(|| bad("threshold", "a metric rule needs a threshold".into()))?;
                if !threshold.is_finite() {
                    return Err(bad("threshold", "must be a finite number".into()));
                }
                Condition::Metric { metric: metric.trim().to_owned(), op: op.unwrap_or(Op::Gt), threshold }
            }
            (None, Some(state)) => {
                if self.threshold.is_some() {
                    return Err(bad("threshold", "a state rule takes no threshold".into()));
                }
                let equals = match op.unwrap_or(Op::Eq) {
                    Op::Eq => true,
                    Op::Ne => false,
                    other => return Err(bad("op", format!("a state rule takes == or !=, not {}", other.as_str()))),
                };
                Condition::State { equals, state: state.parse().map_err(|e| bad("state", e))? }
            }
            (Some(_), Some(_)) => return Err(bad("metric", "give either metric or state, not both".into())),
            (None, None) => return Err(bad("metric", "give a metric or a state".into())),
        };
        Ok(Rule { name: self.name.clone(), condition, for_, severity: self.severity, selector: Selector { hosts: self.hosts.clone(), groups: self.groups.clone() } })
    }
}

/// The rules every server has unless disabled by name (`[alerts] disable_builtin = [...]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `host_unreachable` (CRIT): the health worker marked the host unreachable.
    HostUnreachable,
    /// `host_critical` (CRIT): the agent reports a critical component.
    HostCritical,
    /// `disk_full_soon` (WARN): the fullest disk's 7-day trend reaches 90 % in under 7 days.
    DiskFullSoon,
    /// `cpu_steal` (WARN above 5 %, CRIT above 15 %, held 5 minutes).
    CpuSteal,
    /// `container_unhealthy` (WARN, held 2 minutes): a container is unhealthy, restarting or
    /// exited without being stopped on purpose.
    ContainerUnhealthy,
    /// `partition_missing` (CRIT): the current month's metrics partition does not exist.
    PartitionMissing,
    /// `worker_failing` (WARN): a background worker is down or failed every run since the last
    /// evaluation.
    WorkerFailing,
}

/// `disk_full_soon` fires below this many days to 90 %.
pub const DISK_FULL_SOON_DAYS: f64 = 7.0;
/// `cpu_steal` is WARN above this percentage.
pub const STEAL_WARN_PERCENT: f64 = 5.0;
/// `cpu_steal` is CRIT above this percentage.
pub const STEAL_CRIT_PERCENT: f64 = 15.0;

impl Builtin {
    /// Every built-in rule.
    pub const ALL: [Builtin; 7] = [
        Builtin::HostUnreachable,
        Builtin::HostCritical,
        Builtin::DiskFullSoon,
        Builtin::CpuSteal,
        Builtin::ContainerUnhealthy,
        Builtin::PartitionMissing,
        Builtin::WorkerFailing,
    ];

    /// Its rule name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::HostUnreachable => "host_unreachable",
            Builtin::HostCritical => "host_critical",
            Builtin::DiskFullSoon => "disk_full_soon",
            Builtin::CpuSteal => "cpu_steal",
            Builtin::ContainerUnhealthy => "container_unhealthy",
            Builtin::PartitionMissing => "partition_missing",
            Builtin::WorkerFailing => "worker_failing",
        }
    }

    /// How long its condition must hold before it fires.
    pub fn for_(self) -> Duration {
        match self {
            Builtin::CpuSteal => Duration::from_secs(300),
            Builtin::ContainerUnhealthy => Duration::from_secs(120),
            _ => Duration::ZERO,
        }
    }

    /// The built-in rule with this name.
    pub fn by_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }
}
