//! Silences: label [`Matcher`]s with a start and an end, created through the API
//! (`POST /api/v1/silences` with a [`NewSilence`]). A silenced alert keeps its lifecycle but sends
//! nothing while the silence is active.
//!
//! An alert's labels are `rule`, `severity`, `subject` (host id, `partition:<name>`,
//! `worker:<name>`), `host` and `host_name` (host subjects only) and `group` (matches when any of
//! the host's groups equals the value). A silence matches when every matcher matches.

use super::engine::Alert;
use super::AlertError;
use serde::{Deserialize, Serialize};

/// Label names a matcher may use.
pub const LABELS: [&str; 6] = ["rule", "severity", "subject", "host", "host_name", "group"];
/// Longest silence: 90 days.
pub const MAX_SILENCE_MS: i64 = 90 * 86_400_000;

/// `label = value` or `label != value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// One of [`LABELS`].
    pub label: String,
    /// The value compared with.
    pub value: String,
    /// `true`: matches when the label differs (`!=`).
    #[serde(default)]
    pub negate: bool,
}

impl Matcher {
    /// Whether `alert` matches.
    pub fn matches(&self, alert: &Alert) -> bool {
        let hit = match self.label.as_str() {
            "rule" => alert.rule == self.value,
            "severity" => alert.severity.as_str().eq_ignore_ascii_case(&self.value),
            "subject" => alert.subject == self.value,
            "host" => alert.host.as_deref() == Some(self.value.as_str()),
            "host_name" => alert.host_name.as_deref() == Some(self.value.as_str()),
            "group" => alert.groups.contains(&self.value),
            _ => false,
        };
        hit != self.negate
    }
}

/// A request to create a silence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// At least one matcher; all must match.
    pub matchers: Vec<Matcher>,
    /// Start, epoch ms (default: now).
    #[serde(default)]
    pub starts_ms: Option<i64>,
    /// End, epoch ms; give this or `duration`.
    #[serde(default)]
    pub ends_ms: Option<i64>,
    /// Length from the start (`2h`, `30m`); give this or `ends_ms`.
    #[serde(default)]
    pub duration: Option<String>,
    /// Who asked (the API fills it from the key's owner).
    #[serde(default)]
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// A stored silence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// Random id (16 hex digits).
    pub id: String,
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// Active from, epoch ms.
    pub starts_ms: i64,
    /// Active until (exclusive), epoch ms.
    pub ends_ms: i64,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// When it was created, epoch ms.
    pub created_ms: i64,
}

impl Silence {
    /// Whether it is in force at `now_ms`.
    pub fn active(&self, now_ms: i64) -> bool {
        self.starts_ms <= now_ms && now_ms < self.ends_ms
    }

    /// Whether it silences `alert` at `now_ms`.
    pub fn silences(&self, alert: &Alert, now_ms: i64) -> bool {
        self.active(now_ms) && self.matchers.iter().all(|m| m.matches(alert))
    }
}

impl NewSilence {
    /// The silence, with a fresh id, or what is wrong with the request.
    pub fn validate(self, now_ms: i64) -> Result<Silence, AlertError> {
        let bad = |field: &str, reason: &str| AlertError::InvalidSilence { field: field.to_owned(), reason: reason.to_owned() };
        if self.matchers.is_empty() {
            return Err(bad("matchers", "give at least one matcher (a silence of everything is refused)"));
        }
        if self.matchers.len() > 16 {
            return Err(bad("matchers", "at most 16 matchers"));
        }
        for m in &self.matchers {
            if !LABELS.contains(&m.label.as_str()) {
                return Err(AlertError::InvalidSilence { field: "matchers".into(), reason: format!("unknown label {:?}: use one of {}", m.label, LABELS.join(", ")) });
            }
            if m.value.is_empty() || m.value.len() > 256 {
                return Err(bad("matchers", "a matcher value must have 1 to 256 characters"));
            }
        }
        if self.matchers.iter().all(|m| m.negate) {
            return Err(bad("matchers", "at least one matcher must be an equality"));
        }
        if self.comment.len() > 1024 || self.created_by.len() > 256 {
            return Err(bad("comment", "too long (comment 1024, created_by 256 characters at most)"));
        }
        let starts_ms = self.starts_ms.unwrap_or(now_ms);
        let ends_ms = match (self.ends_ms, &self.duration) {
            (Some(e), None) => e,
            (None, Some(d)) => {
                let d = crate::config::parse_duration(d).map_err(|e| AlertError::InvalidSilence { field: "duration".into(), reason: e })?;
                starts_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
            (Some(_), Some(_)) => return Err(bad("duration", "give ends_ms or duration, not both")),
            (None, None) => return Err(bad("ends_ms", "give ends_ms or duration")),
        };
        if ends_ms <= starts_ms {
            return Err(bad("ends_ms", "must be after the start"));
        }
        if ends_ms <= now_ms {
            return Err(bad("ends_ms", "is in the past"));
        }
        if ends_ms - starts_ms > MAX_SILENCE_MS {
            return Err(bad("ends_ms", "a silence lasts at most 90 days"));
        }
        let id = format!("{:016x}", rand::random::<u64>());
        Ok(Silence { id, matchers: self.matchers, starts_ms, ends_ms, created_by: self.created_by, comment: self.comment, created_ms: now_ms })
    }
}
