//! Containers through the Docker Engine API on a unix socket (Podman serves the same "compat" API
//! on its socket): list, inspect, restart. HTTP/1.1 with `hyper` over a `tokio` `UnixStream`, one
//! connection per call (a sample makes a handful of calls; no pool to keep).
//!
//! Calls: `GET /containers/json?all=1`, `GET /containers/{id}/json`,
//! `POST /containers/{id}/restart`. The inspect answer gives `State.Health.{Status,Log}`,
//! `RestartCount`, `State.OOMKilled`, `State.ExitCode` and `HostConfig.RestartPolicy`, from which
//! [`stopped_on_purpose`] decides whether a stopped container was stopped by someone (the agent
//! then refuses to restart it) or crashed.

use crate::wire::ContainerState;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use tokio::net::UnixStream;

/// Health-log entries kept per container.
pub const HEALTH_LOG_LINES: usize = 5;

/// A container API call that failed.
#[derive(Debug, Error)]
pub enum ContainerError {
    /// The socket could not be reached.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// HTTP failed on the connection.
    #[error("container API: {0}")]
    Http(String),
    /// The call took longer than the timeout.
    #[error("container API call timed out after {0:?}")]
    Timeout(Duration),
    /// No such container.
    #[error("no such container: {0}")]
    NotFound(String),
    /// The engine answered with an error status.
    #[error("container API answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The engine's `message`.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected container API answer: {0}")]
    Decode(String),
    /// The id has characters no container id or name has.
    #[error("invalid container id {0:?}")]
    InvalidId(String),
}

/// A client of one Engine API socket.
#[derive(Clone, Debug)]
pub struct DockerClient {
    socket: PathBuf,
    timeout: Duration,
}

impl DockerClient {
    /// A client of `socket`; each call is bounded by `timeout`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self { socket: socket.into(), timeout }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Ids of all containers, running or not.
    pub async fn list_ids(&self) -> Result<Vec<String>, ContainerError> {
        let v = self.call(Method::GET, "/containers/json?all=1").await?;
        let arr = v.as_array().ok_or_else(|| ContainerError::Decode("container list is not an array".into()))?;
        Ok(arr.iter().filter_map(|c| c.get("Id").and_then(Value::as_str)).map(str::to_owned).collect())
    }

    /// One container's state.
    pub async fn inspect(&self, id: &str) -> Result<ContainerState, ContainerError> {
        check_id(id)?;
        let v = self.call(Method::GET, &format!("/containers/{id}/json")).await?;
        Ok(state_from_inspect(&v))
    }

    /// Every container's state (list, then inspect each; a container removed in between is skipped).
    pub async fn states(&self) -> Result<Vec<ContainerState>, ContainerError> {
        let mut out = Vec::new();
        for id in self.list_ids().await? {
            match self.inspect(&id).await {
                Ok(s) => out.push(s),
                Err(ContainerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Restarts a container (the engine stops it with its default timeout, then starts it).
    pub async fn restart(&self, id: &str) -> Result<(), ContainerError> {
        check_id(id)?;
        self.call(Method::POST, &format!("/containers/{id}/restart")).await.map(|_| ())
    }

    async fn call(&self, method: Method, path: &str) -> Result<Value, ContainerError> {
        match tokio::time::timeout(self.timeout, self.call_inner(method, path)).await {
            Ok(r) => r,
            Err(_) => Err(ContainerError::Timeout(self.timeout)),
        }
    }

    async fn call_inner(&self, method: Method, path: &str) -> Result<Value, ContainerError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| ContainerError::Connect { path: self.socket.clone(), source })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| ContainerError::Http(e.to_string()))?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ContainerError::Http(e.to_string()))?;
        // Drive the connection and the request together; dropping the sender ends the connection.
        let exchange = async move {
            let resp = sender.send_request(req).await.map_err(|e| ContainerError::Http(e.to_string()))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| ContainerError::Http(e.to_string()))?.to_bytes();
            drop(sender);
            Ok::<_, ContainerError>((status, body))
        };
        let (res, _conn) = tokio::join!(exchange, conn);
        let (status, body) = res?;
        let json = || -> Result<Value, ContainerError> {
            if body.is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_slice(&body).map_err(|e| ContainerError::Decode(e.to_string()))
        };
        if status.is_success() {
            return json();
        }
        let message = json().ok().and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned)).unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        if status == StatusCode::NOT_FOUND {
            return Err(ContainerError::NotFound(message));
        }
        Err(ContainerError::Status { status: status.as_u16(), message })
    }
}

/// Container ids and names: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 characters (so a path cannot
/// be smuggled into the API URL).
pub fn check_id(id: &str) -> Result<(), ContainerError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidId(id.to_owned()))
    }
}

/// Builds a [`ContainerState`] from `GET /containers/{id}/json`; missing fields read as empty.
pub fn state_from_inspect(v: &Value) -> ContainerState {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
    let state = s("/State/Status");
    let health = v.pointer("/State/Health/Status").and_then(Value::as_str).filter(|h| !h.is_empty() && *h != "none").map(str::to_owned);
    let health_log: Vec<String> = v
        .pointer("/State/Health/Log")
        .and_then(Value::as_array)
        .map(|log| {
            let skip = log.len().saturating_sub(HEALTH_LOG_LINES);
            log.iter()
                .skip(skip)
                .map(|e| {
                    let code = e.get("ExitCode").and_then(Value::as_i64).unwrap_or(-1);
                    let out = e.get("Output").and_then(Value::as_str).unwrap_or("").trim().replace('\n', " ");
                    format!("exit {code}: {out}")
                })
                .collect()
        })
        .unwrap_or_default();
    let restart_count = v.get("RestartCount").and_then(Value::as_u64).unwrap_or(0);
    let oom_killed = v.pointer("/State/OOMKilled").and_then(Value::as_bool).unwrap_or(false);
    let exit_code = v.pointer("/State/ExitCode").and_then(Value::as_i64);
    let restarting = v.pointer("/State/Restarting").and_then(Value::as_bool).unwrap_or(false);
    let policy = s("/HostConfig/RestartPolicy/Name");
    let max_retries = v.pointer("/HostConfig/RestartPolicy/MaximumRetryCount").and_then(Value::as_u64).unwrap_or(0);
    let on_purpose = stopped_on_purpose(&state, restarting, oom_killed, exit_code, &policy, restart_count, max_retries);
    ContainerState {
        id: s("/Id"),
        name: s("/Name").trim_start_matches('/').to_owned(),
        image: s("/Config/Image"),
        state,
        health,
        health_log,
        restart_count,
        oom_killed,
        exit_code,
        stopped_on_purpose: on_purpose,
    }
}

/// Whether a container that is not running was stopped on purpose rather than crashed. The Engine
/// API does not expose "stopped by the user", so it is inferred:
/// - running, paused, restarting (or `Restarting` true): not stopped → `false`;
/// - `created` (never started): `true`;
/// - killed by the OOM killer: a crash → `false`;
/// - policy `always` / `unless-stopped`: the engine would have restarted a crash, so an exited
///   container was stopped by someone → `true`;
/// - policy `on-failure`: exit code 0 (finished) → `true`; a failure that used up
///   `MaximumRetryCount` (> 0) → `false`; any other failure was not retried, so it was stopped →
///   `true`;
/// - policy `no` / none: exit code 0 (finished) or 143 (SIGTERM, what `docker stop` sends) → `true`;
///   anything else (137 SIGKILL, 139 SIGSEGV, 1…) → `false`.
pub fn stopped_on_purpose(state: &str, restarting: bool, oom_killed: bool, exit_code: Option<i64>, policy: &str, restart_count: u64, max_retries: u64) -> bool {
    if restarting || !matches!(state, "exited" | "dead" | "created") {
        return false;
    }
    if state == "created" {
        return true;
    }
    if oom_killed {
        return false;
    }
    let code = exit_code.unwrap_or(-1);
    match policy {
        "always" | "unless-stopped" => true,
        "on-failure" => code == 0 || !(max_retries > 0 && restart_count >= max_retries),
        _ => code == 0 || code == 143,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_with_path_characters_are_refused() {
        for bad in ["", "../x", "a/b", "a?b", "-x", &"a".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        for good in ["web", "4f1c2a9b", "my_app.v2-1"] {
            check_id(good).unwrap();
        }
    }

    #[test]
    fn stopped_on_purpose_rules() {
        assert!(!stopped_on_purpose("running", false, false, Some(0), "no", 0, 0));
        assert!(!stopped_on_purpose("exited", true, false, Some(1), "always", 3, 0));
        assert!(stopped_on_purpose("created", false, false, None, "", 0, 0));
        assert!(!stopped_on_purpose("exited", false, true, Some(137), "always", 0, 0));
        assert!(stopped_on_purpose("exited", false, false, Some(137), "unless-stopped", 0, 0));
        assert!(stopped_on_purpose("exited", false, false, Some(0), "on-failure", 0, 3));
        assert!(!stopped_on_purpose("exited", false, false, Some(2), "on-failure", 3, 3));
        assert!(stopped_on_purpose("exited", false, false, Some(143), "no", 0, 0));
        assert!(!stopped_on_purpose("exited", false, false, Some(139), "no", 0, 0));
        assert!(!stopped_on_purpose("dead", false, false, None, "", 0, 0));
    }

    #[test]
    fn inspect_fields_and_last_health_lines() {
        let log: Vec<Value> = (0..7).map(|i| json!({"ExitCode": i % 2, "Output": format!("check {i}\n")})).collect();
        let v = json!({
            "Id": "abc", "Name": "/web", "RestartCount": 4, "Config": {"Image": "nginx:1"},
            "State": {"Status": "running", "Restarting": false, "OOMKilled": false, "ExitCode": 0,
                      "Health": {"Status": "unhealthy", "Log": log}},
            "HostConfig": {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}}
        });
        let s = state_from_inspect(&v);
        assert_eq!((s.id.as_str(), s.name.as_str(), s.restart_count), ("abc", "web", 4));
        assert_eq!(s.health.as_deref(), Some("unhealthy"));
        assert_eq!(s.health_log.len(), HEALTH_LOG_LINES);
        assert_eq!(s.health_log.last().unwrap(), "exit 0: check 6");
        assert!(!s.stopped_on_purpose);
        let empty = state_from_inspect(&json!({}));
        assert_eq!(empty.health, None);
        assert_eq!(empty.restart_count, 0);
    }
}
