//! The alert lifecycle, driven by explicit [`AlertEngine::evaluate`] calls (no clock inside, so
//! tests pass the time):
//!
//! ```text
//!   condition true ──► pending ──(held `for`)──► firing ──(condition false)──► resolved
//!                         │                        │  ▲
//!                         └──(false)──► dropped    └──┘ repeat every `repeat_interval`,
//!                                                       and at once when the severity changes
//! ```
//!
//! - **Dedupe**: one active alert per (rule, subject); a new alert starts only after the previous
//!   one resolved.
//! - **Unknown data** (an unreachable host has no metrics): the alert stays as it is.
//! - **Subject gone** (host removed, partition created, worker gone): the alert resolves.
//! - **Suppression**: an active silence matching the alert, or its host in maintenance, marks it
//!   suppressed; a suppressed alert sends nothing. One that fired while suppressed is sent when
//!   the suppression ends, if it is still firing.
//! - **Resolved** is sent only for alerts whose firing was sent.

use super::eval::{self, Outcome, Verdict};
use super::rule::{Builtin, Rule, Severity};
use super::silence::Silence;
use super::observe::Observations;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};

/// Where an alert is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition holds but not yet for the rule's `for`.
    Pending,
    /// Firing.
    Firing,
    /// Over.
    Resolved,
}

impl AlertStatus {
    /// `pending`, `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Pending => "pending",
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// Why an alert sends nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Suppression {
    /// A silence matches it.
    Silence {
        /// The silence's id.
        id: String,
    },
    /// Its host is in maintenance.
    Maintenance,
}

/// One alert: a (rule, subject) from its first true evaluation to its resolution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `<rule>/<subject>/<started_ms>`.
    pub id: String,
    /// Rule name.
    pub rule: String,
    /// Host id, `partition:<name>` or `worker:<name>`.
    pub subject: String,
    /// Host id, when about a host.
    pub host: Option<String>,
    /// Host name, when about a host.
    pub host_name: Option<String>,
    /// The host's groups.
    pub groups: Vec<String>,
    /// Severity now (may rise or fall while firing).
    pub severity: Severity,
    /// Lifecycle state.
    pub status: AlertStatus,
    /// Value that tripped it, if numeric (last seen).
    pub value: Option<f64>,
    /// Last message.
    pub message: String,
    /// First true evaluation, epoch ms.
    pub started_ms: i64,
    /// When it fired.
    pub fired_ms: Option<i64>,
    /// When it resolved.
    pub resolved_ms: Option<i64>,
    /// Last notification sent about it.
    pub last_notified_ms: Option<i64>,
    /// Notifications sent (firing, repeats, escalations).
    pub notifications: u32,
    /// Why it sends nothing now, if so.
    pub suppressed: Option<Suppression>,
    /// Last change, epoch ms.
    pub updated_ms: i64,
}

/// Why a notification goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// It fired (or its suppression ended while firing).
    Firing,
    /// Still firing after `repeat_interval`.
    Repeat,
    /// Its severity changed while firing.
    SeverityChanged,
    /// It resolved.
    Resolved,
}

/// A notification to send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// Why.
    pub kind: NoticeKind,
    /// The alert as it is now.
    pub alert: Alert,
}

/// A change to persist.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Insert or replace (by id).
    Upsert(Box<Alert>),
    /// A pending alert that never fired: forget it.
    Remove(String),
}

/// What one evaluation produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluation {
    /// Notifications to send, in order.
    pub notices: Vec<Notice>,
    /// Changes to persist, in order.
    pub changes: Vec<Change>,
}

/// Rules, built-ins and active alerts.
#[derive(Debug)]
pub struct AlertEngine {
    rules: Vec<Rule>,
    builtins: Vec<Builtin>,
    repeat_ms: i64,
    active: BTreeMap<(String, String), Alert>,
    silences: Vec<Silence>,
    history: VecDeque<Alert>,
    history_len: usize,
}

impl AlertEngine {
    /// An engine with these rules; `repeat_ms` between repeats of a firing alert; the last
    /// `history_len` resolved alerts are kept in memory.
    pub fn new(rules: Vec<Rule>, builtins: Vec<Builtin>, repeat_ms: i64, history_len: usize) -> Self {
        Self { rules, builtins, repeat_ms: repeat_ms.max(1), active: BTreeMap::new(), silences: Vec::new(), history: VecDeque::new(), history_len }
    }

    /// Restores active alerts and silences (after a restart).
    pub fn restore(&mut self, active: Vec<Alert>, silences: Vec<Silence>, history: Vec<Alert>) {
        for a in active.into_iter().filter(|a| a.status != AlertStatus::Resolved) {
            self.active.insert((a.rule.clone(), a.subject.clone()), a);
        }
        self.silences = silences;
        for h in history.into_iter().take(self.history_len) {
            self.history.push_back(h);
        }
    }

    /// Active alerts (pending and firing), by rule then subject.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.active.values()
    }

    /// Resolved alerts kept in memory, newest first.
    pub fn history(&self) -> impl Iterator<Item = &Alert> {
        self.history.iter()
    }

    /// Every silence held (active, future and expired ones not yet pruned).
    pub fn silences(&self) -> &[Silence] {
        &self.silences
    }

    /// Adds a silence; it applies from the next evaluation.
    pub fn add_silence(&mut self, s: Silence) {
        self.silences.push(s);
    }

    /// Removes a silence; whether it existed.
    pub fn remove_silence(&mut self, id: &str) -> bool {
        let before = self.silences.len();
        self.silences.retain(|s| s.id != id);
        before != self.silences.len()
    }

    /// Drops silences that ended before `now_ms`; their ids.
    pub fn prune_silences(&mut self, now_ms: i64) -> Vec<String> {
        let (gone, kept): (Vec<Silence>, Vec<Silence>) = std::mem::take(&mut self.silences).into_iter().partition(|s| s.ends_ms <= now_ms);
        self.silences = kept;
        gone.into_iter().map(|s| s.id).collect()
    }

    fn suppression(&self, alert: &Alert, maintenance: bool, now_ms: i64) -> Option<Suppression> {
        if maintenance {
            return Some(Suppression::Maintenance);
        }
        self.silences.iter().find(|s| s.silences(alert, now_ms)).map(|s| Suppression::Silence { id: s.id.clone() })
    }

    /// One evaluation at `now_ms`.
    pub fn evaluate(&mut self, now_ms: i64, obs: &Observations) -> Evaluation {
        let evaluated = eval::evaluate(&self.rules, &self.builtins, obs);
        let mut out = Evaluation::default();
        let mut seen: HashSet<(String, String)> = HashSet::with_capacity(evaluated.outcomes.len());
        for o in evaluated.outcomes {
            let key = (o.rule.clone(), o.subject.key.clone());
            seen.insert(key.clone());
            self.step(now_ms, key, o, &mut out);
        }
        // Alerts whose subject was not evaluated: resolve, unless their whole rule was unknown.
        let unknown: HashSet<&str> = evaluated.unknown_rules.iter().map(String::as_str).collect();
        let gone: Vec<(String, String)> = self.active.keys().filter(|k| !seen.contains(*k) && !unknown.contains(k.0.as_str())).cloned().collect();
        for key in gone {
            if let Some(a) = self.active.remove(&key) {
                self.end(now_ms, a, &mut out);
            }
        }
        out
    }

    fn step(&mut self, now_ms: i64, key: (String, String), o: Outcome, out: &mut Evaluation) {
        let maintenance = o.subject.maintenance;
        match (self.active.remove(&key), o.verdict) {
            (None, Verdict::Firing(sig)) => {
                let mut a = Alert {
                    id: format!("{}/{}/{now_ms}", o.rule, o.subject.key),
                    rule: o.rule,
                    subject: o.subject.key,
                    host: o.subject.host,
                    host_name: o.subject.host_name,
                    groups: o.subject.groups,
                    severity: sig.severity,
                    status: AlertStatus::Pending,
                    value: sig.value,
                    message: sig.message,
                    started_ms: now_ms,
                    fired_ms: None,
                    resolved_ms: None,
                    last_notified_ms: None,
                    notifications: 0,
                    suppressed: None,
                    updated_ms: now_ms,
                };
                a.suppressed = self.suppression(&a, maintenance, now_ms);
                let for_ms = i64::try_from(o.for_.as_millis()).unwrap_or(i64::MAX);
                self.advance(now_ms, &mut a, for_ms, false, out);
                out.changes.push(Change::Upsert(Box::new(a.clone())));
                self.active.insert(key, a);
            }
            (None, _) => {}
            (Some(a), Verdict::Unknown) => {
                self.active.insert(key, a);
            }
            (Some(a), Verdict::Clear) => self.end(now_ms, a, out),
            (Some(mut a), Verdict::Firing(sig)) => {
                let before = a.clone();
                let escalated = a.status == AlertStatus::Firing && sig.severity != a.severity;
                a.severity = sig.severity;
                a.value = sig.value;
                a.message = sig.message;
                a.groups = o.subject.groups;
                a.suppressed = self.suppression(&a, maintenance, now_ms);
                let for_ms = i64::try_from(o.for_.as_millis()).unwrap_or(i64::MAX);
                self.advance(now_ms, &mut a, for_ms, escalated, out);
                // Persist only real changes (not every evaluation of a steady alert).
                if (Alert { updated_ms: before.updated_ms, ..a.clone() }) != before {
                    out.changes.push(Change::Upsert(Box::new(a.clone())));
                }
                self.active.insert(key, a);
            }
        }
    }

    /// Pending → firing when held long enough; queues the notification that is due.
    fn advance(&self, now_ms: i64, a: &mut Alert, for_ms: i64, escalated: bool, out: &mut Evaluation) {
        if a.status == AlertStatus::Pending && now_ms.saturating_sub(a.started_ms) >= for_ms {
            a.status = AlertStatus::Firing;
            a.fired_ms = Some(now_ms);
        }
        let kind = if a.status != AlertStatus::Firing || a.suppressed.is_some() {
            None
        } else {
            match a.last_notified_ms {
                None => Some(NoticeKind::Firing),
                Some(_) if escalated => Some(NoticeKind::SeverityChanged),
                Some(last) if now_ms.saturating_sub(last) >= self.repeat_ms => Some(NoticeKind::Repeat),
                Some(_) => None,
            }
        };
        a.updated_ms = now_ms;
        if let Some(kind) = kind {
            a.last_notified_ms = Some(now_ms);
            a.notifications += 1;
            out.notices.push(Notice { kind, alert: a.clone() });
        }
    }

    fn end(&mut self, now_ms: i64, mut a: Alert, out: &mut Evaluation) {
        if a.status == AlertStatus::Pending {
            out.changes.push(Change::Remove(a.id));
            return;
        }
        a.status = AlertStatus::Resolved;
        a.resolved_ms = Some(now_ms);
        a.updated_ms = now_ms;
        if a.last_notified_ms.is_some() {
            out.notices.push(Notice { kind: NoticeKind::Resolved, alert: a.clone() });
        }
        out.changes.push(Change::Upsert(Box::new(a.clone())));
        self.history.push_front(a);
        self.history.truncate(self.history_len);
    }
}
