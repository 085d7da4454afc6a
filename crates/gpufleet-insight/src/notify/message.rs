//! [`Message`]: one notification as every notifier renders it — a title, plain lines, and the
//! JSON the generic webhook posts — built from alert notices or a digest.

use crate::alert::{Notice, NoticeKind, Severity};
use serde_json::{json, Value};

/// Alerts sent one message each per evaluation; the rest are grouped into one summary.
pub const MAX_INDIVIDUAL: usize = 10;

/// One notification.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// One line: `[CRIT] gpu-07: host_unreachable`.
    pub title: String,
    /// Body lines, plain text.
    pub lines: Vec<String>,
    /// Highest severity in it (`None` for a digest or a resolution).
    pub severity: Option<Severity>,
    /// What the generic webhook posts.
    pub payload: Value,
}

impl Message {
    /// Title and lines as one plain text.
    pub fn text(&self) -> String {
        let mut s = self.title.clone();
        for l in &self.lines {
            s.push('\n');
            s.push_str(l);
        }
        s
    }

    /// One message for one alert notice.
    pub fn from_notice(n: &Notice) -> Self {
        let a = &n.alert;
        let subject = a.host_name.as_deref().unwrap_or(&a.subject);
        let (title, severity) = match n.kind {
            NoticeKind::Resolved => (format!("[RESOLVED] {subject}: {}", a.rule), None),
            NoticeKind::Repeat => (format!("[{}] {subject}: {} (still firing)", a.severity, a.rule), Some(a.severity)),
            NoticeKind::SeverityChanged => (format!("[{}] {subject}: {} (severity now {})", a.severity, a.rule, a.severity), Some(a.severity)),
            NoticeKind::Firing => (format!("[{}] {subject}: {}", a.severity, a.rule), Some(a.severity)),
        };
        let mut lines = vec![a.message.clone()];
        if let Some(f) = a.fired_ms {
            lines.push(format!("firing since {}", gpufleet_core::time::format_rfc3339(f)));
        }
        if let Some(r) = a.resolved_ms {
            lines.push(format!("resolved at {}", gpufleet_core::time::format_rfc3339(r)));
        }
        let payload = json!({ "kind": "alert", "notice": n.kind, "alert": a });
        Self { title, lines, severity, payload }
    }

    /// Messages for one evaluation's notices: the first [`MAX_INDIVIDUAL`] one each, the rest in
    /// one summary (so a network split does not send ten thousand messages).
    pub fn from_notices(notices: &[Notice]) -> Vec<Self> {
        let mut out: Vec<Message> = notices.iter().take(MAX_INDIVIDUAL).map(Message::from_notice).collect();
        let rest = notices.get(MAX_INDIVIDUAL..).unwrap_or(&[]);
        if !rest.is_empty() {
            let firing = rest.iter().filter(|n| n.kind != NoticeKind::Resolved).count();
            let severity = rest.iter().filter(|n| n.kind != NoticeKind::Resolved).map(|n| n.alert.severity).max();
            let mut lines: Vec<String> = rest.iter().take(50).map(|n| Message::from_notice(n).title).collect();
            if rest.len() > 50 {
                lines.push(format!("… and {} more (see GET /api/v1/alerts)", rest.len() - 50));
            }
            let title = format!("{} more alert notifications: {firing} firing, {} resolved", rest.len(), rest.len() - firing);
            let payload = json!({ "kind": "alert_summary", "notices": rest });
            out.push(Message { title, lines, severity, payload });
        }
        out
    }
}
