//! Notifiers: where alerts and digests go. One [`Notifier`] per backend file — generic JSON
//! [`webhook`], Slack-compatible [`slack`] webhook, [`telegram`] bot API — each making one attempt
//! per call; [`deliver`] adds retries with capped exponential backoff (and `Retry-After` on 429)
//! and a per-attempt timeout; [`Notifiers`] is the configured set; [`queue`] decouples sending
//! from evaluation.
//!
//! Secrets: a Telegram token, a Slack webhook URL and a generic webhook URL (which often carries a
//! token) are secrets. They are never logged: `Debug` shows the host only, errors from the HTTP
//! client are stripped of their URL ([`reqwest::Error::without_url`]), and logs name the notifier,
//! not its address.
//!
//! # Layout
//! - [`message`]: [`Message`], what every notifier renders.
//! - [`config`]: [`NotifierConfig`] (`[[alerts.notifiers]]`), closed and serde-tagged.
//! - [`webhook`], [`slack`], [`telegram`]: the notifiers.
//! - [`retry`]: [`RetryPolicy`], [`deliver`].
//! - [`queue`]: [`NotifyQueue`] and its [`NotifyWorker`].

pub mod config;
pub mod message;
pub mod queue;
pub mod retry;
pub mod slack;
pub mod telegram;
pub mod webhook;

pub use config::NotifierConfig;
pub use message::Message;
pub use queue::{NotifyQueue, NotifyWorker};
pub use retry::{deliver, RetryPolicy};

use async_trait::async_trait;
use std::sync::Arc;
use thiserror::Error;

/// Why one attempt to notify failed. `retryable` is data, not a guess from the text.
#[derive(Debug, Error)]
pub enum NotifyError {
    /// The receiver answered with a status other than 2xx.
    #[error("{notifier}: receiver answered HTTP {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        /// Notifier name.
        notifier: String,
        /// HTTP status.
        status: u16,
        /// Short reason from the body (Telegram's `description`), when safe to show.
        detail: Option<String>,
        /// Seconds the receiver asked to wait (`Retry-After`).
        retry_after_s: Option<u64>,
    },
    /// Connecting, sending or reading failed (URL stripped).
    #[error("{notifier}: {error}")]
    Transport {
        /// Notifier name.
        notifier: String,
        /// The client's error without its URL.
        error: String,
        /// Whether it was the timeout.
        timeout: bool,
    },
    /// The configuration cannot work (bad URL).
    #[error("{notifier}: {reason}")]
    Config {
        /// Notifier name.
        notifier: String,
        /// What is wrong.
        reason: String,
    },
}

impl NotifyError {
    /// Whether trying again may help: transport errors, timeouts, 408, 429 and 5xx.
    pub fn retryable(&self) -> bool {
        match self {
            NotifyError::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            NotifyError::Transport { .. } => true,
            NotifyError::Config { .. } => false,
        }
    }

    pub(crate) fn transport(notifier: &str, e: reqwest::Error) -> Self {
        let timeout = e.is_timeout();
        NotifyError::Transport { notifier: notifier.to_owned(), error: e.without_url().to_string(), timeout }
    }
}

/// One place notifications go. Implementations make exactly one attempt per call; their `Debug`
/// must not show secrets.
#[async_trait]
pub trait Notifier: std::fmt::Debug + Send + Sync + 'static {
    /// The configured name (in logs and reports).
    fn name(&self) -> &str;
    /// `webhook`, `slack` or `telegram`.
    fn kind(&self) -> &'static str;
    /// One attempt, bounded by `timeout`.
    async fn send_once(&self, msg: &Message, timeout: std::time::Duration) -> Result<(), NotifyError>;
}

/// The outcome of sending one message to one notifier.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DeliveryReport {
    /// Notifier name.
    pub notifier: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error, when it failed.
    pub error: Option<String>,
}

/// The configured notifiers, each with its retry policy.
#[derive(Clone, Default)]
pub struct Notifiers {
    list: Vec<(Arc<dyn Notifier>, RetryPolicy)>,
}

impl std::fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.list.iter().map(|(n, _)| format!("{}:{}", n.kind(), n.name()))).finish()
    }
}

impl Notifiers {
    /// Builds every configured notifier with one shared HTTP client.
    pub fn build(configs: &[NotifierConfig]) -> Result<Self, NotifyError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("gpufleet/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| NotifyError::Config { notifier: "*".into(), reason: e.without_url().to_string() })?;
        let mut list = Vec::with_capacity(configs.len());
        for c in configs {
            list.push(c.build(client.clone())?);
        }
        Ok(Self { list })
    }

    /// A set from notifiers built elsewhere (tests, custom ones).
    pub fn from_parts(list: Vec<(Arc<dyn Notifier>, RetryPolicy)>) -> Self {
        Self { list }
    }

    /// Only the notifiers named in `names` (all when `names` is empty).
    pub fn subset(&self, names: &[String]) -> Self {
        if names.is_empty() {
            return self.clone();
        }
        Self { list: self.list.iter().filter(|(n, _)| names.iter().any(|x| x == n.name())).cloned().collect() }
    }

    /// Names of the notifiers, in order.
    pub fn names(&self) -> Vec<String> {
        self.list.iter().map(|(n, _)| n.name().to_owned()).collect()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Sends `msg` to every notifier at once, each with its retries; one report per notifier.
    pub async fn send_all(&self, msg: &Message) -> Vec<DeliveryReport> {
        let sends = self.list.iter().map(|(n, p)| async move {
            let (attempts, result) = deliver(n.as_ref(), msg, p).await;
            DeliveryReport { notifier: n.name().to_owned(), attempts, error: result.err().map(|e| e.to_string()) }
        });
        futures::future::join_all(sends).await
    }
}

/// Shortens `s` to at most `max` characters, marking the cut with `…`.
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `scheme://host[:port]` of a URL, for `Debug` output without paths or credentials.
pub(crate) fn redacted_origin(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}/…", url.scheme()),
        (Some(h), None) => format!("{}://{h}/…", url.scheme()),
        _ => "…".to_owned(),
    }
}

/// POSTs `body` as JSON to `url` with a `timeout`; maps the answer to [`NotifyError`]. A non-2xx
/// answer's body is read for a short reason only when `detail_from` extracts one.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    notifier: &str,
    url: &reqwest::Url,
    headers: &reqwest::header::HeaderMap,
    body: &serde_json::Value,
    timeout: std::time::Duration,
    detail_from: fn(&serde_json::Value) -> Option<String>,
) -> Result<(), NotifyError> {
    let resp = client
        .post(url.clone())
        .headers(headers.clone())
        .json(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| NotifyError::transport(notifier, e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after_s = resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let detail = match resp.bytes().await {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b).ok().as_ref().and_then(detail_from).map(|d| truncate_chars(&d, 200)),
        Err(_) => None,
    };
    Err(NotifyError::Status { notifier: notifier.to_owned(), status: status.as_u16(), detail, retry_after_s })
}

/// No reason is read from the answer.
pub(crate) fn no_detail(_: &serde_json::Value) -> Option<String> {
    None
}
