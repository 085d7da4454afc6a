//! Row ↔ type conversions shared by both stores: the column lists, the tuples they read into, and
//! the JSON text columns (groups, tags, non-`ok` components).

use crate::error::FleetError;
use crate::model::{CheckResult, Host, HostState, HostStatus, StateChange};
use crate::spec::HostSpec;
use gpufleet_agent::wire::{Component, Status};

/// Columns of a host row, in [`HostTuple`] order.
pub(crate) const HOST_COLUMNS: &str = "id, name, address, agent_url, groups_json, tags_json, status, watchdog, state, \
     last_seen_ms, last_check_ms, consecutive_failures, created_ms, updated_ms";

/// A host row.
pub(crate) type HostTuple = (i64, String, String, String, String, String, String, bool, String, Option<i64>, Option<i64>, i64, i64, i64);

/// Columns of a history row, in [`CheckTuple`] order.
pub(crate) const CHECK_COLUMNS: &str = "host_id, at_ms, state, latency_ms, error, components, failures";

/// A history row.
pub(crate) type CheckTuple = (i64, i64, String, f64, Option<String>, Option<String>, i64);

/// Columns of an event row, in [`EventTuple`] order.
pub(crate) const EVENT_COLUMNS: &str = "id, host_id, host, at_ms, from_state, to_state, reason";

/// An event row.
pub(crate) type EventTuple = (i64, i64, String, i64, String, String, String);

fn corrupt(what: &str, e: impl std::fmt::Display) -> FleetError {
    FleetError::Corrupt(format!("{what}: {e}"))
}

fn failures(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

pub(crate) fn host_from(t: HostTuple) -> Result<Host, FleetError> {
    let (id, name, address, agent_url, groups, tags, status, watchdog, state, last_seen_ms, last_check_ms, cf, created_ms, updated_ms) = t;
    Ok(Host {
        id,
        groups: serde_json::from_str(&groups).map_err(|e| corrupt(&format!("host {id} groups"), e))?,
        tags: serde_json::from_str(&tags).map_err(|e| corrupt(&format!("host {id} tags"), e))?,
        status: status.parse::<HostStatus>().map_err(|e| corrupt(&format!("host {id}"), e))?,
        state: state.parse::<HostState>().map_err(|e| corrupt(&format!("host {id}"), e))?,
        name,
        address,
        agent_url,
        watchdog,
        last_seen_ms,
        last_check_ms,
        consecutive_failures: failures(cf),
        created_ms,
        updated_ms,
    })
}

/// `(groups_json, tags_json)` of a spec.
pub(crate) fn spec_json(spec: &HostSpec) -> (String, String) {
    let groups = serde_json::to_string(&spec.groups).unwrap_or_else(|_| "[]".into());
    let tags = serde_json::to_string(&spec.tags).unwrap_or_else(|_| "{}".into());
    (groups, tags)
}

/// The components a history row keeps: those that are not `ok`; `None` when all are.
pub(crate) fn components_json(c: &CheckResult) -> Option<String> {
    let bad: Vec<&Component> = c.components.iter().filter(|c| c.status != Status::Ok).collect();
    if bad.is_empty() {
        return None;
    }
    serde_json::to_string(&bad).ok()
}

pub(crate) fn check_from(t: CheckTuple) -> Result<CheckResult, FleetError> {
    let (host_id, at_ms, state, latency_ms, error, components, cf) = t;
    let components = match components {
        Some(text) => serde_json::from_str(&text).map_err(|e| corrupt(&format!("check of host {host_id} at {at_ms}"), e))?,
        None => Vec::new(),
    };
    Ok(CheckResult {
        host_id,
        at_ms,
        state: state.parse().map_err(|e: String| corrupt("check", e))?,
        latency_ms,
        components,
        error,
        consecutive_failures: failures(cf),
    })
}

pub(crate) fn event_from(t: EventTuple) -> Result<StateChange, FleetError> {
    let (id, host_id, host, at_ms, from, to, reason) = t;
    Ok(StateChange {
        id,
        host_id,
        host,
        at_ms,
        from: from.parse().map_err(|e: String| corrupt(&format!("event {id}"), e))?,
        to: to.parse().map_err(|e: String| corrupt(&format!("event {id}"), e))?,
        reason,
    })
}

/// A `LIMIT` value: at most `i64::MAX`.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
