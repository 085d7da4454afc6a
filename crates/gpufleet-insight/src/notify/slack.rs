//! [`SlackNotifier`]: a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat):
//! `{"text": …, "blocks": [header, section]}`. `text` is the fallback shown in notifications;
//! the header holds the title (150 characters at most), the section the lines as `mrkdwn`
//! (3000 at most), with `&`, `<` and `>` escaped as Slack requires.

use super::{no_detail, post_json, redacted_origin, truncate_chars, Message, Notifier, NotifyError};
use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::json;
use std::time::Duration;

/// A Slack-compatible webhook.
pub struct SlackNotifier {
    name: String,
    url: reqwest::Url,
    client: reqwest::Client,
}

impl std::fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackNotifier").field("name", &self.name).field("url", &redacted_origin(&self.url)).finish()
    }
}

impl SlackNotifier {
    /// A notifier posting to the incoming-webhook `url`.
    pub fn new(name: String, url: &str, client: reqwest::Client) -> Result<Self, NotifyError> {
        let url = reqwest::Url::parse(url).map_err(|_| NotifyError::Config { notifier: name.clone(), reason: "url is not a valid URL".into() })?;
        Ok(Self { name, url, client })
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The body Slack receives.
pub fn body(msg: &Message) -> serde_json::Value {
    let section = if msg.lines.is_empty() { escape(&msg.title) } else { escape(&msg.lines.join("\n")) };
    json!({
        "text": truncate_chars(&escape(&msg.text()), 3000),
        "blocks": [
            { "type": "header", "text": { "type": "plain_text", "text": truncate_chars(&msg.title, 150) } },
            { "type": "section", "text": { "type": "mrkdwn", "text": truncate_chars(&section, 3000) } }
        ]
    })
}

#[async_trait]
impl Notifier for SlackNotifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "slack"
    }
    async fn send_once(&self, msg: &Message, timeout: Duration) -> Result<(), NotifyError> {
        post_json(&self.client, &self.name, &self.url, &HeaderMap::new(), &body(msg), timeout, no_detail).await
    }
}
