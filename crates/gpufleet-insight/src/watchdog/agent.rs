//! [`AgentRestarter`]: `POST {agent_url}/containers/{id}/restart` with `Authorization: Bearer
//! <agent token>` (see `gpufleet-agent`'s `server.rs`: 200 restarted, 404 unknown, 409 stopped on
//! purpose, 403 no token configured on the agent, 401 wrong token), and [`containers_of`], which
//! reads the containers out of a health report. The token is never logged and `Debug` hides it.

use async_trait::async_trait;
use gpufleet_agent::wire::{ComponentKind, ContainerState, HealthReport};
use std::time::Duration;
use thiserror::Error;

/// Why a restart request failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RestartFailed {
    /// The agent refused or failed (status and its `error` text).
    #[error("agent answered HTTP {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The agent's `error` field, or the body's start.
        message: String,
    },
    /// The agent could not be reached (URL stripped).
    #[error("agent unreachable: {0}")]
    Transport(String),
    /// The agent URL or container id cannot make a request URL.
    #[error("bad restart URL: {0}")]
    Url(String),
}

/// Restarts containers on hosts.
#[async_trait]
pub trait Restarter: Send + Sync + 'static {
    /// Restarts `container_id` on the agent at `agent_url`.
    async fn restart(&self, agent_url: &str, container_id: &str) -> Result<(), RestartFailed>;
}

/// The HTTP client for the agents' restart route.
#[derive(Clone)]
pub struct AgentRestarter {
    client: reqwest::Client,
    token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for AgentRestarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRestarter").field("token", &self.token.as_ref().map(|_| "…")).field("timeout", &self.timeout).finish()
    }
}

impl AgentRestarter {
    /// A restarter sending `token` (the agents refuse restarts without one), each request bounded
    /// by `timeout`.
    pub fn new(client: reqwest::Client, token: Option<String>, timeout: Duration) -> Self {
        Self { client, token, timeout }
    }
}

/// `{agent_url}/containers/{id}/restart` with the id as one escaped path segment.
pub fn restart_url(agent_url: &str, container_id: &str) -> Result<reqwest::Url, RestartFailed> {
    let mut url = reqwest::Url::parse(agent_url).map_err(|e| RestartFailed::Url(e.to_string()))?;
    url.path_segments_mut().map_err(|_| RestartFailed::Url("agent URL cannot have a path".into()))?.pop_if_empty().extend(["containers", container_id, "restart"]);
    Ok(url)
}

#[async_trait]
impl Restarter for AgentRestarter {
    async fn restart(&self, agent_url: &str, container_id: &str) -> Result<(), RestartFailed> {
        let url = restart_url(agent_url, container_id)?;
        let mut req = self.client.post(url).timeout(self.timeout);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| RestartFailed::Transport(e.without_url().to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        Err(RestartFailed::Refused { status: status.as_u16(), message })
    }
}

/// The containers of a health report: every `container:<name>` component whose detail is a
/// [`ContainerState`] (the runtime-unreadable component has none and is left out).
pub fn containers_of(report: &HealthReport) -> Vec<ContainerState> {
    report
        .components
        .iter()
        .filter(|c| c.kind == ComponentKind::Container)
        .filter_map(|c| serde_json::from_value::<ContainerState>(c.detail.clone()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_urls_escape_the_id() {
        assert_eq!(restart_url("http://127.0.0.1:9100", "abc").unwrap().as_str(), "http://127.0.0.1:9100/containers/abc/restart");
        assert_eq!(restart_url("http://h:1/agent/", "a/b c").unwrap().as_str(), "http://h:1/agent/containers/a%2Fb%20c/restart");
        assert!(restart_url("not a url", "x").is_err());
        let r = AgentRestarter::new(reqwest::Client::new(), Some("s3cret".into()), Duration::from_secs(1));
        assert!(!format!("{r:?}").contains("s3cret"));
    }
}
