//! Configuration of this crate as the binary's file sections `[alerts]` (with `[[alerts.rules]]`
//! and `[[alerts.notifiers]]`), `[watchdog]` and `[digest]`: serde structs with named defaults
//! and `deny_unknown_fields`, then `validate()` into checked settings. This crate reads no file
//! and no environment variable; the binary deserialises these and passes them in.

use crate::alert::rule::{Builtin, Rule, RuleConfig};
use crate::alert::AlertError;
use crate::notify::NotifierConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `30s`, `5m`, `1h 30m`, `7d` → a duration (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 30s, 5m, 4h, 7d"))
}

fn d_30s() -> String {
    "30s".into()
}
fn d_4h() -> String {
    "4h".into()
}
fn d_1000() -> usize {
    1000
}
fn d_true() -> bool {
    true
}

/// `[alerts]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often the rules are evaluated. Default `30s`.
    #[serde(default = "d_30s")]
    pub interval: String,
    /// How often a firing alert is sent again while it lasts. Default `4h`.
    #[serde(default = "d_4h")]
    pub repeat_interval: String,
    /// Resolved alerts kept for `GET /api/v1/alerts`. Default 1000.
    #[serde(default = "d_1000")]
    pub history: usize,
    /// Built-in rules to turn off, by name (`cpu_steal`, `container_unhealthy`, …).
    #[serde(default)]
    pub disable_builtin: Vec<String>,
    /// Configured rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Where notifications go (also the weekly digest).
    #[serde(default)]
    pub notifiers: Vec<NotifierConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self { interval: d_30s(), repeat_interval: d_4h(), history: d_1000(), disable_builtin: Vec::new(), rules: Vec::new(), notifiers: Vec::new() }
    }
}

/// [`AlertsConfig`] checked.
#[derive(Clone, Debug)]
pub struct AlertSettings {
    /// Evaluation interval.
    pub interval: Duration,
    /// Repeat interval of firing alerts.
    pub repeat_interval: Duration,
    /// Resolved alerts kept.
    pub history: usize,
    /// Built-in rules in force.
    pub builtins: Vec<Builtin>,
    /// Configured rules.
    pub rules: Vec<Rule>,
    /// Notifier configurations (built by [`crate::notify::Notifiers::build`]).
    pub notifiers: Vec<NotifierConfig>,
}

impl AlertsConfig {
    /// Checks every field and rule; errors name the rule and field.
    pub fn validate(&self) -> Result<AlertSettings, AlertError> {
        let field = |f: &str, reason: String| AlertError::InvalidConfig { field: format!("alerts.{f}"), reason };
        let interval = parse_duration(&self.interval).map_err(|e| field("interval", e))?;
        if interval < Duration::from_secs(1) {
            return Err(field("interval", "must be at least 1s".into()));
        }
        let repeat_interval = parse_duration(&self.repeat_interval).map_err(|e| field("repeat_interval", e))?;
        if repeat_interval < interval {
            return Err(field("repeat_interval", "must not be shorter than interval".into()));
        }
        for name in &self.disable_builtin {
            if Builtin::by_name(name).is_none() {
                let names: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
                return Err(field("disable_builtin", format!("unknown built-in rule {name:?}: the built-ins are {}", names.join(", "))));
            }
        }
        let builtins = Builtin::ALL.into_iter().filter(|b| !self.disable_builtin.iter().any(|n| n == b.name())).collect();
        let mut rules = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            let rule = r.validate()?;
            if rules.iter().any(|x: &Rule| x.name == rule.name) {
                return Err(field("rules", format!("two rules are named {:?}", rule.name)));
            }
            rules.push(rule);
        }
        let mut names = std::collections::HashSet::new();
        for n in &self.notifiers {
            n.check().map_err(|e| field("notifiers", e))?;
            if !names.insert(n.name()) {
                return Err(field("notifiers", format!("two notifiers are named {:?}", n.name())));
            }
        }
        Ok(AlertSettings { interval, repeat_interval, history: self.history, builtins, rules, notifiers: self.notifiers.clone() })
    }
}

fn d_3() -> u32 {
    3
}
fn d_30m() -> String {
    "30m".into()
}
fn d_8() -> usize {
    8
}
fn d_5s() -> String {
    "5s".into()
}

/// `[watchdog]`: restart containers whose health check keeps failing, on opted-in hosts only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogConfig {
    /// Hosts (ids or names) opted in.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Groups opted in.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Consecutive failed health checks before a restart. Default 3.
    #[serde(default = "d_3")]
    pub failures: u32,
    /// At most one restart per container per this long. Default `30m`.
    #[serde(default = "d_30m")]
    pub cooldown: String,
    /// How often opted-in hosts' containers are read. Default `30s`.
    #[serde(default = "d_30s")]
    pub interval: String,
    /// Hosts read at once. Default 8.
    #[serde(default = "d_8")]
    pub concurrency: usize,
    /// Timeout of one agent request. Default `5s`.
    #[serde(default = "d_5s")]
    pub timeout: String,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self { hosts: Vec::new(), groups: Vec::new(), failures: d_3(), cooldown: d_30m(), interval: d_30s(), concurrency: d_8(), timeout: d_5s() }
    }
}

/// `[digest]`: the weekly digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    /// Send it at all. Default true (when notifiers are configured).
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// Day of the week, UTC: `monday` … `sunday`. Default `monday`.
    #[serde(default = "d_monday")]
    pub weekday: String,
    /// Hour of the day, UTC, 0–23. Default 8.
    #[serde(default = "d_hour")]
    pub hour: u32,
    /// Notifier names to send it to; empty: all.
    #[serde(default)]
    pub notifiers: Vec<String>,
}

fn d_monday() -> String {
    "monday".into()
}
fn d_hour() -> u32 {
    8
}

impl Default for DigestConfig {
    fn default() -> Self {
        Self { enabled: true, weekday: d_monday(), hour: d_hour(), notifiers: Vec::new() }
    }
}
