//! The audit record, its hash chain and the chain check every [`MetaStore`](crate::MetaStore)
//! shares.
//!
//! An [`AuditEntry`] is what a caller reports; the store turns it into an [`AuditRecord`] by giving
//! it the next id, the previous record's hash and its own [`ChainHash`], all inside one write
//! transaction, so the chain is linear. The hash is SHA-256 over a canonical encoding of every
//! field plus `prev_hash` ([`AuditRecord::compute_hash`]): editing, deleting or reordering a record
//! breaks the check of that record or the next one ([`ChainVerifier`]).
//!
//! Retention removes a *prefix* of the chain and keeps the last removed record's id and hash as the
//! anchor the first remaining record must link to. Limit: the chain has no secret, so someone with
//! write access to the database who rewrites a record *and every later one* is not detected; ship
//! the latest hash elsewhere (logs, metrics) to close that.

use crate::key::KeyPrefix;
use crate::record::Owner;
use crate::role::Role;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::{fmt, net::IpAddr};

mod chain;
pub use chain::{BrokenReason, BrokenRecord, ChainVerifier, VerifyReport};

/// Well-known values of [`AuditEntry::action`]. Mutating routes use their own `noun.verb` names.
pub mod action {
    /// A credential was missing, malformed, unknown, expired or revoked.
    pub const AUTH_FAILED: &str = "auth.failed";
    /// An authenticated key lacked the permission a route needs.
    pub const PERMISSION_DENIED: &str = "auth.denied";
    /// A client IP outside the allowlist was refused.
    pub const IP_DENIED: &str = "auth.ip_denied";
    /// The first refusal of a burst over a rate limit.
    pub const RATE_LIMITED: &str = "auth.rate_limited";
    /// A key was created (including the bootstrap admin key).
    pub const KEY_CREATED: &str = "key.created";
    /// A key was revoked.
    pub const KEY_REVOKED: &str = "key.revoked";
    /// A key was replaced by a new one.
    pub const KEY_ROTATED: &str = "key.rotated";
    /// The watchdog restarted a container.
    pub const WATCHDOG_RESTART: &str = "watchdog.restart";
}

/// How the audited action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It was done.
    Success,
    /// It was refused (authentication, permission, allowlist, rate limit).
    Denied,
    /// It was allowed but failed.
    Failed,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Outcome::Success, Outcome::Denied, Outcome::Failed].into_iter().find(|o| o.as_str() == s)
    }
}

/// A SHA-256 link of the audit chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The `prev_hash` of the very first record.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// Reads stored bytes; `None` unless exactly 32.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(Self)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for ChainHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// One audited event as reported, before it joins the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// When it happened (epoch ms).
    pub time_ms: i64,
    /// Prefix of the key that acted (or that was presented, for a failed authentication).
    pub key_prefix: Option<KeyPrefix>,
    /// Owner of that key.
    pub owner: Option<Owner>,
    /// Role of that key.
    pub role: Option<Role>,
    /// Client IP (after trusted-proxy resolution).
    pub client_ip: Option<IpAddr>,
    /// HTTP method, or empty for events without a request (watchdog).
    pub method: String,
    /// Matched route pattern (`/api/v1/keys/{prefix}`), or empty.
    pub route: String,
    /// What was acted on (a key prefix, a host, a job id), or empty; for a refusal recorded by
    /// [`AuthService::check_access`](crate::AuthService::check_access), the reason.
    pub target: String,
    /// What was done: a name from [`action`] or the route's `noun.verb`.
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The request id, when there was a request.
    pub request_id: Option<String>,
}

impl AuditEntry {
    /// An entry with only time, action and outcome set; fill the rest with struct update syntax
    /// or field assignment.
    pub fn new(time_ms: i64, action: &str, outcome: Outcome) -> Self {
        Self {
            time_ms,
            key_prefix: None,
            owner: None,
            role: None,
            client_ip: None,
            method: String::new(),
            route: String::new(),
            target: String::new(),
            action: action.to_owned(),
            outcome,
            request_id: None,
        }
    }
}

/// One record of the audit chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Position in the chain: 1, 2, 3, … with no gaps.
    pub id: i64,
    /// The reported event.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// Hash of the record before (or [`ChainHash::GENESIS`], or the retention anchor).
    pub prev_hash: ChainHash,
    /// [`AuditRecord::compute_hash`] of this record.
    pub hash: ChainHash,
}

impl AuditRecord {
    /// Links `entry` after a record whose hash is `prev_hash`, as record `id`.
    pub fn chain(id: i64, entry: AuditEntry, prev_hash: ChainHash) -> Self {
        let hash = Self::compute_hash(id, &entry, &prev_hash);
        Self { id, entry, prev_hash, hash }
    }

    /// SHA-256 over the canonical encoding: a version tag, then every field in declaration order,
    /// each as a presence byte (optional fields) and a little-endian `u32` length before its
    /// UTF-8 bytes (integers as 8 bytes LE), then `prev_hash`. Lengths make it unambiguous.
    pub fn compute_hash(id: i64, e: &AuditEntry, prev_hash: &ChainHash) -> ChainHash {
        fn bytes(h: &mut Sha256, b: &[u8]) {
            h.update((b.len() as u32).to_le_bytes());
            h.update(b);
        }
        fn opt(h: &mut Sha256, b: Option<&str>) {
            match b {
                None => h.update([0u8]),
                Some(s) => {
                    h.update([1u8]);
                    bytes(h, s.as_bytes());
                }
            }
        }
        let mut h = Sha256::new();
        h.update(b"gpufleet-audit-v1");
        h.update(id.to_le_bytes());
        h.update(e.time_ms.to_le_bytes());
        opt(&mut h, e.key_prefix.as_ref().map(KeyPrefix::as_str));
        opt(&mut h, e.owner.as_ref().map(Owner::as_str));
        opt(&mut h, e.role.map(Role::as_str));
        opt(&mut h, e.client_ip.map(|ip| ip.to_string()).as_deref());
        bytes(&mut h, e.method.as_bytes());
        bytes(&mut h, e.route.as_bytes());
        bytes(&mut h, e.target.as_bytes());
        bytes(&mut h, e.action.as_bytes());
        bytes(&mut h, e.outcome.as_str().as_bytes());
        opt(&mut h, e.request_id.as_deref());
        h.update(prev_hash.0);
        ChainHash(h.finalize().into())
    }
}

/// Which records an audit query returns, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only records at or after this time (epoch ms).
    pub since_ms: Option<i64>,
    /// Only records whose key prefix or owner equals this.
    pub actor: Option<String>,
    /// Only records with this action.
    pub action: Option<String>,
    /// Only records with an id below this (paging: pass the last id seen).
    pub before_id: Option<i64>,
    /// At most this many records; 0 means the default of 100.
    pub limit: usize,
}

impl AuditFilter {
    /// The default page size.
    pub const DEFAULT_LIMIT: usize = 100;
    /// The largest page size.
    pub const MAX_LIMIT: usize = 10_000;

    /// The effective limit.
    pub fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            Self::DEFAULT_LIMIT
        } else {
            self.limit.min(Self::MAX_LIMIT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let mut e = AuditEntry::new(1_001, "job.cancel", Outcome::Success);
        e.target = "job-1".into();
        e.client_ip = Some(IpAddr::from([10, 0, 0, 1]));
        let base = AuditRecord::chain(1, e, ChainHash::GENESIS);
        let edits: Vec<fn(&mut AuditEntry)> = vec![
            |e| e.time_ms += 1,
            |e| e.key_prefix = Some(KeyPrefix::parse("abcdefgh").unwrap()),
            |e| e.owner = Some(Owner::new("mallory").unwrap()),
            |e| e.role = Some(Role::Admin),
            |e| e.client_ip = None,
            |e| e.method = "DELETE".into(),
            |e| e.route = "/x".into(),
            |e| e.target = "job-2".into(),
            |e| e.action = "job.submit".into(),
            |e| e.outcome = Outcome::Denied,
            |e| e.request_id = Some(String::new()),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut e = base.entry.clone();
            edit(&mut e);
            assert_ne!(AuditRecord::compute_hash(1, &e, &base.prev_hash), base.hash, "edit {i}");
        }
        assert_ne!(AuditRecord::compute_hash(2, &base.entry, &base.prev_hash), base.hash);
        assert_ne!(AuditRecord::compute_hash(1, &base.entry, &ChainHash([1; 32])), base.hash);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut a = AuditEntry::new(1, "x", Outcome::Success);
        a.method = "ab".into();
        let mut b = a.clone();
        b.method = "a".into();
        b.route = "b".into();
        let g = ChainHash::GENESIS;
        assert_ne!(AuditRecord::compute_hash(1, &a, &g), AuditRecord::compute_hash(1, &b, &g));
    }

    #[test]
    fn outcomes_round_trip_and_hashes_print_as_hex() {
        for o in [Outcome::Success, Outcome::Denied, Outcome::Failed] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("ok"), None);
        assert_eq!(ChainHash([0xab; 32]).to_hex(), "ab".repeat(32));
        assert_eq!(ChainHash::from_slice(&[1; 32]), Some(ChainHash([1; 32])));
    }
}
