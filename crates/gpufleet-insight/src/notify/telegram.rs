//! [`TelegramNotifier`]: `POST {api_base}/bot{token}/sendMessage` with
//! `{"chat_id", "text", "disable_web_page_preview": true}`; plain text (no `parse_mode`, so no
//! escaping rules to get wrong), cut to Telegram's 4096 characters. A failure's `description`
//! from the API is kept in the error (it never contains the token); the URL, which does, is not.

use super::{post_json, redacted_origin, truncate_chars, Message, Notifier, NotifyError};
use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::json;
use std::time::Duration;

/// Longest message Telegram accepts.
pub const MAX_TEXT: usize = 4096;

/// A Telegram bot posting to one chat.
pub struct TelegramNotifier {
    name: String,
    /// `{api_base}/bot{token}/sendMessage`: holds the token, never logged.
    url: reqwest::Url,
    chat_id: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for TelegramNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramNotifier").field("name", &self.name).field("api", &redacted_origin(&self.url)).field("chat_id", &self.chat_id).finish()
    }
}

impl TelegramNotifier {
    /// A bot with `token` posting to `chat_id` through `api_base`.
    pub fn new(name: String, api_base: &str, token: &str, chat_id: &str, client: reqwest::Client) -> Result<Self, NotifyError> {
        let bad = |reason: &str| NotifyError::Config { notifier: name.clone(), reason: reason.to_owned() };
        if token.is_empty() || token.contains('/') || token.chars().any(char::is_whitespace) {
            return Err(bad("token is empty or has '/' or spaces"));
        }
        let url = reqwest::Url::parse(&format!("{}/bot{token}/sendMessage", api_base.trim_end_matches('/'))).map_err(|_| bad("api_base is not a valid URL"))?;
        Ok(Self { name, url, chat_id: chat_id.to_owned(), client })
    }
}

/// The body Telegram receives.
pub fn body(chat_id: &str, msg: &Message) -> serde_json::Value {
    json!({ "chat_id": chat_id, "text": truncate_chars(&msg.text(), MAX_TEXT), "disable_web_page_preview": true })
}

fn description(v: &serde_json::Value) -> Option<String> {
    v.get("description").and_then(|d| d.as_str()).map(str::to_owned)
}

#[async_trait]
impl Notifier for TelegramNotifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "telegram"
    }
    async fn send_once(&self, msg: &Message, timeout: Duration) -> Result<(), NotifyError> {
        post_json(&self.client, &self.name, &self.url, &HeaderMap::new(), &body(&self.chat_id, msg), timeout, description).await
    }
}
