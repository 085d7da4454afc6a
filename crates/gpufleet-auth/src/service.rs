//! [`AuthService`]: the one object the HTTP layer asks "may this request go on?".
//!
//! [`AuthService::check_access`] runs, in order: client IP (trusted proxies) → allowlist → rate
//! limit by IP → authenticate the key → rate limit by key → permission. Each refusal is an
//! [`AuthError`] (one `status_code()`) and is written to the audit log (rate-limit refusals once
//! per burst). The caller then records the outcome of a mutating request with
//! [`Access::audit_entry`] and [`AuthService::audit`].
//!
//! Authentication of a cached key is a SHA-256, a map lookup and a constant-time compare; the
//! store is read only for a key not seen within `cache_ttl` (see the private `cache` module).

use crate::allowlist::{client_ip, IpAllowlist};
use crate::audit::{AuditEntry, Outcome};
use crate::audit_log::{AuditLog, AuditLogError};
use crate::cache::{CachedKey, KeyCache};
use crate::error::AuthError;
use crate::identity::{Access, AccessRequest, Identity};
use crate::key::{ApiKey, KeyPrefix};
use crate::metastore::MetaStore;
use crate::permission::{Permission, PermissionTable};
use crate::proven::ProvenKey;
use crate::ratelimit::{LimitClass, LimitKey, LocalRateLimiter, RateLimitConfig, RateLimiter};
use ipnet::IpNet;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tracing::warn;

/// How long a burst of rate-limit refusals for one bucket is recorded as one audit record.
const BURST_AUDIT_WINDOW_MS: i64 = 60_000;
/// Bound on the burst-tracking map before old bursts are forgotten.
const BURST_MAP_MAX: usize = 4096;

/// The parts of an [`AuthService`] besides its store and audit log.
pub struct AuthOptions {
    /// Role → permissions.
    pub permissions: PermissionTable,
    /// Rate limiter shared by every request.
    pub limiter: Arc<dyn RateLimiter>,
    /// Client networks allowed to connect.
    pub allowlist: IpAllowlist,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// How long a cached key is used before it is read again from the store; bounds how long a
    /// revocation made by *another* replica takes to apply here.
    pub cache_ttl: Duration,
}

impl std::fmt::Debug for AuthOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthOptions")
            .field("permissions", &self.permissions)
            .field("allowlist", &self.allowlist)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            permissions: PermissionTable::default(),
            limiter: Arc::new(LocalRateLimiter::new(&RateLimitConfig::default())),
            allowlist: IpAllowlist::default(),
            trusted_proxies: Vec::new(),
            cache_ttl: Duration::from_secs(30),
        }
    }
}

/// Authentication, authorization, rate limits, allowlist and audit, for every surface.
pub struct AuthService {
    pub(crate) store: Arc<dyn MetaStore>,
    pub(crate) audit: AuditLog,
    pub(crate) cache: KeyCache,
    permissions: PermissionTable,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    allowlist: IpAllowlist,
    trusted_proxies: Vec<IpNet>,
    cache_ttl_ms: i64,
    /// Start of the current refusal burst per bucket (epoch ms).
    bursts: Mutex<FxHashMap<LimitKey, i64>>,
    /// Denial records dropped because the audit queue was full.
    dropped_audit: AtomicU64,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").field("cached_keys", &self.cache.len()).finish_non_exhaustive()
    }
}

impl AuthService {
    /// A service over `store`, recording to `audit`.
    pub fn new(store: Arc<dyn MetaStore>, audit: AuditLog, options: AuthOptions) -> Self {
        Self {
            store,
            audit,
            cache: KeyCache::default(),
            permissions: options.permissions,
            limiter: options.limiter,
            allowlist: options.allowlist,
            trusted_proxies: options.trusted_proxies,
            cache_ttl_ms: i64::try_from(options.cache_ttl.as_millis()).unwrap_or(i64::MAX),
            bursts: Mutex::default(),
            dropped_audit: AtomicU64::new(0),
        }
    }

    /// Checks a credential header value (`Bearer <key>` or a bare key) at `now_ms`.
    pub async fn authenticate(&self, credential: Option<&[u8]>, now_ms: i64) -> Result<Arc<Identity>, AuthError> {
        self.authenticate_proven(credential, now_ms, None).await
    }

    /// [`Self::authenticate`], skipping the key's parse and hash when `proven` holds these very
    /// bytes (and remembering them there after a success).
    async fn authenticate_proven(&self, credential: Option<&[u8]>, now_ms: i64, proven: Option<&mut ProvenKey>) -> Result<Arc<Identity>, AuthError> {
        let credential = credential.ok_or(AuthError::MissingCredential)?;
        if let Some((prefix, hash)) = proven.as_deref().and_then(|p| p.get(credential)) {
            let entry = self.cached_or_load(prefix, now_ms).await?;
            // Both hashes are the server's own: no timing to hide.
            if entry.hash == hash {
                return Self::admit(&entry, now_ms);
            }
        }
        let key = ApiKey::parse_header(credential)?;
        let entry = self.cached_or_load(key.prefix(), now_ms).await?;
        // The secret is checked before anything that would reveal the key's state.
        if !entry.hash.matches(&key) {
            return Err(AuthError::UnknownKey);
        }
        let identity = Self::admit(&entry, now_ms)?;
        if let Some(p) = proven {
            p.set(credential, key.prefix(), entry.hash);
        }
        Ok(identity)
    }

    /// The identity of a key whose secret was checked, unless revoked or expired.
    fn admit(entry: &CachedKey, now_ms: i64) -> Result<Arc<Identity>, AuthError> {
        if entry.revoked {
            return Err(AuthError::Revoked);
        }
        if entry.expires_at_ms.is_some_and(|e| now_ms >= e) {
            return Err(AuthError::Expired);
        }
        entry.touch(now_ms);
        Ok(entry.identity.clone())
    }

    async fn cached_or_load(&self, prefix: KeyPrefix, now_ms: i64) -> Result<Arc<CachedKey>, AuthError> {
        let cached = self.cache.get(&prefix);
        if let Some(e) = &cached {
            if e.revoked || now_ms.saturating_sub(e.loaded_at_ms) < self.cache_ttl_ms {
                return Ok(e.clone());
            }
        }
        match self.store.get_key_by_prefix(&prefix).await {
            Ok(Some(record)) => Ok(self.cache.insert_loaded(&record, now_ms)),
            Ok(None) => {
                self.cache.invalidate(&prefix);
                Err(AuthError::UnknownKey)
            }
            // A stale entry beats refusing every request while the store is down.
            Err(error) => match cached {
                Some(e) => {
                    warn!(%error, key = %prefix, "key store unreachable; using the cached key");
                    Ok(e)
                }
                None => Err(AuthError::Unavailable(error)),
            },
        }
    }

    /// Whether `identity`'s role holds `permission`.
    #[inline]
    pub fn authorize(&self, identity: &Identity, permission: Permission) -> Result<(), AuthError> {
        if self.permissions.allows(identity.role, permission) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(permission))
        }
    }

    /// Whether `identity` may use `model` through the gateway.
    pub fn check_model(&self, identity: &Identity, model: &str) -> Result<(), AuthError> {
        if identity.may_use_model(model) {
            Ok(())
        } else {
            Err(AuthError::ModelNotAllowed(model.to_owned()))
        }
    }

    /// The client address of a connection (see [`crate::allowlist::client_ip`]).
    pub fn client_ip(&self, peer: SocketAddr, x_forwarded_for: Option<&str>) -> IpAddr {
        client_ip(peer, x_forwarded_for, &self.trusted_proxies)
    }

    /// Whether `ip` is on the allowlist.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), AuthError> {
        if self.allowlist.allows(ip) {
            Ok(())
        } else {
            Err(AuthError::IpNotAllowed(ip))
        }
    }

    /// Counts one request against a bucket.
    pub async fn check_rate(&self, key: &LimitKey) -> Result<(), AuthError> {
        let verdict = match self.limiter.check_at_once(key) {
            Some(v) => v,
            None => self.limiter.check(key).await,
        };
        verdict.map_err(AuthError::RateLimited)
    }

    /// Every check of one request, in order (module doc). Refusals are audited here.
    pub async fn check_access(&self, req: &AccessRequest<'_>, now_ms: i64) -> Result<Access, AuthError> {
        self.check_access_proven(req, now_ms, None).await
    }

    /// [`Self::check_access`] for a server that keeps a [`ProvenKey`] per connection: a request
    /// presenting the credential the connection already proved skips its SHA-256; every other
    /// check runs as always.
    pub async fn check_access_proven(&self, req: &AccessRequest<'_>, now_ms: i64, proven: Option<&mut ProvenKey>) -> Result<Access, AuthError> {
        let ip = self.client_ip(req.peer, req.x_forwarded_for);
        let mut identity = None;
        let res = self.run_checks(req, ip, &mut identity, now_ms, proven).await;
        if let Err(e) = &res {
            self.audit_refusal(req, ip, identity.as_deref(), e, now_ms);
        }
        res
    }

    async fn run_checks(
        &self,
        req: &AccessRequest<'_>,
        ip: IpAddr,
        identity: &mut Option<Arc<Identity>>,
        now_ms: i64,
        proven: Option<&mut ProvenKey>,
    ) -> Result<Access, AuthError> {
        self.check_ip(ip)?;
        self.check_rate(&LimitKey::ip(req.class, ip)).await?;
        let id = identity.insert(self.authenticate_proven(req.credential, now_ms, proven).await?);
        self.check_rate(&LimitKey::key(req.class, id.prefix)).await?;
        self.authorize(id, req.permission)?;
        Ok(Access { identity: id.clone(), client_ip: ip })
    }

    fn audit_refusal(
        &self,
        req: &AccessRequest<'_>,
        ip: IpAddr,
        identity: Option<&Identity>,
        e: &AuthError,
        now_ms: i64,
    ) {
        if let AuthError::RateLimited(_) = e {
            let key = match identity {
                Some(id) => LimitKey::key(req.class, id.prefix),
                None => LimitKey::ip(req.class, ip),
            };
            if !self.starts_burst(key, now_ms) {
                return;
            }
        }
        let mut entry = req.audit_entry(identity, Some(ip), e.audit_action(), "", Outcome::Denied, now_ms);
        if entry.key_prefix.is_none() {
            // Name the presented key in failed authentications (its prefix is not secret).
            entry.key_prefix = req.credential.and_then(|c| ApiKey::parse_header(c).ok()).map(|k| k.prefix());
        }
        entry.target = e.to_string();
        self.try_audit(entry);
    }

    /// Whether a refusal in `key`'s bucket begins a new burst (else it is part of one already
    /// recorded).
    fn starts_burst(&self, key: LimitKey, now_ms: i64) -> bool {
        let mut bursts = self.bursts.lock();
        if bursts.len() >= BURST_MAP_MAX {
            bursts.retain(|_, start| now_ms.saturating_sub(*start) < BURST_AUDIT_WINDOW_MS);
        }
        match bursts.get(&key) {
            Some(start) if now_ms.saturating_sub(*start) < BURST_AUDIT_WINDOW_MS => false,
            _ => {
                bursts.insert(key, now_ms);
                true
            }
        }
    }

    /// Queues an audit entry, waiting while the queue is full (mutating requests: never dropped).
    pub async fn audit(&self, entry: AuditEntry) -> Result<(), AuditLogError> {
        self.audit.append(entry).await
    }

    /// Queues an audit entry without waiting; counts it as dropped when the queue is full. Used
    /// for refusals, so a flood of bad requests cannot stall the server on the audit log.
    pub fn try_audit(&self, entry: AuditEntry) {
        if let Err(e) = self.audit.try_append(entry) {
            self.dropped_audit.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "audit record dropped");
        }
    }

    /// The audit log handle (flush, direct appends).
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// The metadata store.
    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// Refusal records dropped so far because the audit queue was full.
    pub fn dropped_audit_records(&self) -> u64 {
        self.dropped_audit.load(Ordering::Relaxed)
    }

    /// The budget of a request path: `/v1/…` (the OpenAI-compatible gateway) draws from
    /// inference, everything else from management.
    pub fn class_for_path(path: &str) -> LimitClass {
        if path.starts_with("/v1/") {
            LimitClass::Inference
        } else {
            LimitClass::Management
        }
    }
}
