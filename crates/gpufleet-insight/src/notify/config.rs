//! [`NotifierConfig`]: one `[[alerts.notifiers]]` entry, a closed serde-tagged enum with a
//! `build()` per variant.
//!
//! ```toml
//! [[alerts.notifiers]]
//! kind = "webhook"            # POST the JSON payload
//! name = "ops-webhook"
//! url = "https://hooks.example.com/gpufleet?token=…"
//! headers = { "X-Team" = "ml-infra" }
//!
//! [[alerts.notifiers]]
//! kind = "slack"              # Slack-compatible incoming webhook: {"text", "blocks"}
//! name = "slack"
//! url = "https://hooks.slack.com/services/…"
//!
//! [[alerts.notifiers]]
//! kind = "telegram"           # POST {api_base}/bot{token}/sendMessage
//! name = "tg"
//! token = "123456:ABC…"
//! chat_id = "-1001234567890"
//! # api_base = "https://api.telegram.org"
//! # timeout = "10s"; retries = 3 (every kind)
//! ```

use super::retry::RetryPolicy;
use super::slack::SlackNotifier;
use super::telegram::TelegramNotifier;
use super::webhook::WebhookNotifier;
use super::{Notifier, NotifyError};
use crate::config::parse_duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

fn d_timeout() -> String {
    "10s".into()
}
fn d_retries() -> u32 {
    3
}
fn d_telegram() -> String {
    "https://api.telegram.org".into()
}

/// One notifier as configured.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotifierConfig {
    /// Generic webhook: `POST url` with the alert or digest JSON.
    Webhook(WebhookConfig),
    /// Slack-compatible incoming webhook.
    Slack(SlackConfig),
    /// Telegram bot API.
    Telegram(TelegramConfig),
}

/// `kind = "webhook"`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name in logs and reports.
    pub name: String,
    /// Where to POST (a secret: may carry a token).
    pub url: String,
    /// Extra request headers (e.g. an `Authorization` the receiver wants).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-attempt timeout. Default `10s`.
    #[serde(default = "d_timeout")]
    pub timeout: String,
    /// Retries after the first attempt. Default 3.
    #[serde(default = "d_retries")]
    pub retries: u32,
}

/// `kind = "slack"`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Name in logs and reports.
    pub name: String,
    /// The incoming-webhook URL (a secret).
    pub url: String,
    /// Per-attempt timeout. Default `10s`.
    #[serde(default = "d_timeout")]
    pub timeout: String,
    /// Retries after the first attempt. Default 3.
    #[serde(default = "d_retries")]
    pub retries: u32,
}

/// `kind = "telegram"`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// Name in logs and reports.
    pub name: String,
    /// Bot token (a secret).
    pub token: String,
    /// Chat to post to (`-100…` for a group or channel, or `@channelname`).
    pub chat_id: String,
    /// API base URL. Default `https://api.telegram.org`.
    #[serde(default = "d_telegram")]
    pub api_base: String,
    /// Per-attempt timeout. Default `10s`.
    #[serde(default = "d_timeout")]
    pub timeout: String,
    /// Retries after the first attempt. Default 3.
    #[serde(default = "d_retries")]
    pub retries: u32,
}

impl std::fmt::Debug for NotifierConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs and tokens are secrets: show only the kind and the name.
        write!(f, "NotifierConfig({}:{})", self.kind(), self.name())
    }
}

impl NotifierConfig {
    /// The configured name.
    pub fn name(&self) -> &str {
        match self {
            NotifierConfig::Webhook(c) => &c.name,
            NotifierConfig::Slack(c) => &c.name,
            NotifierConfig::Telegram(c) => &c.name,
        }
    }

    /// `webhook`, `slack` or `telegram`.
    pub fn kind(&self) -> &'static str {
        match self {
            NotifierConfig::Webhook(_) => "webhook",
            NotifierConfig::Slack(_) => "slack",
            NotifierConfig::Telegram(_) => "telegram",
        }
    }

    fn delivery(&self) -> (&str, u32) {
        match self {
            NotifierConfig::Webhook(c) => (&c.timeout, c.retries),
            NotifierConfig::Slack(c) => (&c.timeout, c.retries),
            NotifierConfig::Telegram(c) => (&c.timeout, c.retries),
        }
    }

    /// The retry policy it asks for.
    pub fn policy(&self) -> Result<RetryPolicy, String> {
        let (timeout, retries) = self.delivery();
        let timeout = parse_duration(timeout)?;
        if timeout.is_zero() {
            return Err(format!("{}: timeout must be above 0", self.name()));
        }
        if retries > 10 {
            return Err(format!("{}: at most 10 retries", self.name()));
        }
        Ok(RetryPolicy { attempts: retries + 1, timeout, ..RetryPolicy::default() })
    }

    /// Checks the configuration without building (names the notifier, never its secrets).
    pub fn check(&self) -> Result<(), String> {
        let name = self.name();
        if name.is_empty() {
            return Err(format!("a {} notifier needs a name", self.kind()));
        }
        self.policy()?;
        let url_ok = |u: &str| reqwest::Url::parse(u).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some()).is_some();
        match self {
            NotifierConfig::Webhook(c) if !url_ok(&c.url) => Err(format!("{name}: url must be an http(s) URL")),
            NotifierConfig::Slack(c) if !url_ok(&c.url) => Err(format!("{name}: url must be an http(s) URL")),
            NotifierConfig::Telegram(c) if !url_ok(&c.api_base) => Err(format!("{name}: api_base must be an http(s) URL")),
            NotifierConfig::Telegram(c) if c.token.is_empty() || c.token.contains('/') || c.token.chars().any(char::is_whitespace) => {
                Err(format!("{name}: token is empty or has '/' or spaces"))
            }
            NotifierConfig::Telegram(c) if c.chat_id.is_empty() => Err(format!("{name}: chat_id is empty")),
            NotifierConfig::Webhook(c) => {
                for (k, v) in &c.headers {
                    if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() || reqwest::header::HeaderValue::from_str(v).is_err() {
                        return Err(format!("{name}: header {k:?} is not a valid HTTP header"));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The notifier and its retry policy.
    pub fn build(&self, client: reqwest::Client) -> Result<(Arc<dyn Notifier>, RetryPolicy), NotifyError> {
        let name = self.name().to_owned();
        self.check().map_err(|reason| NotifyError::Config { notifier: name.clone(), reason })?;
        let policy = self.policy().map_err(|reason| NotifyError::Config { notifier: name.clone(), reason })?;
        let n: Arc<dyn Notifier> = match self {
            NotifierConfig::Webhook(c) => Arc::new(WebhookNotifier::new(name, &c.url, &c.headers, client)?),
            NotifierConfig::Slack(c) => Arc::new(SlackNotifier::new(name, &c.url, client)?),
            NotifierConfig::Telegram(c) => Arc::new(TelegramNotifier::new(name, &c.api_base, &c.token, &c.chat_id, client)?),
        };
        Ok((n, policy))
    }
}
