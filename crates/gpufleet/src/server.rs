//! `gpufleet up` / `gpufleet server --roles …`: opens the backends ([`crate::backends`]: embedded
//! or Redis + PostgreSQL), makes the bootstrap admin key on first start, starts the workers of the
//! chosen [`Roles`] under a supervisor (collectors, retention, partition upkeep, audit writer, auth
//! upkeep, gateway job workers), serves the API when the `api` role is on (HTTPS when configured),
//! and shuts down in order on SIGINT/SIGTERM: stop accepting, drain in-flight requests, let
//! collectors finish their batch, flush the audit queue, close the broker, flush the store.

use gpufleet_core::time::now_ms;
use crate::config::Settings;
use anyhow::{Context, Result};
use async_trait::async_trait;
use gpufleet_api::{ApiSettings, AppState};
use gpufleet_auth::{AuditLog, AuthMaintenance, AuthService, Bootstrap};
use gpufleet_gateway::Gateway;
use gpufleet_core::{GroupName, TopicName};
use gpufleet_runtime::{Shutdown, Supervisor, Worker, WorkerContext, WorkerError};
use gpufleet_store::MetricStore;
use gpufleet_telemetry::{Collector, CollectorConfig, PipelineMetrics};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Which parts of gpufleet this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// The HTTP API (and dashboard routes).
    pub api: bool,
    /// Collectors: broker → telemetry store, plus retention and partition upkeep.
    pub collector: bool,
    /// The inference gateway: its routes on the API listener and the async-job workers.
    pub gateway: bool,
    /// Fleet health: host registry, health/metrics workers, alerts, watchdog, digest.
    pub fleet: bool,
}

impl Roles {
    /// Everything (`gpufleet up`).
    pub const ALL: Roles = Roles { api: true, collector: true, gateway: true, fleet: true };
    const NONE: Roles = Roles { api: false, collector: false, gateway: false, fleet: false };

    /// Parses `api,collector,gateway,fleet` (any non-empty subset; `all` for every role).
    pub fn parse(text: &str) -> Result<Roles> {
        let mut r = Roles::NONE;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "api" => r.api = true,
                "collector" => r.collector = true,
                "gateway" => r.gateway = true,
                "fleet" => r.fleet = true,
                "all" => r = Roles::ALL,
                other => anyhow::bail!("--roles: unknown role {other:?}; the roles are api, collector, gateway, fleet (or all)"),
            }
        }
        if r == Roles::NONE {
            anyhow::bail!("--roles: name at least one role (api, collector, gateway, fleet)");
        }
        Ok(r)
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [(self.api, "api"), (self.collector, "collector"), (self.gateway, "gateway"), (self.fleet, "fleet")]
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect();
        f.write_str(&names.join(","))
    }
}

/// A server running in this process.
pub struct RunningServer {
    /// Address actually bound (None without the `api` role).
    pub addr: Option<SocketAddr>,
    /// `https` or `http`.
    pub scheme: &'static str,
    /// The bootstrap admin key, when this start generated it (shown once).
    pub bootstrap_key: Option<String>,
    shutdown: Shutdown,
    task: JoinHandle<Result<()>>,
}

impl RunningServer {
    /// Asks the server to stop.
    pub fn stop(&self) {
        self.shutdown.trigger();
    }
    /// Waits until it has stopped and flushed.
    pub async fn wait(self) -> Result<()> {
        self.task.await.context("server task panicked")?
    }
}

/// Every role in one process (`gpufleet up`, the demo).
pub async fn start(settings: &Settings, shutdown: Shutdown) -> Result<RunningServer> {
    start_roles(settings, Roles::ALL, shutdown).await
}

/// Opens the backends, starts the workers of `roles`, and serves the API when `roles.api`;
/// returns once the listener is bound.
pub async fn start_roles(settings: &Settings, roles: Roles, shutdown: Shutdown) -> Result<RunningServer> {
    let lock = if crate::backends::uses_data_dir(settings) {
        std::fs::create_dir_all(&settings.data_dir).with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
        Some(lock_data_dir(&settings.data_dir)?)
    } else {
        None
    };
    if roles.api {
        crate::serve::check_plain_http(settings.listen, settings.tls.is_some(), settings.insecure_http)?;
    }
    let tls = match (&settings.tls, roles.api) {
        (Some((cert, key)), true) => Some(Arc::new(crate::tls::server_config(cert, key, settings.tls_client_ca.as_deref())?)),
        _ => None,
    };
    let broker = crate::backends::open_broker(settings).await?;
    let (store, pg_store) = crate::backends::open_store(settings).await?;
    let metrics = PipelineMetrics::default();
    let topic = TopicName::new(&settings.topic);
    let group = GroupName::new("collectors");
    broker.create_group(&topic, &group).await?;

    let mut supervisor = Supervisor::new(shutdown.child());
    if roles.collector {
        let collector_cfg = CollectorConfig { topic: topic.clone(), group, fetch_max: settings.fetch_max, fetch_wait: Duration::from_millis(200) };
        // Consumer names must differ across processes sharing one Redis consumer group.
        let tag = if settings.redis.is_some() { format!("{}-{}-", hostname(), std::process::id()) } else { String::new() };
        for i in 0..settings.collectors {
            supervisor.spawn(Collector::new(format!("{tag}c{i}"), broker.clone(), store.clone(), collector_cfg.clone(), metrics.clone()));
        }
        supervisor.spawn(RetentionWorker { store: store.clone(), interval: settings.retention_interval });
        if let (Some(pg), Some(p)) = (&pg_store, &settings.postgres) {
            supervisor.spawn(crate::backends::PartitionWorker { store: pg.clone(), interval: p.partition_interval });
        }
    }

    let (auth, bootstrap_key) = if !roles.api {
        (None, None)
    } else if settings.auth_enabled {
        let (auth, key) = start_auth(settings, &mut supervisor).await?;
        (Some(auth), key)
    } else {
        warn!("authentication is OFF (server.auth = false): every route is open; use only for benchmarks on loopback");
        (None, None)
    };

    let gateway = if roles.gateway {
        let jobs = crate::backends::open_jobs(settings).await?;
        // GPU-aware balancing: the latest VRAM, temperature and throttle samples of the GPUs
        // each backend names (`gpus = [...]`), refreshed from the telemetry store.
        let mut uuids: Vec<String> = settings.gateway.backends.iter().flat_map(|b| b.gpus.iter().cloned()).collect();
        uuids.sort();
        uuids.dedup();
        let hints = if uuids.is_empty() {
            None
        } else {
            let hints = gpufleet_gateway::StoreGpuHints::new();
            supervisor.spawn(gpufleet_gateway::HintRefresher {
                hints: hints.clone(),
                store: store.clone(),
                uuids,
                interval: Duration::from_secs(2),
                stale_after: settings.stale_after,
            });
            Some(hints as Arc<dyn gpufleet_gateway::GpuHints>)
        };
        let (gateway, gw_workers) = Gateway::new(settings.gateway.clone(), broker.clone(), jobs, hints).map_err(|e| anyhow::anyhow!("starting the gateway: {e}"))?;
        for w in gw_workers {
            supervisor.spawn(w);
        }
        Some(gateway)
    } else {
        None
    };

    let fleet = if roles.fleet {
        let audit = auth.as_ref().map(|a| a.audit_log().clone());
        Some(crate::fleet_role::start(settings, &mut supervisor, audit).await?)
    } else {
        None
    };

    let listener = if roles.api {
        let api_settings = ApiSettings {
            topic,
            stale_after_ms: settings.stale_after.as_millis() as i64,
            default_host: Some(settings.default_host.clone()),
            body_limit_bytes: settings.body_limit_bytes,
            metrics_public: settings.metrics_public,
            ..ApiSettings::default()
        };
        let mut state = AppState::new(broker.clone(), store.clone(), metrics, api_settings).with_workers(supervisor.status_handle());
        if let Some(g) = &gateway {
            state = state.with_gateway(g.clone());
        }
        if let Some(f) = &fleet {
            state = state.with_fleet(f.fleet.clone()).with_insight(f.insight.clone());
        }
        if let Some(a) = &auth {
            state = state.with_auth(a.clone());
        }
        let app = gpufleet_api::ApiService::new(state);
        let listener = tokio::net::TcpListener::bind(settings.listen).await.with_context(|| format!("binding {}", settings.listen))?;
        info!(addr = %listener.local_addr()?, %roles, "gpufleet listening");
        Some((listener, app))
    } else {
        info!(%roles, "gpufleet running without a listener");
        None
    };
    let addr = match &listener {
        Some((l, _)) => Some(l.local_addr()?),
        None => None,
    };

    let grace = settings.shutdown_grace;
    let lane_threads = settings.lane_threads;
    let sd = shutdown.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let task = tokio::spawn(async move {
        match listener {
            Some((listener, app)) => {
                crate::serve::serve(listener, app, tls, sd, grace, lane_threads).await;
                info!("listener closed; draining workers");
            }
            None => sd.wait().await,
        }
        let t = Instant::now();
        if let Some(a) = &auth {
            if let Err(e) = a.audit_log().flush().await {
                warn!(error = %e, "flushing the audit queue");
            }
            if let Err(e) = a.flush_last_used().await {
                warn!(error = %e, "saving key last-use times");
            }
        }
        supervisor.shutdown(grace).await;
        if let Err(e) = broker.close().await {
            warn!(error = %e, "closing broker");
        }
        store.close().await.context("flushing store")?;
        drop(lock);
        info!(took_ms = t.elapsed().as_millis() as u64, "shutdown complete");
        Ok(())
    });
    Ok(RunningServer { addr, scheme, bootstrap_key, shutdown, task })
}

/// This machine's name, for consumer names (`HOSTNAME`, /etc/hostname, or `host`).
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

/// Opens the metadata store (SQLite under data_dir, or PostgreSQL), starts the audit writer and auth upkeep,
/// and makes sure an admin key exists (from `GPUFLEET_ADMIN_KEY`, or generated and returned).
async fn start_auth(settings: &Settings, supervisor: &mut Supervisor) -> Result<(Arc<AuthService>, Option<String>)> {
    let meta = crate::backends::open_meta(settings).await?;
    let log_config = settings.auth.audit_log_config().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (log, writer) = AuditLog::new(meta.clone(), log_config);
    supervisor.spawn(writer);
    let options = settings.auth.build_options().map_err(|e| anyhow::anyhow!("{e}"))?;
    let auth = Arc::new(AuthService::new(meta, log, options));
    supervisor.spawn(AuthMaintenance::new(auth.clone(), settings.auth.maintenance_interval(), settings.auth.audit_retention()));
    let env_key = std::env::var("GPUFLEET_ADMIN_KEY").ok().filter(|k| !k.is_empty());
    let key = match auth.bootstrap_admin(env_key.as_deref(), now_ms()).await? {
        Bootstrap::Generated(key) => Some(key.expose_secret().to_owned()),
        Bootstrap::Imported(prefix) => {
            info!(%prefix, "admin key imported from GPUFLEET_ADMIN_KEY");
            None
        }
        Bootstrap::Existing => None,
    };
    Ok((auth, key))
}


/// Holds an exclusive lock on the data directory so two servers never share it.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(_) => anyhow::bail!("data directory {} is in use by another gpufleet process (lock {})", dir.display(), path.display()),
    }
}

/// Runs retention on the store every interval.
struct RetentionWorker {
    store: Arc<dyn MetricStore>,
    interval: Duration,
}

#[async_trait]
impl Worker for RetentionWorker {
    fn name(&self) -> String {
        "retention".into()
    }
    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
    async fn run(&mut self, ctx: WorkerContext) -> Result<(), WorkerError> {
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = ctx.shutdown.wait() => return Ok(()),
                _ = tick.tick() => {}
            }
            let t = Instant::now();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            match self.store.apply_retention(now).await {
                Ok(r) => {
                    if r.raw_partitions_dropped + r.rollup_partitions_dropped > 0 {
                        info!(raw = r.raw_partitions_dropped, rollup = r.rollup_partitions_dropped, "retention dropped partitions");
                    }
                    ctx.record(true, t.elapsed(), None);
                }
                Err(e) => ctx.record(false, t.elapsed(), Some(e.to_string())),
            }
        }
    }
}
