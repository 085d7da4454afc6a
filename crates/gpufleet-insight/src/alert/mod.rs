//! Alerts: rules from configuration and built-in ones, evaluated over explicit observations with a
//! pending → firing → resolved lifecycle, dedupe per (rule, subject), repeat interval, silences
//! and maintenance suppression; persistence behind [`AlertStore`]; [`AlertService`], which the
//! API and the [`AlertWorker`] share.
//!
//! # Layout
//! - [`rule`]: [`Severity`], [`Op`], [`RuleConfig`] → [`Rule`], [`Selector`], [`Builtin`].
//! - [`observe`]: [`Observations`], [`HostObservation`], [`HostHealth`], [`WorkerFailureTracker`].
//! - [`eval`]: one pass of the rules → verdicts (pure).
//! - [`engine`]: [`AlertEngine`], [`Alert`], the lifecycle (pure, explicit time).
//! - [`silence`]: [`Silence`], [`Matcher`], [`NewSilence`].
//! - [`store`]: [`AlertStore`], [`MemoryAlertStore`]; [`sqlite`]: [`SqliteAlertStore`].
//! - [`service`]: [`AlertService`] (engine + store + API methods) and [`AlertWorker`].

pub mod engine;
pub mod eval;
pub mod observe;
pub mod rule;
pub mod service;
pub mod silence;
pub mod sqlite;
pub mod store;

#[cfg(test)]
mod tests;

pub use engine::{Alert, AlertEngine, AlertStatus, Notice, NoticeKind, Suppression};
pub use observe::{DiskOutlook, HostHealth, HostObservation, Observations, WorkerFailureTracker, WorkerObservation};
pub use rule::{Builtin, Op, Rule, RuleConfig, Selector, Severity};
pub use service::{AlertQuery, AlertService, AlertWorker, ObservationSource};
pub use silence::{Matcher, NewSilence, Silence};
pub use sqlite::SqliteAlertStore;
pub use store::{AlertStore, MemoryAlertStore, StoreError};

use thiserror::Error;

/// Why an alert operation failed.
#[derive(Debug, Error)]
pub enum AlertError {
    /// A configured rule is invalid.
    #[error("alert rule {rule:?}: {field} {reason}")]
    InvalidRule {
        /// Rule name.
        rule: String,
        /// Field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Another `[alerts]` field is invalid.
    #[error("{field}: {reason}")]
    InvalidConfig {
        /// Field path.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A silence request is invalid (HTTP 400).
    #[error("silence {field}: {reason}")]
    InvalidSilence {
        /// Field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// No silence with this id (HTTP 404).
    #[error("no silence with id {0:?}")]
    SilenceNotFound(String),
    /// Persistence failed (HTTP 500).
    #[error(transparent)]
    Store(#[from] StoreError),
}
