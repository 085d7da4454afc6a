//! The container watchdog: a container whose health check failed N times in a row (default 3)
//! is restarted through its host's agent, at most once per cooldown (default 30 min), never when
//! it was stopped on purpose or its host is in maintenance, only on opted-in hosts (the host's own
//! watchdog flag, or `[watchdog] hosts` / `groups`). Every restart is an audit event and a
//! broadcast event.
//!
//! # Layout
//! - [`decide`]: [`Watchdog`], the pure decisions with explicit time.
//! - [`agent`]: [`AgentRestarter`] (`POST /containers/{id}/restart`), [`containers_of`].
//! - [`worker`]: [`WatchdogWorker`], [`PollSource`], [`ChannelSource`], audit and events.

pub mod agent;
pub mod decide;
pub mod worker;

pub use agent::{containers_of, AgentRestarter, RestartFailed, Restarter};
pub use decide::{Decision, SkipReason, WatchedHost, Watchdog};
pub use worker::{AuditEvent, AuditSink, ChannelSource, PollSource, WatchSource, WatchdogEvent, WatchdogEventKind, WatchdogWorker};

use crate::config::{parse_duration, WatchdogConfig};
use std::time::Duration;

/// [`WatchdogConfig`] checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchdogSettings {
    /// Hosts (ids or names) opted in by configuration.
    pub hosts: Vec<String>,
    /// Groups opted in by configuration.
    pub groups: Vec<String>,
    /// Consecutive failures before a restart (≥ 1).
    pub failures: u32,
    /// At most one restart per container per this long.
    pub cooldown: Duration,
    /// How often [`PollSource`] reads the hosts.
    pub interval: Duration,
    /// Hosts read at once.
    pub concurrency: usize,
    /// Timeout of one agent request.
    pub timeout: Duration,
}

impl Default for WatchdogSettings {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            groups: Vec::new(),
            failures: 3,
            cooldown: Duration::from_secs(30 * 60),
            interval: Duration::from_secs(30),
            concurrency: 8,
            timeout: Duration::from_secs(5),
        }
    }
}

impl WatchdogSettings {
    /// Whether the watchdog looks at `host`.
    pub fn opted_in(&self, host: &WatchedHost) -> bool {
        host.opted_in || self.hosts.iter().any(|h| *h == host.id || *h == host.name) || self.groups.iter().any(|g| host.groups.contains(g))
    }
}

impl WatchdogConfig {
    /// The checked settings, or what is wrong (naming the field).
    pub fn validate(&self) -> Result<WatchdogSettings, String> {
        let dur = |field: &str, s: &str| parse_duration(s).map_err(|e| format!("watchdog.{field}: {e}"));
        if self.failures == 0 {
            return Err("watchdog.failures: must be at least 1".into());
        }
        let interval = dur("interval", &self.interval)?;
        if interval < Duration::from_secs(1) {
            return Err("watchdog.interval: must be at least 1s".into());
        }
        let timeout = dur("timeout", &self.timeout)?;
        if timeout.is_zero() {
            return Err("watchdog.timeout: must be above 0".into());
        }
        if self.concurrency == 0 {
            return Err("watchdog.concurrency: must be at least 1".into());
        }
        Ok(WatchdogSettings {
            hosts: self.hosts.clone(),
            groups: self.groups.clone(),
            failures: self.failures,
            cooldown: dur("cooldown", &self.cooldown)?,
            interval,
            concurrency: self.concurrency,
            timeout,
        })
    }
}

#[cfg(test)]
mod tests;
