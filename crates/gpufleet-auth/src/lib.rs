//! Security for every gpufleet surface: API keys, roles and permissions, rate limits, the IP
//! allowlist and the tamper-evident audit log, with the [`MetaStore`] that keeps keys and audit.
//!
//! It knows nothing about HTTP: the API crate's middleware turns requests into an
//! [`AccessRequest`], calls [`AuthService::check_access`] and maps [`AuthError::status_code`].
//! It does not read files or the environment (the binary passes `GPUFLEET_ADMIN_KEY` to
//! [`AuthService::bootstrap_admin`] and the `[auth]` section as an [`AuthConfig`]). It depends on
//! `gpufleet-runtime` only, for its workers.
//!
//! # Layout
//! - [`key`]: [`ApiKey`] generation and parsing, [`KeyPrefix`], [`KeyHash`] (why SHA-256).
//! - [`role`], [`permission`]: [`Role`], [`Permission`], the bitset [`PermissionTable`] and its
//!   TOML refinement.
//! - [`record`]: [`KeyRecord`] (what is stored about a key) and [`Owner`].
//! - [`audit`]: [`AuditEntry`], [`AuditRecord`], the record hash; `audit/chain.rs`: [`ChainVerifier`]
//!   and [`VerifyReport`], the chain check every store shares.
//! - [`audit_log`]: [`AuditLog`] (queue) and the batching [`AuditWriter`] worker.
//! - [`metastore`]: the [`MetaStore`] trait and [`StoreError`].
//! - [`sqlite`]: [`SqliteMetaStore`], the embedded implementation (migrations in `migrations/sqlite`).
//! - [`postgres`]: [`PostgresMetaStore`], the shared implementation for several replicas (one
//!   schema; migrations in `migrations/postgres`).
//! - [`lease`]: the [`LeaseStore`] trait (once-per-fleet work), its conformance cases and
//!   [`lease_test_suite!`]; both stores implement it.
//! - [`testsuite`]: the conformance cases and [`metastore_test_suite!`].
//! - [`ratelimit`]: the [`RateLimiter`] trait and [`LocalRateLimiter`] (governor).
//! - [`allowlist`]: [`IpAllowlist`] and [`client_ip`] (trusted proxies).
//! - [`identity`]: [`Identity`], [`AccessRequest`], [`Access`].
//! - [`error`]: [`AuthError`] and its HTTP status.
//! - `cache` (private): the verified-key cache behind [`AuthService::authenticate`].
//! - [`service`]: [`AuthService`], the checks of one request.
//! - [`key_admin`]: key create/list/revoke/rotate and the bootstrap admin key on [`AuthService`].
//! - [`maintenance`]: [`AuthMaintenance`], the upkeep worker (last-use times, buckets, retention).
//! - [`config`]: [`AuthConfig`], the `[auth]` config section.

pub mod allowlist;
pub mod audit;
pub mod audit_log;
mod cache;
pub mod config;
pub mod error;
pub mod identity;
pub mod key;
pub mod key_admin;
pub mod lease;
pub mod maintenance;
pub mod metastore;
pub mod permission;
pub mod proven;
pub mod postgres;
pub mod ratelimit;
pub mod record;
pub mod role;
pub mod service;
pub mod sqlite;
pub mod testsuite;

pub use allowlist::{client_ip, AllowlistConfig, IpAllowlist};
pub use audit::{
    AuditEntry, AuditFilter, AuditRecord, BrokenReason, BrokenRecord, ChainHash, ChainVerifier, Outcome, VerifyReport,
};
pub use audit_log::{AuditLog, AuditLogConfig, AuditLogError, AuditWriter};
pub use config::{AuthConfig, AuthConfigError};
pub use error::AuthError;
pub use identity::{Access, AccessRequest, Identity};
pub use key::{ApiKey, KeyHash, KeyParseError, KeyPrefix};
pub use key_admin::{Actor, Bootstrap, CreatedKey, KeyAdminError, NewKey};
pub use lease::LeaseStore;
pub use maintenance::AuthMaintenance;
pub use metastore::{MetaStore, StoreError};
pub use permission::{Permission, PermissionSet, PermissionTable, PermissionsConfig};
pub use postgres::PostgresMetaStore;
pub use ratelimit::{LimitClass, LimitKey, LimitSubject, LocalRateLimiter, RateLimitConfig, RateLimiter, RetryAfter};
pub use record::{KeyRecord, Owner};
pub use role::Role;
pub use proven::ProvenKey;
pub use service::{AuthOptions, AuthService};
pub use sqlite::SqliteMetaStore;
