//! [`register_hosts`]: adds simulated hosts to a server's registry with `POST /api/v1/hosts`.
//!
//! Body per host: `{"name", "address": "127.0.0.1", "agent_url", "groups": ["sim"], "tags":
//! {"sim": "true", "scenario": "<scenario>"}}`, with `Authorization: Bearer <api key>`. Requests go
//! 16 at a time. A 409 (already registered) counts as done, so registering twice is harmless.

use super::SimHost;
use anyhow::bail;
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;

/// Requests in flight at once.
pub const REGISTER_CONCURRENCY: usize = 16;

/// The registration body of one host.
pub fn registration_body(h: &SimHost) -> serde_json::Value {
    json!({
        "name": h.name,
        "address": "127.0.0.1",
        "agent_url": h.agent_url,
        "groups": ["sim"],
        "tags": { "sim": "true", "scenario": h.scenario.to_string() },
    })
}

/// Registers every host; fails naming how many failed and the first reason.
pub async fn register_hosts(server_url: &str, api_key: &str, hosts: &[SimHost]) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let url = format!("{}/api/v1/hosts", server_url.trim_end_matches('/'));
    let results: Vec<Result<(), String>> = futures::stream::iter(hosts.iter())
        .map(|h| {
            let (client, url) = (&client, &url);
            async move {
                let resp = client.post(url).bearer_auth(api_key).json(&registration_body(h)).send().await.map_err(|e| format!("{}: {e}", h.name))?;
                let status = resp.status();
                if status.is_success() || status == reqwest::StatusCode::CONFLICT {
                    return Ok(());
                }
                let text = resp.text().await.unwrap_or_default();
                Err(format!("{}: {status} {}", h.name, text.chars().take(200).collect::<String>()))
            }
        })
        .buffer_unordered(REGISTER_CONCURRENCY)
        .collect()
        .await;
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if let Some(first) = failed.first() {
        bail!("registering simulated hosts at {url}: {} of {} failed; first: {first}", failed.len(), hosts.len());
    }
    Ok(())
}
