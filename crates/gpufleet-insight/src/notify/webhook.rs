//! [`WebhookNotifier`]: `POST <url>` with [`Message::payload`] as JSON, plus `title` and `text`
//! fields for receivers that only want a line. Any 2xx is success.

use super::{no_detail, post_json, redacted_origin, Message, Notifier, NotifyError};
use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::time::Duration;

/// A generic JSON webhook.
pub struct WebhookNotifier {
    name: String,
    url: reqwest::Url,
    headers: HeaderMap,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier").field("name", &self.name).field("url", &redacted_origin(&self.url)).finish()
    }
}

impl WebhookNotifier {
    /// A webhook posting to `url` with extra `headers`.
    pub fn new(name: String, url: &str, headers: &BTreeMap<String, String>, client: reqwest::Client) -> Result<Self, NotifyError> {
        let bad = |reason: &str| NotifyError::Config { notifier: name.clone(), reason: reason.to_owned() };
        let url = reqwest::Url::parse(url).map_err(|_| bad("url is not a valid URL"))?;
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let k = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad("invalid header name"))?;
            let mut v = HeaderValue::from_str(v).map_err(|_| bad("invalid header value"))?;
            v.set_sensitive(true);
            map.insert(k, v);
        }
        Ok(Self { name, url, headers: map, client })
    }
}

/// The body a generic webhook receives.
pub fn body(msg: &Message) -> serde_json::Value {
    let mut body = match &msg.payload {
        serde_json::Value::Object(m) => m.clone(),
        other => {
            let mut m = serde_json::Map::new();
            m.insert("payload".into(), other.clone());
            m
        }
    };
    body.insert("title".into(), msg.title.clone().into());
    body.insert("text".into(), msg.text().into());
    body.insert("severity".into(), serde_json::to_value(msg.severity).unwrap_or(serde_json::Value::Null));
    serde_json::Value::Object(body)
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "webhook"
    }
    async fn send_once(&self, msg: &Message, timeout: Duration) -> Result<(), NotifyError> {
        post_json(&self.client, &self.name, &self.url, &self.headers, &body(msg), timeout, no_detail).await
    }
}
