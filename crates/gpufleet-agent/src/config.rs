//! [`AgentConfig`]: the `[agent]` section of `gpufleet.toml`, with defaults and [`AgentConfig::validate`].
//!
//! This crate reads no environment variable: the binary fills `host_name` and the Podman socket
//! under `$XDG_RUNTIME_DIR` (see [`docker_socket_candidates`]) before calling [`crate::run`].

use crate::wire::ModelServerKind;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Default listen address of the agent.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9101";

/// `[agent]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Address the agent's HTTP API listens on. Default `127.0.0.1:9101`.
    pub listen: SocketAddr,
    /// Name this host reports. Default empty: the binary puts the kernel host name here; the
    /// agent falls back to `<proc_root>/sys/kernel/hostname`.
    pub host_name: String,
    /// Where `/proc` is (a container may mount the host's elsewhere). Default `/proc`.
    pub proc_root: PathBuf,
    /// Docker or Podman Engine API socket. Default none: the first of
    /// [`docker_socket_candidates`] that exists, checked at every sample.
    pub docker_socket: Option<PathBuf>,
    /// Model servers on this host to probe. Default none.
    pub model_servers: Vec<ModelServerConfig>,
    /// Server to push GPU samples to (`http://server:8080`). Default none: no push.
    pub server_url: Option<String>,
    /// API key (ingest permission) sent as `Authorization: Bearer` with pushes. Required with
    /// `server_url`.
    pub api_key: Option<String>,
    /// Agent token the server must present as `Authorization: Bearer` for `/metrics/host` and
    /// container restarts. Default none: `/metrics/host` is open and restarts are refused. At
    /// least 16 characters.
    pub token: Option<String>,
    /// How often GPU samples are pushed to the server. Default `15s`.
    #[serde(with = "duration_str")]
    pub push_interval: Duration,
    /// How often the host is sampled. Default `5s`.
    #[serde(with = "duration_str")]
    pub sample_interval: Duration,
    /// GPU sample lines kept while the server cannot be reached; the oldest are dropped beyond
    /// this. Default 100,000 (about 15 MB at most).
    pub push_buffer_lines: usize,
    /// Timeout of one model-server or container-API call. Default `2s`.
    #[serde(with = "duration_str")]
    pub probe_timeout: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            host_name: String::new(),
            proc_root: PathBuf::from("/proc"),
            docker_socket: None,
            model_servers: Vec::new(),
            server_url: None,
            api_key: None,
            token: None,
            push_interval: Duration::from_secs(15),
            sample_interval: Duration::from_secs(5),
            push_buffer_lines: 100_000,
            probe_timeout: Duration::from_secs(2),
        }
    }
}

/// `[[agent.model_servers]]`: one model server to probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelServerConfig {
    /// Name shown in the component (`model_server:<name>`).
    pub name: String,
    /// `llamacpp`, `ollama` or `vllm`.
    pub kind: ModelServerKind,
    /// Base URL (`http://127.0.0.1:8081`).
    pub url: String,
}

/// A configuration value that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("[agent] {key}: {reason}")]
pub struct ConfigError {
    /// The key (`push_interval`, `model_servers[1].url`).
    pub key: String,
    /// What is wrong and what to write instead.
    pub reason: String,
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), reason: reason.into() }
}

impl AgentConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sample_interval < Duration::from_millis(100) {
            return Err(err("sample_interval", "must be at least 100ms"));
        }
        if self.push_interval < Duration::from_secs(1) {
            return Err(err("push_interval", "must be at least 1s"));
        }
        if self.probe_timeout.is_zero() {
            return Err(err("probe_timeout", "must be more than 0"));
        }
        if self.push_buffer_lines == 0 {
            return Err(err("push_buffer_lines", "must be at least 1"));
        }
        if let Some(url) = &self.server_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(err("server_url", format!("{url:?} must start with http:// or https://")));
            }
            if self.api_key.as_deref().unwrap_or("").is_empty() {
                return Err(err("api_key", "required when server_url is set (an API key allowed to ingest telemetry)"));
            }
        }
        if let Some(t) = &self.token {
            if t.len() < 16 {
                return Err(err("token", "must be at least 16 characters"));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, m) in self.model_servers.iter().enumerate() {
            if m.name.is_empty() || !names.insert(m.name.as_str()) {
                return Err(err(format!("model_servers[{i}].name"), format!("{:?} must be non-empty and unique", m.name)));
            }
            if reqwest::Url::parse(&m.url).map(|u| u.scheme() != "http" && u.scheme() != "https").unwrap_or(true) {
                return Err(err(format!("model_servers[{i}].url"), format!("{:?} is not an http(s) URL", m.url)));
            }
        }
        Ok(())
    }

    /// The host name to report: `host_name`, else `<proc_root>/sys/kernel/hostname`, else `localhost`.
    pub fn effective_host_name(&self) -> String {
        if !self.host_name.is_empty() {
            return self.host_name.clone();
        }
        std::fs::read_to_string(self.proc_root.join("sys/kernel/hostname"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    }
}

/// Where a Docker or Podman API socket usually is, in the order tried: `/var/run/docker.sock`,
/// `$XDG_RUNTIME_DIR/podman/podman.sock` (rootless Podman; pass the variable's value),
/// `/run/podman/podman.sock`.
pub fn docker_socket_candidates(xdg_runtime_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/var/run/docker.sock")];
    if let Some(x) = xdg_runtime_dir {
        v.push(x.join("podman/podman.sock"));
    }
    v.push(PathBuf::from("/run/podman/podman.sock"));
    v
}

/// Durations written as humantime strings (`15s`, `500ms`, `1m 30s`).
pub mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes `15s`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads `15s`; the error says what is expected.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like \"15s\" or \"500ms\": {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        agent: AgentConfig,
    }

    #[test]
    fn toml_section_with_defaults_and_unknown_keys_rejected() {
        let f: File = toml::from_str(
            "[agent]\nlisten = \"127.0.0.1:9200\"\nsample_interval = \"1s\"\n\
             [[agent.model_servers]]\nname = \"llama\"\nkind = \"llamacpp\"\nurl = \"http://127.0.0.1:8081\"\n",
        )
        .unwrap();
        assert_eq!(f.agent.listen.port(), 9200);
        assert_eq!(f.agent.sample_interval, Duration::from_secs(1));
        assert_eq!(f.agent.push_interval, Duration::from_secs(15));
        assert_eq!(f.agent.model_servers[0].kind, ModelServerKind::Llamacpp);
        f.agent.validate().unwrap();
        assert!(toml::from_str::<File>("[agent]\nlisen = \"x\"\n").is_err());
        let e = toml::from_str::<File>("[agent]\npush_interval = \"soon\"\n").err().unwrap().to_string();
        assert!(e.contains("not a duration"), "{e}");
    }

    #[test]
    fn validate_names_the_key() {
        let c = AgentConfig { server_url: Some("http://s:8080".into()), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "api_key");
        let c = AgentConfig { token: Some("short".into()), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "token");
        let m = ModelServerConfig { name: "a".into(), kind: ModelServerKind::Ollama, url: "ftp://x".into() };
        let c = AgentConfig { model_servers: vec![m], ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "model_servers[0].url");
        let c = AgentConfig { sample_interval: Duration::from_millis(10), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "sample_interval");
    }

    #[test]
    fn host_name_falls_back_to_proc() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/kernel")).unwrap();
        std::fs::write(dir.path().join("sys/kernel/hostname"), "gpu-node-7\n").unwrap();
        let c = AgentConfig { proc_root: dir.path().into(), ..Default::default() };
        assert_eq!(c.effective_host_name(), "gpu-node-7");
        let c = AgentConfig { host_name: "set".into(), ..c };
        assert_eq!(c.effective_host_name(), "set");
        assert_eq!(docker_socket_candidates(Some(Path::new("/run/user/1000")))[1], PathBuf::from("/run/user/1000/podman/podman.sock"));
    }
}
