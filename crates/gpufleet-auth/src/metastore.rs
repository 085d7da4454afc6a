//! The [`MetaStore`] trait: where keys and the audit chain live. One implementation per backend
//! ([`crate::sqlite`] now, PostgreSQL later); every implementation must pass
//! [`crate::testsuite`] (`metastore_test_suite!`).
//!
//! Contract highlights an implementation must keep:
//! - `create_key` refuses a duplicate prefix with [`StoreError::DuplicatePrefix`].
//! - `rotate_key` creates the new key and revokes the old one in one transaction: both or neither.
//! - `append_audit` numbers records `last id + 1, …` and links each to the hash of the one before,
//!   reading the last hash inside the same write transaction that inserts (appends are linear even
//!   across processes sharing the database).
//! - `apply_audit_retention` removes only a prefix of the chain and stores the last removed
//!   record's id and hash as the anchor `audit_chain_verify` starts from.

use crate::audit::{AuditEntry, AuditFilter, AuditRecord, VerifyReport};
use crate::key::KeyPrefix;
use crate::record::KeyRecord;
use async_trait::async_trait;
use thiserror::Error;

/// A metadata store failure.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A key with this prefix already exists.
    #[error("a key with prefix {0} already exists")]
    DuplicatePrefix(KeyPrefix),
    /// No (active) key with this prefix.
    #[error("no active key with prefix {0}")]
    KeyNotFound(KeyPrefix),
    /// A stored row cannot be read back.
    #[error("corrupt stored row: {0}")]
    Corrupt(String),
    /// The backend failed (I/O, connection, lock timeout); the operation may be retried.
    #[error("metadata store backend: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}

/// Keys and the audit chain, shared by every replica.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Stores a new key.
    async fn create_key(&self, record: &KeyRecord) -> Result<(), StoreError>;

    /// The key with this prefix, revoked or not.
    async fn get_key_by_prefix(&self, prefix: &KeyPrefix) -> Result<Option<KeyRecord>, StoreError>;

    /// Every key, revoked ones included, oldest first.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// Marks the key revoked at `at_ms`. `Ok(false)` when it is unknown or already revoked.
    async fn revoke_key(&self, prefix: &KeyPrefix, at_ms: i64) -> Result<bool, StoreError>;

    /// Atomically stores `new` and revokes `old` at `at_ms`. [`StoreError::KeyNotFound`] (and no
    /// change) when `old` is unknown or already revoked.
    async fn rotate_key(&self, old: &KeyPrefix, new: &KeyRecord, at_ms: i64) -> Result<(), StoreError>;

    /// Raises `last_used_ms` of each key to the given time (never lowers it). Unknown prefixes are
    /// ignored. Called in batches.
    async fn touch_last_used(&self, uses: &[(KeyPrefix, i64)]) -> Result<(), StoreError>;

    /// Appends entries to the chain in order and returns them as records.
    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>, StoreError>;

    /// Records matching `filter`, newest first.
    async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;

    /// Checks the whole chain from the retention anchor; stops at the first broken record.
    async fn audit_chain_verify(&self) -> Result<VerifyReport, StoreError>;

    /// Removes the records older than `older_than_ms` that form a prefix of the chain (it stops at
    /// the first record at or after that time). Returns how many were removed.
    async fn apply_audit_retention(&self, older_than_ms: i64) -> Result<u64, StoreError>;
}
