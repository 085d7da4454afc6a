//! Configuration in two stages: serde structs that mirror `gpufleet.toml` (unknown keys are
//! errors naming the key and the file), then [`FileConfig::validate`] into [`Settings`], whose types
//! cannot hold invalid values. Precedence: flags > `GPUFLEET_<SECTION>_<KEY>` environment > file >
//! defaults. Every field's `///` doc is the reference (`docs/configuration.md` mirrors it).

use crate::redact::redact;
use anyhow::{bail, Context, Result};
use gpufleet_broker::{BrokerConfig, FsyncPolicy};
use gpufleet_store::StoreConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// HTTP listener and data directory.
    pub server: ServerSection,
    /// Logging.
    pub log: LogSection,
    /// Message broker.
    pub broker: BrokerSection,
    /// Metadata and (in distributed mode) telemetry database.
    pub database: DatabaseSection,
    /// Telemetry store.
    pub store: StoreSection,
    /// Telemetry pipeline.
    pub telemetry: TelemetrySection,
    /// Security: rate limits, IP allowlist, permission refinements, audit (see `docs/security.md`).
    pub auth: gpufleet_auth::AuthConfig,
    /// The inference gateway: backends, aliases, timeouts, breaker, queue, jobs (see `docs/gateway.md`).
    pub gateway: gpufleet_gateway::GatewayConfig,
    /// The per-host agent (`gpufleet agent`, see `docs/fleet.md`).
    pub agent: gpufleet_agent::AgentConfig,
    /// Fleet health: registry, health and metrics workers (see `docs/fleet.md`).
    pub fleet: gpufleet_fleet::FleetConfig,
    /// Alert rules and notifiers.
    pub alerts: gpufleet_insight::config::AlertsConfig,
    /// The container watchdog.
    pub watchdog: gpufleet_insight::config::WatchdogConfig,
    /// The weekly digest.
    pub digest: gpufleet_insight::config::DigestConfig,
}

/// `[server]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address the HTTP API listens on. Default `127.0.0.1:8080`.
    pub listen: String,
    /// Directory for the embedded broker log and telemetry store. Default `gpufleet-data`.
    pub data_dir: PathBuf,
    /// Largest request body accepted, in bytes. Default 64 MiB.
    pub body_limit_bytes: u64,
    /// How long shutdown waits for in-flight work before giving up. Default `10s`.
    pub shutdown_grace: String,
    /// PEM certificate chain; with `tls_key`, the listener speaks HTTPS. Default none.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`. Default none.
    pub tls_key: String,
    /// PEM CA bundle; when set, clients must present a certificate it signed (mTLS). Default none.
    pub tls_client_ca: String,
    /// Allow plain HTTP on a non-loopback address (a proxy in front terminates TLS). Default false.
    pub insecure_http: bool,
    /// Serve `/metrics` without an API key (Prometheus scrapes). Default true.
    pub metrics_public: bool,
    /// Require API keys. Turning this off is for benchmarks on loopback only. Default true.
    pub auth: bool,
    /// Threads of the inference lane (plain-HTTP inference calls, one event loop each);
    /// 0 = half the cores, at least one. Default 0.
    pub lane_threads: u32,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: "gpufleet-data".into(),
            body_limit_bytes: 64 << 20,
            shutdown_grace: "10s".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_client_ca: String::new(),
            insecure_http: false,
            metrics_public: true,
            auth: true,
            lane_threads: 0,
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `human` or `json`. Default `human`.
    pub format: String,
    /// A tracing filter such as `info` or `gpufleet=debug,info`. Default `info`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self { format: "human".into(), level: "info".into() }
    }
}

/// `[broker]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    /// `embedded` (the durable log under data_dir) or a Redis URL for distributed mode
    /// (`redis://[user][:password@]host:6379[/db]`, `rediss://…` for TLS). Default `embedded`.
    pub backend: String,
    /// Redis only: prefix of every key gpufleet creates. Default `gpufleet`.
    pub key_prefix: String,
    /// Redis only: approximate cap on each stream's length (`XADD MAXLEN ~`); 0 = no cap.
    /// Default 10,000,000. Messages trimmed before a group read them are lost, so keep it well
    /// above the backlog you expect.
    pub max_len: u64,
    /// How long a delivered message stays invisible before redelivery. Default `5s`.
    pub visibility_timeout: String,
    /// Deliveries before a message is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// `batch` (fsync every publish, group commit), `interval:100ms`, or `none`. Default `batch`.
    pub fsync: String,
    /// Segment file size in bytes. Default 64 MiB.
    pub segment_bytes: u64,
}

impl Default for BrokerSection {
    fn default() -> Self {
        Self {
            backend: "embedded".into(),
            key_prefix: "gpufleet".into(),
            max_len: 10_000_000,
            visibility_timeout: "5s".into(),
            max_attempts: 5,
            fsync: "batch".into(),
            segment_bytes: 64 << 20,
        }
    }
}

/// `[database]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// `embedded` (SQLite files and the embedded telemetry store under data_dir) or a PostgreSQL
    /// URL (`postgres://user[:password]@host:5432/db`): keys, audit, gateway jobs, leases and the
    /// month-partitioned telemetry then live there. Default `embedded`.
    pub url: String,
    /// PostgreSQL only: schemas `<prefix>_meta`, `<prefix>_jobs` and `<prefix>_metrics` hold the
    /// tables. Default `gpufleet`.
    pub schema_prefix: String,
    /// PostgreSQL only: connections per pool. Default 8.
    pub max_connections: u32,
    /// PostgreSQL only: how often telemetry partitions are created ahead. Default `1h`.
    pub partition_interval: String,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self { url: "embedded".into(), schema_prefix: "gpufleet".into(), max_connections: 8, partition_interval: "1h".into() }
    }
}

/// `[store]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// How long raw samples are kept (`30d`, or `forever`). Default `30d`.
    pub raw_retention: String,
    /// How long 1-minute rollups are kept. Default `90d`.
    pub rollup_1m_retention: String,
    /// How long 1-hour rollups are kept. Default `730d`.
    pub rollup_1h_retention: String,
    /// Samples held in memory before they are compressed to disk. Default 4,000,000.
    pub head_max_samples: u64,
    /// Longest time samples stay only in memory (and the WAL). Default `10m`.
    pub head_max_age: String,
    /// fsync the write-ahead log on every write. Default true.
    pub fsync: bool,
    /// How often retention runs. Default `1h`.
    pub retention_interval: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            raw_retention: "30d".into(),
            rollup_1m_retention: "90d".into(),
            rollup_1h_retention: "730d".into(),
            head_max_samples: 4_000_000,
            head_max_age: "10m".into(),
            fsync: true,
            retention_interval: "1h".into(),
        }
    }
}

/// `[telemetry]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Broker topic for telemetry. Default `telemetry`.
    pub topic: String,
    /// Collector workers in this process. Default 2.
    pub collectors: u32,
    /// Messages a collector fetches per round. Default 64.
    pub fetch_max_messages: u32,
    /// A GPU with no sample arriving for this long is stale. Default `30s`.
    pub stale_after: String,
    /// Host name for wide CSV rows without a host column. Default `localhost`.
    pub default_host: String,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self { topic: "telemetry".into(), collectors: 2, fetch_max_messages: 64, stale_after: "30s".into(), default_host: "localhost".into() }
    }
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Listener.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Body limit.
    pub body_limit_bytes: usize,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Log format is JSON.
    pub log_json: bool,
    /// Log filter.
    pub log_level: String,
    /// Broker (the embedded log's settings; visibility timeout and attempts apply to Redis too).
    pub broker: BrokerConfig,
    /// Redis broker, when `broker.backend` is a Redis URL.
    pub redis: Option<RedisSettings>,
    /// PostgreSQL, when `database.url` is a PostgreSQL URL.
    pub postgres: Option<PostgresSettings>,
    /// Store.
    pub store: StoreConfig,
    /// Retention pass interval.
    pub retention_interval: Duration,
    /// Telemetry topic.
    pub topic: String,
    /// Collectors.
    pub collectors: usize,
    /// Fetch size.
    pub fetch_max: usize,
    /// Staleness.
    pub stale_after: Duration,
    /// Default host.
    pub default_host: String,
    /// TLS certificate and key, when HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Client CA for mTLS.
    pub tls_client_ca: Option<PathBuf>,
    /// Plain HTTP allowed off loopback.
    pub insecure_http: bool,
    /// `/metrics` without a key.
    pub metrics_public: bool,
    /// Authentication on.
    pub auth_enabled: bool,
    /// Inference lane threads (0 = half the cores).
    pub lane_threads: usize,
    /// The `[auth]` section.
    pub auth: gpufleet_auth::AuthConfig,
    /// The validated `[gateway]` section.
    pub gateway: gpufleet_gateway::GatewaySettings,
    /// The validated `[fleet]` section.
    pub fleet: gpufleet_fleet::FleetSettings,
    /// `[alerts]` (validated when the fleet role starts; checked here too).
    pub alerts: gpufleet_insight::config::AlertsConfig,
    /// `[watchdog]`.
    pub watchdog: gpufleet_insight::config::WatchdogConfig,
    /// `[digest]`.
    pub digest: gpufleet_insight::config::DigestConfig,
}

/// `broker.backend = "redis://…"`.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// URL (may hold a password: never log it unredacted).
    pub url: String,
    /// Key prefix.
    pub key_prefix: String,
    /// Approximate stream cap (None: no cap).
    pub max_len: Option<u64>,
}

/// `database.url = "postgres://…"`.
#[derive(Clone, Debug)]
pub struct PostgresSettings {
    /// URL (may hold a password: never log it unredacted).
    pub url: String,
    /// Schema prefix.
    pub schema_prefix: String,
    /// Pool size.
    pub max_connections: u32,
    /// Partition maintenance interval.
    pub partition_interval: Duration,
}

fn dur(key: &str, s: &str) -> Result<Duration> {
    humantime::parse_duration(s).with_context(|| format!("{key}: {s:?} is not a duration (e.g. 500ms, 5s, 10m, 30d)"))
}

fn retention(key: &str, s: &str) -> Result<Option<Duration>> {
    if s.eq_ignore_ascii_case("forever") || s == "0" {
        return Ok(None);
    }
    dur(key, s).map(Some)
}

impl FileConfig {
    /// Checks every value and converts to [`Settings`].
    pub fn validate(&self) -> Result<Settings> {
        let listen: SocketAddr = self.server.listen.parse().with_context(|| format!("server.listen: {:?} is not an address like 127.0.0.1:8080", self.server.listen))?;
        let redis = match self.broker.backend.as_str() {
            "embedded" => None,
            u if u.starts_with("redis://") || u.starts_with("rediss://") => Some(RedisSettings {
                url: u.to_owned(),
                key_prefix: self.broker.key_prefix.clone(),
                max_len: Some(self.broker.max_len).filter(|n| *n > 0),
            }),
            other => bail!("broker.backend: {:?} must be \"embedded\" or a Redis URL (redis://host:6379, rediss://… for TLS)", redact(other)),
        };
        if self.broker.key_prefix.is_empty() || self.broker.key_prefix.contains(char::is_whitespace) {
            bail!("broker.key_prefix: {:?} must be non-empty without spaces", self.broker.key_prefix);
        }
        let postgres = match self.database.url.as_str() {
            "embedded" => None,
            u if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                let p = &self.database.schema_prefix;
                if p.is_empty() || !p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') || p.starts_with(|c: char| c.is_ascii_digit()) {
                    bail!("database.schema_prefix: {p:?} must be lowercase letters, digits and '_', not starting with a digit");
                }
                if self.database.max_connections == 0 {
                    bail!("database.max_connections must be at least 1");
                }
                Some(PostgresSettings {
                    url: u.to_owned(),
                    schema_prefix: p.clone(),
                    max_connections: self.database.max_connections,
                    partition_interval: dur("database.partition_interval", &self.database.partition_interval)?,
                })
            }
            other => bail!("database.url: {:?} must be \"embedded\" or a PostgreSQL URL (postgres://user@host:5432/db)", redact(other)),
        };
        let fsync = match self.broker.fsync.as_str() {
            "batch" => FsyncPolicy::PerBatch,
            "none" => FsyncPolicy::Never,
            s => match s.strip_prefix("interval:") {
                Some(d) => FsyncPolicy::Interval(dur("broker.fsync", d)?),
                None => bail!("broker.fsync: {s:?} must be \"batch\", \"interval:<duration>\" or \"none\""),
            },
        };
        if self.broker.max_attempts == 0 {
            bail!("broker.max_attempts must be at least 1");
        }
        if self.telemetry.collectors == 0 || self.telemetry.fetch_max_messages == 0 {
            bail!("telemetry.collectors and telemetry.fetch_max_messages must be at least 1");
        }
        if !matches!(self.log.format.as_str(), "human" | "json") {
            bail!("log.format: {:?} must be \"human\" or \"json\"", self.log.format);
        }
        let tls = match (self.server.tls_cert.as_str(), self.server.tls_key.as_str()) {
            ("", "") => None,
            ("", _) | (_, "") => bail!("server.tls_cert and server.tls_key go together: give both or neither"),
            (c, k) => Some((PathBuf::from(c), PathBuf::from(k))),
        };
        let tls_client_ca = Some(PathBuf::from(&self.server.tls_client_ca)).filter(|p| !p.as_os_str().is_empty());
        if tls_client_ca.is_some() && tls.is_none() {
            bail!("server.tls_client_ca needs server.tls_cert and server.tls_key");
        }
        if !self.server.auth && !listen.ip().is_loopback() {
            bail!("server.auth = false is only allowed on a loopback listener (it is meant for benchmarks)");
        }
        self.auth.build_options().map_err(|e| anyhow::anyhow!("{e}"))?;
        let gateway = self.gateway.validate().map_err(|e| anyhow::anyhow!("gateway: {e}"))?;
        let fleet = self.fleet.validate().map_err(|e| anyhow::anyhow!("fleet: {e}"))?;
        self.alerts.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        self.watchdog.validate().map_err(|e| anyhow::anyhow!("watchdog: {e}"))?;
        self.digest.validate().map_err(|e| anyhow::anyhow!("digest: {e}"))?;
        let data_dir = self.server.data_dir.clone();
        let mut broker = BrokerConfig::new(data_dir.join("broker"));
        broker.visibility_timeout = dur("broker.visibility_timeout", &self.broker.visibility_timeout)?;
        broker.max_attempts = self.broker.max_attempts;
        broker.fsync = fsync;
        broker.segment_bytes = self.broker.segment_bytes.max(4096);
        let mut store = StoreConfig::new(data_dir.join("store"));
        store.raw_retention = retention("store.raw_retention", &self.store.raw_retention)?;
        store.rollup_1m_retention = retention("store.rollup_1m_retention", &self.store.rollup_1m_retention)?;
        store.rollup_1h_retention = retention("store.rollup_1h_retention", &self.store.rollup_1h_retention)?;
        store.head_max_samples = usize::try_from(self.store.head_max_samples.max(1000)).unwrap_or(usize::MAX);
        store.head_max_age = dur("store.head_max_age", &self.store.head_max_age)?;
        store.fsync = self.store.fsync;
        Ok(Settings {
            listen,
            data_dir,
            body_limit_bytes: usize::try_from(self.server.body_limit_bytes).unwrap_or(usize::MAX),
            shutdown_grace: dur("server.shutdown_grace", &self.server.shutdown_grace)?,
            log_json: self.log.format == "json",
            log_level: self.log.level.clone(),
            broker,
            redis,
            postgres,
            store,
            retention_interval: dur("store.retention_interval", &self.store.retention_interval)?,
            topic: self.telemetry.topic.clone(),
            collectors: self.telemetry.collectors as usize,
            fetch_max: self.telemetry.fetch_max_messages as usize,
            stale_after: dur("telemetry.stale_after", &self.telemetry.stale_after)?,
            default_host: self.telemetry.default_host.clone(),
            tls,
            tls_client_ca,
            insecure_http: self.server.insecure_http,
            metrics_public: self.server.metrics_public,
            auth_enabled: self.server.auth,
            lane_threads: self.server.lane_threads as usize,
            auth: self.auth.clone(),
            gateway,
            fleet,
            alerts: self.alerts.clone(),
            watchdog: self.watchdog.clone(),
            digest: self.digest.clone(),
        })
    }
}

/// Where the effective configuration came from.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The merged configuration.
    pub config: FileConfig,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// `GPUFLEET_*` variables applied.
    pub env_applied: Vec<String>,
}

/// Environment variables that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["GPUFLEET_URL", "GPUFLEET_ADMIN_KEY", "GPUFLEET_API_KEY", "GPUFLEET_BIN"];

/// Loads defaults, then the file (`path`, or `gpufleet.toml` when present), then `env`, then
/// `overrides` (`section.key`, value) from flags.
pub fn load(path: Option<&Path>, env: &[(String, String)], overrides: &[(&str, toml::Value)]) -> Result<Loaded> {
    let mut merged = toml::Value::try_from(FileConfig::default()).context("serialising defaults")?;
    let file = match path {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from("gpufleet.toml")).filter(|p| p.exists()),
    };
    if let Some(f) = &file {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading config file {}", f.display()))?;
        // Deserialise the file alone first so an unknown key is reported against the file.
        let parsed: FileConfig = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", f.display(), e.to_string().trim_end()))?;
        merge(&mut merged, toml::Value::try_from(parsed)?);
    }
    let mut env_applied = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("GPUFLEET_") else { continue };
        if NON_CONFIG_ENV.contains(&name.as_str()) {
            continue;
        }
        let key = env_key(&merged, rest).with_context(|| format!("environment variable {name} names no configuration key (form: GPUFLEET_<SECTION>_<KEY>, e.g. GPUFLEET_SERVER_LISTEN)"))?;
        set(&mut merged, &key, env_value(value));
        env_applied.push(name.clone());
    }
    for (key, value) in overrides {
        set(&mut merged, key, value.clone());
    }
    let config: FileConfig = merged.try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("invalid configuration after applying environment and flags: {e}"))?;
    Ok(Loaded { config, file, env_applied })
}

fn env_key(defaults: &toml::Value, rest: &str) -> Option<String> {
    let lower = rest.to_ascii_lowercase();
    let table = defaults.as_table()?;
    for (section, body) in table {
        if let Some(key) = lower.strip_prefix(&format!("{section}_")) {
            if body.as_table().is_some_and(|t| t.contains_key(key)) {
                return Some(format!("{section}.{key}"));
            }
        }
    }
    None
}

fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table() && !v.is_array())
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set(root: &mut toml::Value, dotted: &str, value: toml::Value) {
    let (section, key) = dotted.split_once('.').unwrap_or(("", dotted));
    if let Some(t) = root.as_table_mut() {
        let sec = t.entry(section.to_owned()).or_insert_with(|| toml::Value::Table(Default::default()));
        if let Some(st) = sec.as_table_mut() {
            st.insert(key.to_owned(), value);
        }
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_pairs_and_auth_off_are_checked() {
        let l = load(None, &[("GPUFLEET_SERVER_TLS_CERT".into(), "/c.pem".into())], &[]).unwrap();
        assert!(format!("{:#}", l.config.validate().unwrap_err()).contains("tls_key"));
        let l = load(None, &[("GPUFLEET_SERVER_AUTH".into(), "false".into()), ("GPUFLEET_SERVER_LISTEN".into(), "0.0.0.0:80".into())], &[]).unwrap();
        assert!(format!("{:#}", l.config.validate().unwrap_err()).contains("loopback"));
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("gpufleet.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn precedence_flags_over_env_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "[server]\nlisten = \"127.0.0.1:1111\"\ndata_dir = \"/from/file\"\n[telemetry]\ncollectors = 3\n");
        let env = vec![("GPUFLEET_SERVER_LISTEN".to_owned(), "127.0.0.1:2222".to_owned()), ("GPUFLEET_BROKER_MAX_ATTEMPTS".to_owned(), "7".to_owned())];
        let l = load(Some(&f), &env, &[("server.listen", toml::Value::String("127.0.0.1:3333".into()))]).unwrap();
        let s = l.config.validate().unwrap();
        assert_eq!(s.listen.port(), 3333, "flag wins over env and file");
        assert_eq!(s.broker.max_attempts, 7, "env wins over default, typed as integer");
        assert_eq!(s.data_dir, PathBuf::from("/from/file"), "file wins over default");
        assert_eq!(s.collectors, 3);
        assert_eq!(s.stale_after, Duration::from_secs(30), "default kept");
    }

    #[test]
    fn unknown_file_key_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "[server]\nlisen = \"x\"\n");
        let e = format!("{:#}", load(Some(&f), &[], &[]).unwrap_err());
        assert!(e.contains("lisen"), "{e}");
        assert!(e.contains("gpufleet.toml"), "{e}");
    }

    #[test]
    fn unknown_env_key_is_an_error_and_bad_values_say_why() {
        let e = load(None, &[("GPUFLEET_SERVER_LISTN".into(), "x".into())], &[]).unwrap_err();
        assert!(format!("{e:#}").contains("GPUFLEET_SERVER_LISTN"));
        let l = load(None, &[("GPUFLEET_BROKER_FSYNC".into(), "sometimes".into())], &[]).unwrap();
        assert!(format!("{:#}", l.config.validate().unwrap_err()).contains("broker.fsync"));
        let l = load(None, &[("GPUFLEET_STORE_RAW_RETENTION".into(), "forever".into())], &[]).unwrap();
        assert_eq!(l.config.validate().unwrap().store.raw_retention, None);
    }
}
