//! The `[fleet]` config section as written ([`FleetConfig`]: serde, `deny_unknown_fields`, named
//! defaults) and its validation into [`FleetSettings`], whose types cannot hold invalid values.
//! Every refusal names the field (`fleet.health_timeout: …`, `fleet.hosts[2].agent_url: …`).
//!
//! ```toml
//! [fleet]
//! health_interval = "30s"      # one health cycle over every active host
//! health_timeout = "5s"        # per try
//! health_concurrency = 256     # checks in flight at once
//! health_retry_backoff = "200ms"
//! unreachable_after = 3        # tries in a row without an answer → unreachable
//! metrics_interval = "60s"
//! history_retention = "30d"    # health checks and state-change events
//! metrics_retention = "90d"    # whole monthly partitions older than this are dropped
//! agent_token = "…"            # sent to agents as `Authorization: Bearer` (metrics, restarts)
//! agent_keepalive = 10000      # idle keep-alive connections kept to agents (0: none)
//! [[fleet.hosts]]
//! name = "gpu-01"
//! agent_url = "http://10.0.0.5:9100"
//! groups = ["gpu"]
//! tags = { rack = "r3" }
//! maintenance = false
//! watchdog = true
//! ```

use crate::error::FleetError;
use crate::spec::{HostInput, HostSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;
use thiserror::Error;

/// Default `agent_keepalive`: one idle connection per agent up to 10,000 agents (as Prometheus
/// keeps one per target): ~30 MB and 10,000 descriptors at most, and no connection set-up in a
/// cycle (measured: 0.59 s against 0.81–1.3 s per 10,000-host cycle with 4,096).
pub const DEFAULT_AGENT_KEEPALIVE: usize = 10_000;

/// The `[fleet]` section.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Time between the starts of two health cycles. Default "30s".
    pub health_interval: String,
    /// Longest one try of a health check may take (connect + answer). Default "5s".
    pub health_timeout: String,
    /// Health checks in flight at once. Default 256.
    pub health_concurrency: usize,
    /// Pause before the second try of a failed check (doubled for each further try). Default "200ms".
    pub health_retry_backoff: String,
    /// Tries in a row without an answer before a host is `unreachable`; a cycle retries a host
    /// until it answers or reaches this, so a host that stops answering turns `unreachable` within
    /// one cycle. Default 3.
    pub unreachable_after: u32,
    /// Time between the starts of two metrics rounds. Default "60s".
    pub metrics_interval: String,
    /// How long health checks and state-change events are kept. Default "30d".
    pub history_retention: String,
    /// How long host metrics are kept (whole months are dropped once entirely older). Default "90d".
    pub metrics_retention: String,
    /// Agent token sent as `Authorization: Bearer` to `/metrics/host` (and used by the watchdog
    /// for restarts). Never logged. Default none.
    pub agent_token: Option<String>,
    /// Idle keep-alive connections kept to agents, one per agent at most (each is its bare socket:
    /// one descriptor and ~3 KB); agents beyond it get a new connection per check. 0 turns
    /// keep-alive off. Default [`DEFAULT_AGENT_KEEPALIVE`]; the server lowers it (with a warning)
    /// where the open-file limit cannot hold that many.
    pub agent_keepalive: usize,
    /// Hosts registered (or updated, matched by name) at start. Hosts added through the API are
    /// kept; removing an entry here does not delete the host.
    pub hosts: Vec<HostInput>,
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("health_interval", &self.health_interval)
            .field("health_timeout", &self.health_timeout)
            .field("health_concurrency", &self.health_concurrency)
            .field("health_retry_backoff", &self.health_retry_backoff)
            .field("unreachable_after", &self.unreachable_after)
            .field("metrics_interval", &self.metrics_interval)
            .field("history_retention", &self.history_retention)
            .field("metrics_retention", &self.metrics_retention)
            .field("agent_token", &self.agent_token.as_ref().map(|_| "<redacted>"))
            .field("agent_keepalive", &self.agent_keepalive)
            .field("hosts", &self.hosts.len())
            .finish()
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            health_interval: "30s".into(),
            health_timeout: "5s".into(),
            health_concurrency: 256,
            health_retry_backoff: "200ms".into(),
            unreachable_after: 3,
            metrics_interval: "60s".into(),
            history_retention: "30d".into(),
            metrics_retention: "90d".into(),
            agent_token: None,
            agent_keepalive: DEFAULT_AGENT_KEEPALIVE,
            hosts: Vec::new(),
        }
    }
}

/// An invalid `[fleet]` section; the message names the field.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("fleet.{field}: {problem}")]
pub struct ConfigError {
    /// Field path below `fleet`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), problem: problem.into() }
}

fn dur(field: &str, s: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(s).map_err(|e| bad(field, format!("{s:?} is not a duration (e.g. 500ms, 30s, 30d): {e}")))?;
    if d.is_zero() {
        return Err(bad(field, "must be longer than zero"));
    }
    Ok(d)
}

/// A secret whose `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentToken(String);

impl AgentToken {
    /// A token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself (to put in a header; never log it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Validated `[fleet]` settings.
#[derive(Clone, Debug)]
pub struct FleetSettings {
    /// > 0.
    pub health_interval: Duration,
    /// > 0 and below `health_interval`.
    pub health_timeout: Duration,
    /// ≥ 1.
    pub health_concurrency: NonZeroUsize,
    /// > 0.
    pub health_retry_backoff: Duration,
    /// ≥ 1.
    pub unreachable_after: NonZeroU32,
    /// > 0.
    pub metrics_interval: Duration,
    /// ≥ 1 h.
    pub history_retention: Duration,
    /// ≥ 31 days (so the current and last month stay).
    pub metrics_retention: Duration,
    /// Agent token.
    pub agent_token: Option<AgentToken>,
    /// At most 1,000,000.
    pub agent_keepalive: usize,
    /// Config hosts, validated, unique names.
    pub hosts: Vec<HostSpec>,
}

impl Default for FleetSettings {
    fn default() -> Self {
        // The defaults are valid by construction; the test below checks it.
        FleetConfig::default().validate().unwrap_or_else(|e| panic!("default fleet config is invalid: {e}"))
    }
}

impl FleetConfig {
    /// Validates into [`FleetSettings`].
    pub fn validate(&self) -> Result<FleetSettings, ConfigError> {
        let health_interval = dur("health_interval", &self.health_interval)?;
        let health_timeout = dur("health_timeout", &self.health_timeout)?;
        if health_timeout >= health_interval {
            return Err(bad("health_timeout", format!("{} must be shorter than health_interval ({})", self.health_timeout, self.health_interval)));
        }
        let health_concurrency = NonZeroUsize::new(self.health_concurrency)
            .filter(|n| n.get() <= 65_536)
            .ok_or_else(|| bad("health_concurrency", format!("{} must be 1 to 65536", self.health_concurrency)))?;
        let unreachable_after = NonZeroU32::new(self.unreachable_after)
            .filter(|n| n.get() <= 10)
            .ok_or_else(|| bad("unreachable_after", format!("{} must be 1 to 10 tries", self.unreachable_after)))?;
        let history_retention = dur("history_retention", &self.history_retention)?;
        if history_retention < Duration::from_secs(3600) {
            return Err(bad("history_retention", "must be at least 1h"));
        }
        let metrics_retention = dur("metrics_retention", &self.metrics_retention)?;
        if metrics_retention < Duration::from_secs(31 * 86_400) {
            return Err(bad("metrics_retention", "must be at least 31d (metrics are kept in whole months)"));
        }
        let agent_token = match &self.agent_token {
            Some(t) if t.trim().is_empty() => return Err(bad("agent_token", "is empty; leave it out instead")),
            Some(t) => Some(AgentToken::new(t.trim())),
            None => None,
        };
        if self.agent_keepalive > 1_000_000 {
            return Err(bad("agent_keepalive", format!("{} must be 0 to 1000000", self.agent_keepalive)));
        }
        let mut names = BTreeSet::new();
        let mut hosts = Vec::with_capacity(self.hosts.len());
        for (i, h) in self.hosts.iter().enumerate() {
            let spec = h.validate().map_err(|e| match e {
                FleetError::Invalid { field, problem } => bad(format!("hosts[{i}].{field}"), problem),
                other => bad(format!("hosts[{i}]"), other.to_string()),
            })?;
            if !names.insert(spec.name.clone()) {
                return Err(bad(format!("hosts[{i}].name"), format!("{:?} is listed twice", spec.name)));
            }
            hosts.push(spec);
        }
        Ok(FleetSettings {
            health_interval,
            health_timeout,
            health_concurrency,
            health_retry_backoff: dur("health_retry_backoff", &self.health_retry_backoff)?,
            unreachable_after,
            metrics_interval: dur("metrics_interval", &self.metrics_interval)?,
            history_retention,
            metrics_retention,
            agent_token,
            agent_keepalive: self.agent_keepalive,
            hosts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<FleetSettings, String> {
        #[derive(Deserialize)]
        struct Doc {
            fleet: FleetConfig,
        }
        let doc: Doc = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        doc.fleet.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_issues() {
        let s = FleetSettings::default();
        assert_eq!(s.health_interval, Duration::from_secs(30));
        assert_eq!(s.health_timeout, Duration::from_secs(5));
        assert_eq!(s.health_concurrency.get(), 256);
        assert_eq!(s.unreachable_after.get(), 3);
        assert_eq!(s.metrics_interval, Duration::from_secs(60));
        assert_eq!(s.history_retention, Duration::from_secs(30 * 86_400));
        assert!(s.hosts.is_empty() && s.agent_token.is_none());
    }

    #[test]
    fn a_full_section_parses() {
        let s = parse(
            r#"[fleet]
health_interval = "10s"
health_timeout = "2s"
health_concurrency = 64
unreachable_after = 2
agent_token = "secret"
[[fleet.hosts]]
name = "gpu-01"
agent_url = "http://10.0.0.5:9100"
groups = ["gpu"]
tags = { rack = "r3" }
watchdog = true
[[fleet.hosts]]
name = "gpu-02"
agent_url = "http://10.0.0.6:9100"
maintenance = true
"#,
        )
        .unwrap();
        assert_eq!(s.health_interval, Duration::from_secs(10));
        assert_eq!(s.hosts.len(), 2);
        assert!(s.hosts[0].watchdog);
        assert_eq!(s.hosts[1].status, crate::HostStatus::Maintenance);
        assert_eq!(s.agent_token.as_ref().map(AgentToken::expose), Some("secret"));
        assert!(!format!("{s:?}").contains("secret"), "the token must not show in Debug");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("health_interval = \"soon\"", "fleet.health_interval"),
            ("health_timeout = \"40s\"", "fleet.health_timeout: 40s must be shorter"),
            ("health_concurrency = 0", "fleet.health_concurrency"),
            ("unreachable_after = 0", "fleet.unreachable_after"),
            ("history_retention = \"10m\"", "fleet.history_retention"),
            ("metrics_retention = \"7d\"", "fleet.metrics_retention"),
            ("metrics_interval = \"0s\"", "fleet.metrics_interval"),
            ("agent_token = \" \"", "fleet.agent_token"),
            ("agent_keepalive = 2000000", "fleet.agent_keepalive"),
            ("[[fleet.hosts]]\nname = \"a\"\nagent_url = \"gopher://x\"", "fleet.hosts[0].agent_url"),
            ("[[fleet.hosts]]\nname = \"a\"\nagent_url = \"http://x\"\n[[fleet.hosts]]\nname = \"a\"\nagent_url = \"http://y\"", "fleet.hosts[1].name"),
        ];
        for (body, needle) in cases {
            let err = parse(&format!("[fleet]\n{body}\n")).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
        let unknown = parse("[fleet]\nhealth_intervall = \"1s\"\n").unwrap_err();
        assert!(unknown.contains("unknown field"), "{unknown}");
    }
}
