//! What is stored about a key: [`KeyRecord`] (never the key itself, only its hash) and the
//! [`Owner`] name.

use crate::key::{KeyHash, KeyPrefix};
use crate::role::Role;
use std::{fmt, sync::Arc};
use thiserror::Error;

/// Longest accepted owner name.
pub const OWNER_MAX_LEN: usize = 128;

/// Who a key belongs to (a person, a team or a service), e.g. `alice` or `ci-runner`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(Arc<str>);

/// An owner name that is empty, too long or holds control characters.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid owner name: must be 1..={OWNER_MAX_LEN} characters without control characters")]
pub struct InvalidOwner;

impl Owner {
    /// Checks and wraps an owner name.
    pub fn new(name: &str) -> Result<Self, InvalidOwner> {
        if name.is_empty() || name.len() > OWNER_MAX_LEN || name.chars().any(char::is_control) {
            return Err(InvalidOwner);
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Owner {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// One API key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// Public prefix; unique.
    pub prefix: KeyPrefix,
    /// SHA-256 of the whole key.
    pub hash: KeyHash,
    /// Who it belongs to.
    pub owner: Owner,
    /// What it may do.
    pub role: Role,
    /// Free text shown in listings (e.g. "ci runner on host-3").
    pub label: Option<String>,
    /// Creation time (epoch ms).
    pub created_at_ms: i64,
    /// After this instant (epoch ms) the key no longer authenticates.
    pub expires_at_ms: Option<i64>,
    /// When it was revoked (epoch ms); a revoked key never authenticates again.
    pub revoked_at_ms: Option<i64>,
    /// Last successful use (epoch ms), written in batches so it may lag.
    pub last_used_ms: Option<i64>,
    /// Models it may use through the gateway; `None` means all.
    pub allowed_models: Option<Vec<String>>,
}

impl KeyRecord {
    /// A fresh, unrevoked, never-used record.
    pub fn new(prefix: KeyPrefix, hash: KeyHash, owner: Owner, role: Role, created_at_ms: i64) -> Self {
        Self {
            prefix,
            hash,
            owner,
            role,
            label: None,
            created_at_ms,
            expires_at_ms: None,
            revoked_at_ms: None,
            last_used_ms: None,
            allowed_models: None,
        }
    }

    /// Whether it was revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at_ms.is_some()
    }

    /// Whether it has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|e| now_ms >= e)
    }

    /// Whether it can authenticate at `now_ms`.
    pub fn is_active(&self, now_ms: i64) -> bool {
        !self.is_revoked() && !self.is_expired(now_ms)
    }
}

/// Whether `allowed` (a key's model list; `None` = all) lets it use `model`.
pub fn model_allowed(allowed: Option<&[String]>, model: &str) -> bool {
    allowed.is_none_or(|list| list.iter().any(|m| m == model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ApiKey;

    #[test]
    fn owner_names_are_checked() {
        assert_eq!(Owner::new("alice").unwrap().as_str(), "alice");
        assert_eq!(Owner::new(""), Err(InvalidOwner));
        assert_eq!(Owner::new("a\nb"), Err(InvalidOwner));
        assert_eq!(Owner::new(&"x".repeat(OWNER_MAX_LEN + 1)), Err(InvalidOwner));
    }

    #[test]
    fn activity_follows_revocation_and_expiry() {
        let k = ApiKey::generate();
        let mut r = KeyRecord::new(k.prefix(), k.hash(), Owner::new("bob").unwrap(), Role::User, 10);
        assert!(r.is_active(1_000));
        r.expires_at_ms = Some(500);
        assert!(r.is_active(499) && !r.is_active(500));
        r.expires_at_ms = None;
        r.revoked_at_ms = Some(20);
        assert!(!r.is_active(30));
    }

    #[test]
    fn model_lists_restrict() {
        let list = vec!["llama3".to_owned()];
        assert!(model_allowed(None, "anything"));
        assert!(model_allowed(Some(&list), "llama3"));
        assert!(!model_allowed(Some(&list), "qwen"));
        assert!(!model_allowed(Some(&[]), "llama3"));
    }
}
