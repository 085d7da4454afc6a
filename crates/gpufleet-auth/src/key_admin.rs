//! Key management through [`AuthService`]: create, list, revoke, rotate, and the bootstrap admin
//! key. Every change is written to the store first, then to the key cache (so a revoked key stops
//! working here as soon as `revoke_key` returns), then to the audit log.

use crate::audit::{action, AuditEntry, Outcome};
use crate::identity::{Access, Identity};
use crate::key::{ApiKey, KeyParseError, KeyPrefix};
use crate::metastore::StoreError;
use crate::record::{KeyRecord, Owner};
use crate::role::Role;
use crate::service::AuthService;
use std::{net::IpAddr, sync::Arc};
use thiserror::Error;
use tracing::{info, warn};

/// Fresh prefixes tried when a generated one is already taken (36^8 prefixes: practically never).
const CREATE_ATTEMPTS: usize = 4;

/// What a new key should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    /// Who it belongs to.
    pub owner: Owner,
    /// Its role.
    pub role: Role,
    /// Free text for listings.
    pub label: Option<String>,
    /// Expiry (epoch ms); must be in the future.
    pub expires_at_ms: Option<i64>,
    /// Models it may use; `None` means all.
    pub allowed_models: Option<Vec<String>>,
}

/// A key just created: its text (show it once) and what was stored.
#[derive(Clone, Debug)]
pub struct CreatedKey {
    /// The whole key. Its `Debug` is redacted; use `expose_secret` to show it.
    pub key: ApiKey,
    /// The stored record.
    pub record: KeyRecord,
}

/// Who made a key change, for the audit record. `Actor::default()` is the system (bootstrap).
#[derive(Clone, Debug, Default)]
pub struct Actor {
    /// The acting key.
    pub identity: Option<Arc<Identity>>,
    /// Its client address.
    pub client_ip: Option<IpAddr>,
    /// The request id.
    pub request_id: Option<String>,
}

impl Actor {
    /// The caller of an allowed request.
    pub fn from_access(access: &Access, request_id: Option<&str>) -> Self {
        Self {
            identity: Some(access.identity.clone()),
            client_ip: Some(access.client_ip),
            request_id: request_id.map(str::to_owned),
        }
    }
}

/// What [`AuthService::bootstrap_admin`] did.
#[derive(Debug)]
pub enum Bootstrap {
    /// An active admin key already exists; nothing was created.
    Existing,
    /// The key given in `GPUFLEET_ADMIN_KEY` was stored as the admin key.
    Imported(KeyPrefix),
    /// A new admin key was generated; print it once.
    Generated(ApiKey),
}

/// A key change that could not be made.
#[derive(Debug, Error)]
pub enum KeyAdminError {
    /// The request is invalid (e.g. an expiry in the past).
    #[error("invalid key request: {0}")]
    Invalid(String),
    /// The admin key given through the environment is not a well-formed key.
    #[error("GPUFLEET_ADMIN_KEY is not a valid gpufleet key: {0}")]
    InvalidImportedKey(KeyParseError),
    /// No key with this prefix.
    #[error("no key with prefix {0}")]
    NotFound(KeyPrefix),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl KeyAdminError {
    /// The HTTP status of this error.
    pub fn status_code(&self) -> u16 {
        match self {
            KeyAdminError::Invalid(_) | KeyAdminError::InvalidImportedKey(_) => 400,
            KeyAdminError::NotFound(_) | KeyAdminError::Store(StoreError::KeyNotFound(_)) => 404,
            KeyAdminError::Store(StoreError::DuplicatePrefix(_)) => 409,
            KeyAdminError::Store(StoreError::Backend(_)) => 503,
            KeyAdminError::Store(StoreError::Corrupt(_)) => 500,
        }
    }
}

impl AuthService {
    /// Creates a key and returns its text (to show once) and record.
    pub async fn create_key(&self, new: NewKey, by: &Actor, now_ms: i64) -> Result<CreatedKey, KeyAdminError> {
        if new.expires_at_ms.is_some_and(|e| e <= now_ms) {
            return Err(KeyAdminError::Invalid("expires_at must be in the future".into()));
        }
        let created = self
            .store_new_key(&new, now_ms, |record| async move { self.store.create_key(&record).await.map(|()| record) })
            .await?;
        self.record_key_event(by, action::KEY_CREATED, created.key.prefix(), now_ms).await;
        Ok(created)
    }

    async fn store_new_key<F, Fut>(&self, new: &NewKey, now_ms: i64, store: F) -> Result<CreatedKey, KeyAdminError>
    where
        F: Fn(KeyRecord) -> Fut,
        Fut: std::future::Future<Output = Result<KeyRecord, StoreError>>,
    {
        let mut last = None;
        for _ in 0..CREATE_ATTEMPTS {
            let key = ApiKey::generate();
            let mut record = KeyRecord::new(key.prefix(), key.hash(), new.owner.clone(), new.role, now_ms);
            record.label.clone_from(&new.label);
            record.expires_at_ms = new.expires_at_ms;
            record.allowed_models.clone_from(&new.allowed_models);
            match store(record).await {
                Ok(record) => return Ok(CreatedKey { key, record }),
                Err(e @ StoreError::DuplicatePrefix(_)) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.unwrap_or(StoreError::Backend("key creation gave up".into())).into())
    }

    /// Every key, revoked ones included.
    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, KeyAdminError> {
        Ok(self.store.list_keys().await?)
    }

    /// Revokes a key; it fails authentication in this process from the moment this returns.
    /// `Ok(false)` when it was already revoked.
    pub async fn revoke_key(&self, prefix: &KeyPrefix, by: &Actor, now_ms: i64) -> Result<bool, KeyAdminError> {
        let record = self.store.get_key_by_prefix(prefix).await?.ok_or(KeyAdminError::NotFound(*prefix))?;
        let newly = self.store.revoke_key(prefix, now_ms).await?;
        self.cache.revoke(&record, now_ms);
        if newly {
            self.record_key_event(by, action::KEY_REVOKED, *prefix, now_ms).await;
        }
        Ok(newly)
    }

    /// Replaces a key by a new one with the same owner, role, label, expiry and models, revoking
    /// the old one in the same transaction.
    pub async fn rotate_key(&self, old: &KeyPrefix, by: &Actor, now_ms: i64) -> Result<CreatedKey, KeyAdminError> {
        let current = self.store.get_key_by_prefix(old).await?.ok_or(KeyAdminError::NotFound(*old))?;
        if !current.is_active(now_ms) {
            return Err(KeyAdminError::NotFound(*old));
        }
        let new = NewKey {
            owner: current.owner.clone(),
            role: current.role,
            label: current.label.clone(),
            expires_at_ms: current.expires_at_ms,
            allowed_models: current.allowed_models.clone(),
        };
        let created = self
            .store_new_key(&new, now_ms, |record| async move {
                self.store.rotate_key(old, &record, now_ms).await.map(|()| record)
            })
            .await?;
        self.cache.revoke(&current, now_ms);
        let mut entry = self.key_event(by, action::KEY_ROTATED, *old, now_ms);
        entry.target = format!("{old} -> {}", created.key.prefix());
        self.append_key_event(entry).await;
        Ok(created)
    }

    /// On a store without an active admin key, stores one: the key given (the value of
    /// `GPUFLEET_ADMIN_KEY`, read by the binary) or a generated one, returned to print once.
    ///
    /// Several replicas bootstrapping the same empty store at once may each create one.
    pub async fn bootstrap_admin(&self, env_key: Option<&str>, now_ms: i64) -> Result<Bootstrap, KeyAdminError> {
        let imported = env_key.map(ApiKey::parse).transpose().map_err(KeyAdminError::InvalidImportedKey)?;
        let keys = self.store.list_keys().await?;
        if keys.iter().any(|k| k.role == Role::Admin && k.is_active(now_ms)) {
            if let Some(k) = &imported {
                if !keys.iter().any(|r| r.prefix == k.prefix() && r.hash.matches(k)) {
                    warn!(key = %k.prefix(), "GPUFLEET_ADMIN_KEY ignored: an admin key already exists");
                }
            }
            return Ok(Bootstrap::Existing);
        }
        let owner = Owner::new("admin").map_err(|e| KeyAdminError::Invalid(e.to_string()))?;
        let new = NewKey {
            owner,
            role: Role::Admin,
            label: Some("bootstrap".into()),
            expires_at_ms: None,
            allowed_models: None,
        };
        let (outcome, prefix) = match imported {
            Some(key) => {
                let mut record = KeyRecord::new(key.prefix(), key.hash(), new.owner, Role::Admin, now_ms);
                record.label = new.label;
                self.store.create_key(&record).await?;
                (Bootstrap::Imported(key.prefix()), key.prefix())
            }
            None => {
                let created = self
                    .store_new_key(&new, now_ms, |r| async move { self.store.create_key(&r).await.map(|()| r) })
                    .await?;
                let prefix = created.key.prefix();
                (Bootstrap::Generated(created.key), prefix)
            }
        };
        info!(key = %prefix, "bootstrap admin key stored");
        self.record_key_event(&Actor::default(), action::KEY_CREATED, prefix, now_ms).await;
        Ok(outcome)
    }

    fn key_event(&self, by: &Actor, action: &str, target: KeyPrefix, now_ms: i64) -> AuditEntry {
        let mut e = AuditEntry::new(now_ms, action, Outcome::Success);
        if let Some(id) = &by.identity {
            e.key_prefix = Some(id.prefix);
            e.owner = Some(id.owner.clone());
            e.role = Some(id.role);
        }
        e.client_ip = by.client_ip;
        e.request_id.clone_from(&by.request_id);
        e.target = target.to_string();
        e
    }

    async fn record_key_event(&self, by: &Actor, action: &str, target: KeyPrefix, now_ms: i64) {
        self.append_key_event(self.key_event(by, action, target, now_ms)).await;
    }

    async fn append_key_event(&self, entry: AuditEntry) {
        if let Err(error) = self.audit.append(entry).await {
            // The change itself is stored; only its record is lost (the writer has stopped).
            warn!(%error, "key change not recorded in the audit log");
        }
    }
}
