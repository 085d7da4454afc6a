//! [`classify`]: a host's [`HostState`] from one check, the rules as a pure function.
//!
//! | input | state |
//! |---|---|
//! | a health report, every component `ok` | `healthy` |
//! | a health report, the worst component `warn` (model server down, disk > 85 %, container unhealthy…) | `degraded` |
//! | a health report, some component `critical` (disk > 95 %, GPU XID error, OOM kill) | `critical` |
//! | no answer (refused, timed out, reset) and `consecutive_failures >= unreachable_after` | `unreachable` |
//! | an answer that is not a health report (HTTP error, bad JSON) and `consecutive_failures >= unreachable_after` | `degraded`: the host is up, its agent is not working |
//! | any failure while `consecutive_failures < unreachable_after` | the previous state (not decided yet) |
//!
//! The component thresholds are the agent's ([`gpufleet_agent::health`]); the worst of the
//! report's own `status` and its components' statuses counts, so a report whose summary and
//! components disagree is judged by the worse. `consecutive_failures` counts tries in a row
//! without a report, across cycles; the health worker retries within a cycle until it reaches
//! `unreachable_after`, so a host that stops answering is `unreachable` after one cycle.

use crate::model::HostState;
use gpufleet_agent::wire::{Component, HealthReport, Status};
use std::fmt;

/// Why a check got no health report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckErrorKind {
    /// Nothing answered: connection refused or reset, DNS failure, timeout.
    NoAnswer,
    /// Something answered, but not with a health report (HTTP error status, unreadable JSON).
    BadAnswer,
}

/// A failed try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckError {
    /// Which kind of failure.
    pub kind: CheckErrorKind,
    /// What happened, for people.
    pub message: String,
}

impl CheckError {
    /// No answer.
    pub fn no_answer(message: impl Into<String>) -> Self {
        Self { kind: CheckErrorKind::NoAnswer, message: message.into() }
    }

    /// An answer that is not a report.
    pub fn bad_answer(message: impl Into<String>) -> Self {
        Self { kind: CheckErrorKind::BadAnswer, message: message.into() }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The state of a host after a check; see the module table.
pub fn classify(
    report: Result<&HealthReport, &CheckError>,
    consecutive_failures: u32,
    unreachable_after: u32,
    previous: HostState,
) -> HostState {
    match report {
        Ok(r) => match worst(r) {
            Status::Ok => HostState::Healthy,
            Status::Warn => HostState::Degraded,
            Status::Critical => HostState::Critical,
        },
        Err(_) if consecutive_failures < unreachable_after.max(1) => previous,
        Err(e) => match e.kind {
            CheckErrorKind::NoAnswer => HostState::Unreachable,
            CheckErrorKind::BadAnswer => HostState::Degraded,
        },
    }
}

/// The worst of the report's status and its components' statuses.
pub fn worst(report: &HealthReport) -> Status {
    report.components.iter().fold(report.status, |s, c| s.worst(c.status))
}

/// One line saying why a host is in its state: the error, or up to three of the worst
/// components as `name: message`.
pub fn reason(report: Result<&HealthReport, &CheckError>) -> String {
    match report {
        Err(e) => e.message.clone(),
        Ok(r) => {
            let mut bad: Vec<&Component> = r.components.iter().filter(|c| c.status != Status::Ok).collect();
            if bad.is_empty() {
                return "all components ok".to_owned();
            }
            bad.sort_by_key(|c| std::cmp::Reverse(c.status));
            let mut line = bad.iter().take(3).map(|c| format!("{}: {}", c.name, c.message)).collect::<Vec<_>>().join("; ");
            if bad.len() > 3 {
                line.push_str(&format!(" (+{} more)", bad.len() - 3));
            }
            line
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_agent::wire::ComponentKind;
    use HostState::*;

    fn comp(name: &str, status: Status, message: &str) -> Component {
        Component { name: name.into(), kind: ComponentKind::Disk, status, message: message.into(), detail: serde_json::Value::Null }
    }

    fn report(components: Vec<Component>) -> HealthReport {
        HealthReport::new("h", "test", 0, components)
    }

    #[test]
    fn all_ok_is_healthy() {
        let r = report(vec![comp("cpu", Status::Ok, "fine"), comp("disk:/", Status::Ok, "40 %")]);
        assert_eq!(classify(Ok(&r), 0, 3, Unknown), Healthy);
        assert_eq!(classify(Ok(&report(vec![])), 0, 3, Critical), Healthy, "no components: nothing is wrong");
        assert_eq!(reason(Ok(&r)), "all components ok");
    }

    #[test]
    fn a_warn_component_is_degraded() {
        let r = report(vec![comp("cpu", Status::Ok, ""), comp("model_server:llama", Status::Warn, "down")]);
        assert_eq!(classify(Ok(&r), 0, 3, Healthy), Degraded);
        assert_eq!(reason(Ok(&r)), "model_server:llama: down");
    }

    #[test]
    fn a_critical_component_is_critical_even_beside_warnings() {
        let r = report(vec![
            comp("disk:/", Status::Warn, "88 % used"),
            comp("gpu:3", Status::Critical, "XID 79"),
            comp("memory", Status::Critical, "OOM kill"),
            comp("disk:/a", Status::Warn, "86 %"),
            comp("disk:/b", Status::Warn, "87 %"),
        ]);
        assert_eq!(classify(Ok(&r), 5, 3, Unreachable), Critical, "an answer resets the failure streak");
        assert_eq!(reason(Ok(&r)), "gpu:3: XID 79; memory: OOM kill; disk:/: 88 % used (+2 more)");
    }

    #[test]
    fn the_worse_of_summary_and_components_counts() {
        let mut r = report(vec![comp("disk:/", Status::Ok, "")]);
        r.status = Status::Critical;
        assert_eq!(classify(Ok(&r), 0, 3, Healthy), Critical);
        let mut r = report(vec![comp("disk:/", Status::Warn, "")]);
        r.status = Status::Ok;
        assert_eq!(classify(Ok(&r), 0, 3, Healthy), Degraded);
    }

    #[test]
    fn no_answer_is_unreachable_only_after_n_tries() {
        let e = CheckError::no_answer("connection refused");
        assert_eq!(classify(Err(&e), 1, 3, Healthy), Healthy, "one try: not decided");
        assert_eq!(classify(Err(&e), 2, 3, Degraded), Degraded);
        assert_eq!(classify(Err(&e), 3, 3, Healthy), Unreachable);
        assert_eq!(classify(Err(&e), 40, 3, Unreachable), Unreachable);
        assert_eq!(classify(Err(&e), 1, 1, Healthy), Unreachable);
        assert_eq!(classify(Err(&e), 1, 0, Healthy), Unreachable, "0 tries means 1");
        assert_eq!(reason(Err(&e)), "connection refused");
    }

    #[test]
    fn a_bad_answer_is_degraded_after_n_tries() {
        let e = CheckError::bad_answer("agent answered 500");
        assert_eq!(classify(Err(&e), 2, 3, Unknown), Unknown);
        assert_eq!(classify(Err(&e), 3, 3, Healthy), Degraded);
    }
}
