//! The watchdog's decisions, pure and driven by explicit time: [`Watchdog::observe`] takes one
//! observation of a host's containers and says which to restart.
//!
//! - A container's **failure streak** grows by one per observation in which its health check is
//!   `unhealthy` — or jumps to the number of failed results at the end of its health log, when
//!   that is larger (the engine already saw them fail in a row). `healthy`, or running without a
//!   health check, resets it; `starting`, `restarting` or stopped leave it as it is (a stopped
//!   container can still show the health of its last run).
//! - At `failures` (default 3) it is restarted, unless it was **stopped on purpose**, its host is
//!   in **maintenance**, or it was restarted less than **cooldown** (default 30 min) ago; each of
//!   those is a [`Decision::Skip`] with its reason. A restart resets the streak.
//! - Containers are tracked by host and name (a recreated container keeps its history); only
//!   opted-in hosts are looked at ([`WatchdogSettings::opted_in`]).

use super::WatchdogSettings;
use gpufleet_agent::wire::ContainerState;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One host's containers as seen at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchedHost {
    /// Host id.
    pub id: String,
    /// Host name.
    pub name: String,
    /// Groups.
    pub groups: Vec<String>,
    /// In maintenance: never restart.
    pub maintenance: bool,
    /// Opted in on the host itself (the registry's watchdog flag).
    pub opted_in: bool,
    /// Agent base URL.
    pub agent_url: String,
    /// Its containers.
    pub containers: Vec<ContainerState>,
}

/// Why a container due for a restart was left alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// The host is in maintenance.
    Maintenance,
    /// Someone stopped it on purpose.
    StoppedOnPurpose,
    /// Restarted less than a cooldown ago.
    Cooldown {
        /// When the next restart is allowed, epoch ms.
        until_ms: i64,
    },
}

/// What to do about one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Restart it through the agent.
    Restart {
        /// Host id.
        host_id: String,
        /// Container id.
        container_id: String,
        /// Container name.
        container: String,
        /// Its failure streak.
        failures: u32,
    },
    /// Due, but left alone.
    Skip {
        /// Host id.
        host_id: String,
        /// Container name.
        container: String,
        /// Its failure streak.
        failures: u32,
        /// Why.
        reason: SkipReason,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct Track {
    streak: u32,
    last_restart_ms: Option<i64>,
}

/// Failed results at the end of a health log (`exit N: …` with N ≠ 0).
pub fn trailing_failures(log: &[String]) -> u32 {
    let failed = |l: &String| l.strip_prefix("exit ").and_then(|r| r.split(':').next()).is_some_and(|code| code.trim() != "0");
    u32::try_from(log.iter().rev().take_while(|l| failed(l)).count()).unwrap_or(u32::MAX)
}

/// Failure streaks and last restarts of every watched container.
#[derive(Debug)]
pub struct Watchdog {
    settings: WatchdogSettings,
    tracks: HashMap<(String, String), Track>,
}

impl Watchdog {
    /// A watchdog with no history.
    pub fn new(settings: WatchdogSettings) -> Self {
        Self { settings, tracks: HashMap::new() }
    }

    /// The settings in force.
    pub fn settings(&self) -> &WatchdogSettings {
        &self.settings
    }

    /// The current failure streak of a container (0 when untracked).
    pub fn streak(&self, host_id: &str, container: &str) -> u32 {
        self.tracks.get(&(host_id.to_owned(), container.to_owned())).map_or(0, |t| t.streak)
    }

    /// Looks at one observation of `host` at `now_ms`; returns what is due.
    pub fn observe(&mut self, now_ms: i64, host: &WatchedHost) -> Vec<Decision> {
        if !self.settings.opted_in(host) {
            return Vec::new();
        }
        let cooldown_ms = i64::try_from(self.settings.cooldown.as_millis()).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for c in &host.containers {
            let key = (host.id.clone(), c.name.clone());
            let t = self.tracks.entry(key).or_default();
            match c.health.as_deref() {
                Some("unhealthy") => t.streak = (t.streak.saturating_add(1)).max(trailing_failures(&c.health_log)),
                Some("healthy") => t.streak = 0,
                None if c.state == "running" => t.streak = 0,
                _ => {}
            }
            if t.streak < self.settings.failures {
                continue;
            }
            let failures = t.streak;
            let skip = |reason| Decision::Skip { host_id: host.id.clone(), container: c.name.clone(), failures, reason };
            if host.maintenance {
                out.push(skip(SkipReason::Maintenance));
            } else if c.stopped_on_purpose {
                out.push(skip(SkipReason::StoppedOnPurpose));
            } else if let Some(last) = t.last_restart_ms.filter(|last| now_ms.saturating_sub(*last) < cooldown_ms) {
                out.push(skip(SkipReason::Cooldown { until_ms: last.saturating_add(cooldown_ms) }));
            } else {
                out.push(Decision::Restart { host_id: host.id.clone(), container_id: c.id.clone(), container: c.name.clone(), failures });
                t.last_restart_ms = Some(now_ms);
                t.streak = 0;
            }
        }
        // Forget containers gone from the host once their cooldown is over.
        let present: Vec<&str> = host.containers.iter().map(|c| c.name.as_str()).collect();
        self.tracks.retain(|(h, name), t| {
            h != &host.id || present.contains(&name.as_str()) || t.last_restart_ms.is_some_and(|l| now_ms.saturating_sub(l) < cooldown_ms)
        });
        out
    }
}
