//! The fleet registry of gpufleet and the workers that watch it: hosts with groups, tags and a
//! maintenance flag; the health worker that checks every active host's agent each cycle and
//! classifies it; the metrics worker that stores host metrics in monthly partitions; the
//! health-check history, state-change events and their retention.
//!
//! It depends on `gpufleet-agent` for the wire types only, on `gpufleet-auth` for the
//! [`gpufleet_auth::LeaseStore`] (one replica runs each cycle), and on `gpufleet-runtime` for
//! workers. It does no HTTP serving and reads no file or environment variable: the binary builds
//! a [`FleetStore`] and [`FleetSettings`] and hands them to [`Fleet::open`].
//!
//! # Layout
//! - [`model`]: [`Host`], [`HostStatus`], [`HostState`], [`CheckResult`], [`StateChange`].
//! - [`spec`]: [`HostInput`] (API body and config entry) → [`HostSpec`]; [`HostPatch`].
//! - [`classify`]: the state rules, a pure function.
//! - [`config`]: [`FleetConfig`] (`[fleet]`) → [`FleetSettings`].
//! - [`store`]: [`FleetStore`], [`SqliteFleetStore`], [`PostgresFleetStore`].
//! - [`metric_row`]: the stored host metrics and their names; [`month`]: partition months.
//! - [`agent_http`]: the keep-alive HTTP/1.1 client of `http://` agents.
//! - [`check`]: one host's check with its tries, and the `reqwest` client of `https://` agents.
//! - [`health_worker`], [`metrics_worker`], [`maintenance_worker`]: the three workers.
//! - [`latest`]: the compact copy of each host's latest metrics sample kept in memory.
//! - [`fleet`]: [`Fleet`], the facade; [`summary`]: [`FleetSummary`]; [`stats`]: worker status.
//! - [`lease`]: [`LocalLeases`] for a single server.
//! - [`bench`]: one health cycle measured ([`bench::run_cycle_bench`]).
//! - [`testsuite`]: the store conformance cases and [`fleet_store_test_suite!`].
//! - [`error`] — [`FleetError`].


pub mod agent_http;
pub mod bench;
pub mod check;
pub mod classify;
pub mod config;
pub mod error;
pub mod fleet;
pub mod health_worker;
pub mod latest;
pub mod lease;
mod lean;
pub mod maintenance_worker;
pub mod metric_row;
pub mod metrics_worker;
pub mod model;
pub mod month;
pub mod spec;
pub mod stats;
pub mod store;
pub mod summary;
pub mod testsuite;

pub use classify::{classify, CheckError, CheckErrorKind};
pub use config::{AgentToken, ConfigError, FleetConfig, FleetSettings, DEFAULT_AGENT_KEEPALIVE};
pub use error::FleetError;
pub use fleet::{Fleet, FleetWorkers};
pub use health_worker::{CycleReport, HealthWorker, Tick};
pub use lease::LocalLeases;
pub use maintenance_worker::MaintenanceWorker;
pub use metrics_worker::MetricsWorker;
pub use model::{CheckResult, Host, HostState, HostStatus, StateChange};
pub use spec::{HostInput, HostPatch, HostSpec};
pub use stats::WorkerReport;
pub use store::{EventQuery, FleetStore, HistoryQuery, HostFilter, HostOrder, PostgresFleetStore, SqliteFleetStore};
pub use summary::FleetSummary;
