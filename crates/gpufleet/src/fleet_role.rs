//! The `fleet` role: the host registry with its health, metrics and maintenance workers
//! (`gpufleet-fleet`), and on top of it the score card, trends, alert engine with notifiers,
//! weekly digest and container watchdog (`gpufleet-insight`).
//!
//! Storage follows `database.url`: `<data_dir>/fleet.db` and `<data_dir>/alerts.db` (SQLite), or
//! the PostgreSQL schema `<prefix>_fleet`. With PostgreSQL, cycles are coordinated through leases
//! in the shared metadata store, so N replicas check each host once per cycle; a single embedded
//! server uses local leases.

use crate::config::Settings;
use anyhow::{Context, Result};
use gpufleet_auth::{AuditEntry, AuditLog, LeaseStore, Outcome, PostgresMetaStore};
use gpufleet_fleet::{Fleet, FleetStore, LocalLeases, PostgresFleetStore, SqliteFleetStore};
use gpufleet_insight::alert::{AlertService, AlertStore, AlertWorker, SqliteAlertStore};
use gpufleet_insight::fleet_adapter::{FleetSource, FleetSystem, FleetWatchSource};
use gpufleet_insight::notify::{NotifyQueue, Notifiers};
use gpufleet_insight::watchdog::{AgentRestarter, AuditEvent, AuditSink, WatchdogWorker};
use gpufleet_insight::{system_clock, Insight};
use gpufleet_runtime::Supervisor;
use std::sync::Arc;

/// What the API needs from the fleet role.
pub struct FleetParts {
    /// The registry.
    pub fleet: Arc<Fleet>,
    /// Scores, trends, alerts.
    pub insight: Arc<Insight>,
}

/// Opens the fleet storage, starts every fleet and insight worker under `supervisor`.
pub async fn start(settings: &Settings, supervisor: &mut Supervisor, audit: Option<AuditLog>) -> Result<FleetParts> {
    let mut fs = settings.fleet.clone();
    fit_descriptors(&mut fs);
    let (store, leases): (Arc<dyn FleetStore>, Arc<dyn LeaseStore>) = match &settings.postgres {
        None => {
            let path = settings.data_dir.join("fleet.db");
            let store = SqliteFleetStore::open(&path).await.with_context(|| format!("opening the fleet store {}", path.display()))?;
            (Arc::new(store), Arc::new(LocalLeases::new()))
        }
        Some(p) => {
            let store = PostgresFleetStore::connect(&p.url, &format!("{}_fleet", p.schema_prefix), p.max_connections)
                .await
                .context("opening the PostgreSQL fleet store (database.url)")?;
            let leases = PostgresMetaStore::connect(&p.url, &format!("{}_meta", p.schema_prefix)).await.context("opening the lease store")?;
            (Arc::new(store), Arc::new(leases))
        }
    };
    let (fleet, workers) = Fleet::open(store, leases, fs).await.context("starting the fleet registry")?;
    supervisor.spawn(workers.health);
    supervisor.spawn(workers.metrics);
    supervisor.spawn(workers.maintenance);

    // Alerts, scores, trends.
    let alert_settings = settings.alerts.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let alert_store: Arc<dyn AlertStore> = match &settings.postgres {
        // Alert state is per server in distributed mode (kept in memory; rules re-fire after a restart).
        Some(_) => Arc::new(gpufleet_insight::alert::MemoryAlertStore::new(alert_settings.history)),
        None => {
            let path = settings.data_dir.join("alerts.db");
            Arc::new(SqliteAlertStore::open(&path, alert_settings.history).await.with_context(|| format!("opening {}", path.display()))?)
        }
    };
    let alerts = Arc::new(AlertService::open(&alert_settings, alert_store, gpufleet_core::time::now_ms()).await.map_err(|e| anyhow::anyhow!("{e}"))?);
    let (source, check_cache) = FleetSource::new(fleet.clone());
    supervisor.spawn(check_cache);
    let system = Arc::new(FleetSystem::new(fleet.clone(), supervisor.status_handle()));
    let insight = Arc::new(Insight::new(source.clone(), source.clone(), Some(system), alerts.clone()));
    let notifiers = Notifiers::build(&alert_settings.notifiers).map_err(|e| anyhow::anyhow!("alerts.notifiers: {e}"))?;
    let (queue, notify) = NotifyQueue::new(1024, notifiers.clone());
    supervisor.spawn(notify);
    supervisor.spawn(AlertWorker::new(alerts, insight.clone(), queue, alert_settings.interval, system_clock()));
    if let Some(schedule) = settings.digest.validate().map_err(|e| anyhow::anyhow!("digest: {e}"))? {
        supervisor.spawn(gpufleet_insight::digest::worker::DigestWorker::new(schedule, insight.clone(), notifiers.subset(&settings.digest.notifiers), system_clock()));
    }

    // The watchdog: restarts through the agent, every restart audited.
    let wd = settings.watchdog.validate().map_err(|e| anyhow::anyhow!("watchdog: {e}"))?;
    let restarter = Arc::new(AgentRestarter::new(reqwest::Client::new(), fleet.agent_token().map(|t| t.expose().to_owned()), wd.timeout));
    let sink: AuditSink = Arc::new(move |e: AuditEvent| {
        let Some(log) = &audit else { return };
        let mut entry = AuditEntry::new(e.time_ms, &e.action, if e.success { Outcome::Success } else { Outcome::Failed });
        entry.target = e.target;
        if let Err(err) = log.try_append(entry) {
            tracing::warn!(error = %err, "could not audit a watchdog restart");
        }
    });
    let watchdog = WatchdogWorker::new(wd.clone(), Box::new(FleetWatchSource::new(fleet.clone(), wd)), restarter, sink, system_clock());
    supervisor.spawn(watchdog);
    Ok(FleetParts { fleet, insight })
}

/// Descriptors kept for everything but agent connections (API clients, database, broker, files).
const FD_RESERVE: usize = 1024;

/// The fleet role holds one descriptor per kept-alive agent connection and per check or metrics
/// fetch in flight. Lifts the soft `RLIMIT_NOFILE` toward that (at most to the hard limit, as the
/// Go runtime does at start); where it stays lower, keeps fewer agent connections alive, with a
/// warning, rather than let checks fail with "too many open files" and hosts look unreachable.
fn fit_descriptors(fs: &mut gpufleet_fleet::FleetSettings) {
    let in_flight = 2 * fs.health_concurrency.get();
    let wanted = fs.agent_keepalive + in_flight + FD_RESERVE;
    let soft = gpufleet_runtime::limits::raise_nofile(wanted as u64);
    let fit = keepalive_that_fits(soft, fs.agent_keepalive, in_flight);
    if fit < fs.agent_keepalive {
        tracing::warn!(
            open_file_limit = soft,
            configured = fs.agent_keepalive,
            kept = fit,
            "fleet.agent_keepalive lowered to what the open-file limit holds (raise the hard limit, e.g. LimitNOFILE= in the systemd unit)"
        );
        fs.agent_keepalive = fit;
    }
}

/// Kept-alive agent connections that fit in a soft open-file limit beside `in_flight` checks.
fn keepalive_that_fits(soft_limit: u64, keepalive: usize, in_flight: usize) -> usize {
    let room = usize::try_from(soft_limit).unwrap_or(usize::MAX).saturating_sub(in_flight + FD_RESERVE);
    keepalive.min(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_is_cut_to_the_open_file_limit() {
        // A systemd service's default soft limit: 1024 leaves no room for idle connections.
        assert_eq!(keepalive_that_fits(1024, 10_000, 512), 0);
        // This project's machines: 20,000.
        assert_eq!(keepalive_that_fits(20_000, 10_000, 512), 10_000);
        assert_eq!(keepalive_that_fits(8_000, 10_000, 512), 8_000 - 512 - FD_RESERVE);
        assert_eq!(keepalive_that_fits(u64::MAX, 10_000, 512), 10_000);
    }
}
