//! One pass of the rules over [`Observations`]: for every (rule, subject) a verdict — firing with a
//! severity, value and message, clear, or unknown (no data: the alert neither fires nor resolves).
//! Pure; the lifecycle is [`super::engine`]'s.

use super::observe::{HostHealth, HostObservation, Observations};
use super::rule::{Builtin, Condition, Rule, Severity, DISK_FULL_SOON_DAYS, STEAL_CRIT_PERCENT, STEAL_WARN_PERCENT};
use crate::trend::human_days;
use std::time::Duration;

/// A condition that holds now.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    /// Severity now.
    pub severity: Severity,
    /// The value that tripped it, if a number.
    pub value: Option<f64>,
    /// One line for a person.
    pub message: String,
}

/// A rule's verdict on one subject.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The condition holds.
    Firing(Signal),
    /// It does not.
    Clear,
    /// No data to tell.
    Unknown,
}

/// What an alert is about, for labels and suppression.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subject {
    /// `host id`, `partition:<name>` or `worker:<name>`.
    pub key: String,
    /// The host, when the subject is one.
    pub host: Option<String>,
    /// Host name, for messages.
    pub host_name: Option<String>,
    /// The host's groups.
    pub groups: Vec<String>,
    /// The host is in maintenance.
    pub maintenance: bool,
}

/// One (rule, subject) verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Rule name.
    pub rule: String,
    /// How long it must hold before firing.
    pub for_: Duration,
    /// What it is about.
    pub subject: Subject,
    /// The verdict.
    pub verdict: Verdict,
}

/// The verdicts of one pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluated {
    /// Every verdict given.
    pub outcomes: Vec<Outcome>,
    /// Rules that could not look at all this time (their alerts are kept as they are).
    pub unknown_rules: Vec<String>,
}

fn host_subject(h: &HostObservation) -> Subject {
    Subject { key: h.id.clone(), host: Some(h.id.clone()), host_name: Some(h.name.clone()), groups: h.groups.clone(), maintenance: h.maintenance }
}

fn firing(severity: Severity, value: Option<f64>, message: String) -> Verdict {
    Verdict::Firing(Signal { severity, value, message })
}

/// Every configured rule and enabled built-in over `obs`.
pub fn evaluate(rules: &[Rule], builtins: &[Builtin], obs: &Observations) -> Evaluated {
    let mut out = Evaluated::default();
    for h in &obs.hosts {
        for r in rules.iter().filter(|r| r.selector.matches(&h.id, &h.name, &h.groups)) {
            out.outcomes.push(Outcome { rule: r.name.clone(), for_: r.for_, subject: host_subject(h), verdict: rule_verdict(r, h) });
        }
        for b in builtins {
            if let Some(verdict) = host_builtin(*b, h) {
                out.outcomes.push(Outcome { rule: b.name().to_owned(), for_: b.for_(), subject: host_subject(h), verdict });
            }
        }
    }
    if builtins.contains(&Builtin::PartitionMissing) {
        for p in &obs.missing_partitions {
            let subject = Subject { key: format!("partition:{p}"), ..Subject::default() };
            let message = format!("metrics partition {p} is missing: host metrics for this month cannot be stored");
            out.outcomes.push(Outcome { rule: Builtin::PartitionMissing.name().into(), for_: Duration::ZERO, subject, verdict: firing(Severity::Crit, None, message) });
        }
    }
    if builtins.contains(&Builtin::WorkerFailing) {
        match &obs.workers {
            None => out.unknown_rules.push(Builtin::WorkerFailing.name().into()),
            Some(workers) => {
                for w in workers {
                    let subject = Subject { key: format!("worker:{}", w.name), ..Subject::default() };
                    let verdict = if w.failing { firing(Severity::Warn, None, format!("worker {} is failing: {}", w.name, w.detail)) } else { Verdict::Clear };
                    out.outcomes.push(Outcome { rule: Builtin::WorkerFailing.name().into(), for_: Duration::ZERO, subject, verdict });
                }
            }
        }
    }
    out
}

fn rule_verdict(r: &Rule, h: &HostObservation) -> Verdict {
    match &r.condition {
        Condition::Metric { metric, op, threshold } => match h.metrics.get(metric) {
            None => Verdict::Unknown,
            Some(v) if op.holds(*v, *threshold) => firing(r.severity, Some(*v), format!("{metric} is {} on {} ({} {threshold})", fmt_value(*v), h.name, op.as_str())),
            Some(_) => Verdict::Clear,
        },
        Condition::State { equals, state } => {
            if (h.state == *state) == *equals {
                firing(r.severity, None, format!("{} is {}", h.name, h.state))
            } else {
                Verdict::Clear
            }
        }
    }
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A built-in's verdict on a host; `None` for built-ins that are not about hosts.
fn host_builtin(b: Builtin, h: &HostObservation) -> Option<Verdict> {
    let v = match b {
        Builtin::HostUnreachable => match h.state {
            HostHealth::Unreachable => firing(Severity::Crit, None, format!("{} is unreachable: its agent did not answer", h.name)),
            HostHealth::Unknown => Verdict::Unknown,
            _ => Verdict::Clear,
        },
        Builtin::HostCritical => match h.state {
            HostHealth::Critical => {
                let why = if h.critical_reasons.is_empty() { "a component is critical".to_owned() } else { h.critical_reasons.join("; ") };
                firing(Severity::Crit, None, format!("{} is critical: {why}", h.name))
            }
            HostHealth::Unreachable | HostHealth::Unknown => Verdict::Unknown,
            _ => Verdict::Clear,
        },
        Builtin::DiskFullSoon => match &h.disk_outlook {
            None => Verdict::Unknown,
            Some(o) => match o.days_to_90 {
                Some(d) if d < DISK_FULL_SOON_DAYS => {
                    firing(Severity::Warn, Some(d), format!("disk {} on {} reaches 90 % in {} at its 7-day trend", o.mount, h.name, human_days(d)))
                }
                _ => Verdict::Clear,
            },
        },
        Builtin::CpuSteal => match h.metrics.get(crate::metrics::CPU_STEAL_PCT) {
            None => Verdict::Unknown,
            Some(s) if *s > STEAL_CRIT_PERCENT => firing(Severity::Crit, Some(*s), format!("CPU steal is {s:.1} % on {} (> {STEAL_CRIT_PERCENT} %)", h.name)),
            Some(s) if *s > STEAL_WARN_PERCENT => firing(Severity::Warn, Some(*s), format!("CPU steal is {s:.1} % on {} (> {STEAL_WARN_PERCENT} %)", h.name)),
            Some(_) => Verdict::Clear,
        },
        Builtin::ContainerUnhealthy => match &h.unhealthy_containers {
            None => Verdict::Unknown,
            Some(list) if list.is_empty() => Verdict::Clear,
            Some(list) => firing(Severity::Warn, Some(list.len() as f64), format!("{} unhealthy container(s) on {}: {}", list.len(), h.name, list.join(", "))),
        },
        Builtin::PartitionMissing | Builtin::WorkerFailing => return None,
    };
    Some(v)
}
