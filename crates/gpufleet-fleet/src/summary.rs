//! [`FleetSummary`] (`GET /api/v1/fleet/summary`): hosts by state, by status and by group, and the
//! top problems.
//!
//! States are counted over `active` hosts only (an inactive or maintenance host is not checked, so
//! its stored state is old); statuses over all hosts. A group counts its active hosts by state.
//! Top problems: active hosts that are critical, unreachable or degraded, worst first, then
//! longest unseen, at most [`TOP_PROBLEMS`], each with the reason from its last check.

use crate::classify::reason;
use crate::error::FleetError;
use crate::model::{Host, HostState, HostStatus};
use crate::store::{FleetStore, HistoryQuery};
use gpufleet_agent::wire::HealthReport;
use serde::Serialize;
use std::collections::BTreeMap;

/// Most problems listed.
pub const TOP_PROBLEMS: usize = 10;

/// Counts of one group.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GroupSummary {
    /// Hosts in the group (any status).
    pub hosts: usize,
    /// Its active hosts by state.
    pub by_state: BTreeMap<String, usize>,
}

/// One host with a problem.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    /// Host id.
    pub host_id: i64,
    /// Host name.
    pub host: String,
    /// Its state.
    pub state: HostState,
    /// Why, from its last check.
    pub reason: String,
    /// Last check (epoch ms).
    pub last_check_ms: Option<i64>,
    /// Last answer (epoch ms).
    pub last_seen_ms: Option<i64>,
}

/// The fleet at a glance.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FleetSummary {
    /// Registered hosts.
    pub hosts: usize,
    /// Active hosts by state (every state listed, 0 included).
    pub by_state: BTreeMap<String, usize>,
    /// All hosts by status (every status listed).
    pub by_status: BTreeMap<String, usize>,
    /// Per group.
    pub by_group: BTreeMap<String, GroupSummary>,
    /// The worst active hosts.
    pub top_problems: Vec<Problem>,
}

/// The summary of `hosts`, reading the last check of each listed problem from `store`.
pub async fn summarize(store: &dyn FleetStore, hosts: &[Host]) -> Result<FleetSummary, FleetError> {
    let mut s = FleetSummary {
        hosts: hosts.len(),
        by_state: HostState::ALL.iter().map(|st| (st.as_str().to_owned(), 0)).collect(),
        by_status: HostStatus::ALL.iter().map(|st| (st.as_str().to_owned(), 0)).collect(),
        ..Default::default()
    };
    for h in hosts {
        *s.by_status.entry(h.status.as_str().to_owned()).or_default() += 1;
        let active = h.status == HostStatus::Active;
        if active {
            *s.by_state.entry(h.state.as_str().to_owned()).or_default() += 1;
        }
        for g in &h.groups {
            let group = s.by_group.entry(g.clone()).or_default();
            group.hosts += 1;
            if active {
                *group.by_state.entry(h.state.as_str().to_owned()).or_default() += 1;
            }
        }
    }
    let mut problems: Vec<&Host> =
        hosts.iter().filter(|h| h.status == HostStatus::Active && h.state.severity() >= HostState::Degraded.severity()).collect();
    problems.sort_by(|a, b| b.state.severity().cmp(&a.state.severity()).then(a.last_seen_ms.cmp(&b.last_seen_ms)).then(a.name.cmp(&b.name)));
    for h in problems.into_iter().take(TOP_PROBLEMS) {
        let last = store.health_history(h.id, &HistoryQuery { since_ms: None, limit: 1 }).await?;
        let reason = match last.into_iter().next() {
            Some(c) => match &c.error {
                Some(e) => e.clone(),
                None => reason(Ok(&HealthReport::new("", "", c.at_ms, c.components))),
            },
            None => "no check recorded".to_owned(),
        };
        s.top_problems.push(Problem {
            host_id: h.id,
            host: h.name.clone(),
            state: h.state,
            reason,
            last_check_ms: h.last_check_ms,
            last_seen_ms: h.last_seen_ms,
        });
    }
    Ok(s)
}
