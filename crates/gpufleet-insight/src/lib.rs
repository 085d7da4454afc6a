//! What the fleet's health data means and what to do about it: the 0–100 score card, trends with
//! least-squares projections, alerts (rules, lifecycle, silences, maintenance) and their
//! notifiers, the weekly digest, and the container watchdog.
//!
//! It reads the fleet through small traits ([`source`]), implemented over `gpufleet-fleet` in
//! [`fleet_adapter`] (the only module that knows that crate); it depends on `gpufleet-agent` for
//! the wire types and health rules, and on `gpufleet-runtime` for workers. It reads no file and no
//! environment variable and serves no HTTP: the binary passes configuration in ([`config`]) and
//! the API calls the plain async methods of [`Insight`] and [`alert::AlertService`].
//!
//! # Layout
//! - [`score`]: [`score::ScoreCard`], the six dimensions, [`score::fleet_score`].
//! - [`trend`]: [`trend::fit`], [`trend::project`], [`trend::Trend`].
//! - [`metrics`]: metric names and [`metrics::named_values`] of one sample.
//! - [`alert`]: rules, [`alert::AlertEngine`], silences, stores, [`alert::AlertService`], [`alert::AlertWorker`].
//! - [`notify`]: webhook, Slack and Telegram notifiers, retries, [`notify::NotifyQueue`].
//! - [`digest`]: the weekly digest, its renderers and [`digest::worker::DigestWorker`].
//! - [`watchdog`]: restart decisions ([`watchdog::Watchdog`]), the agent client, [`watchdog::WatchdogWorker`].
//! - [`source`]: [`source::FleetView`], [`source::MetricHistory`], [`source::SystemView`], [`source::StaticFleet`].
//! - [`insight`]: [`Insight`], the façade the API and the workers share.
//! - [`fleet_adapter`]: the source traits over `gpufleet-fleet` ([`fleet_adapter::FleetSource`], …).
//! - [`config`]: `[alerts]`, `[watchdog]`, `[digest]`.

pub mod alert;
pub mod config;
pub mod digest;
pub mod fleet_adapter;
pub mod insight;
pub mod metrics;
pub mod notify;
pub mod score;
pub mod source;
pub mod trend;
pub mod watchdog;

pub use insight::{Insight, InsightError, TrendQuery};

use std::sync::Arc;

/// A wall clock in epoch ms; tests pass their own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(gpufleet_core::time::now_ms)
}
