//! [`AuthConfig`]: the `[auth]` section as written in the config file, and its validation into
//! [`AuthOptions`]. The binary reads the file and the environment; this crate never does.

use crate::allowlist::{AllowlistConfig, AllowlistError, IpAllowlist};
use crate::audit_log::AuditLogConfig;
use crate::permission::{PermissionConfigError, PermissionTable, PermissionsConfig};
use crate::ratelimit::{LocalRateLimiter, RateLimitConfig};
use crate::service::AuthOptions;
use serde::{Deserialize, Serialize};
use std::{num::NonZeroU64, sync::Arc, time::Duration};
use thiserror::Error;

/// Security settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Requests per minute per key and per client IP.
    pub rate_limits: RateLimitConfig,
    /// Allowed client networks and trusted proxies.
    pub allowlist: AllowlistConfig,
    /// Refinements of the role → permissions table (see [`crate::permission`]).
    pub permissions: PermissionsConfig,
    /// Seconds a key is served from memory before it is read again (how long a revocation made on
    /// another replica takes to apply here). Default 30.
    pub key_cache_ttl_secs: u64,
    /// Days audit records are kept; 0 keeps them forever. Default 90.
    pub audit_retention_days: u64,
    /// Audit entries that may wait to be written. Default 8192.
    pub audit_queue_capacity: usize,
    /// Most audit entries written in one transaction. Default 512.
    pub audit_batch_max: usize,
    /// Seconds between upkeep rounds (last-use times, bucket pruning, retention). Default 10.
    pub maintenance_interval_secs: NonZeroU64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let audit = AuditLogConfig::default();
        Self {
            rate_limits: RateLimitConfig::default(),
            allowlist: AllowlistConfig::default(),
            permissions: PermissionsConfig::default(),
            key_cache_ttl_secs: 30,
            audit_retention_days: 90,
            audit_queue_capacity: audit.capacity,
            audit_batch_max: audit.max_batch,
            maintenance_interval_secs: NonZeroU64::MIN.saturating_add(9),
        }
    }
}

/// An invalid `[auth]` section; the message names the field.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthConfigError {
    /// A bad `[auth.permissions]` entry.
    #[error("auth.{0}")]
    Permissions(#[from] PermissionConfigError),
    /// A bad `[auth.allowlist]`.
    #[error("auth.{0}")]
    Allowlist(#[from] AllowlistError),
    /// A zero where a size is needed.
    #[error("auth.{0} must be at least 1")]
    Zero(&'static str),
}

impl AuthConfig {
    /// Checks the settings and builds the service options (with a local rate limiter).
    pub fn build_options(&self) -> Result<AuthOptions, AuthConfigError> {
        Ok(AuthOptions {
            permissions: PermissionTable::from_config(&self.permissions)?,
            limiter: Arc::new(LocalRateLimiter::new(&self.rate_limits)),
            allowlist: IpAllowlist::new(self.allowlist.allow.clone())?,
            trusted_proxies: self.allowlist.trusted_proxies.clone(),
            cache_ttl: Duration::from_secs(self.key_cache_ttl_secs),
        })
    }

    /// The audit queue settings.
    pub fn audit_log_config(&self) -> Result<AuditLogConfig, AuthConfigError> {
        if self.audit_queue_capacity == 0 {
            return Err(AuthConfigError::Zero("audit_queue_capacity"));
        }
        if self.audit_batch_max == 0 {
            return Err(AuthConfigError::Zero("audit_batch_max"));
        }
        Ok(AuditLogConfig { capacity: self.audit_queue_capacity, max_batch: self.audit_batch_max })
    }

    /// How long audit records are kept (`None`: forever).
    pub fn audit_retention(&self) -> Option<Duration> {
        (self.audit_retention_days > 0).then(|| Duration::from_secs(self.audit_retention_days.saturating_mul(86_400)))
    }

    /// Seconds between upkeep rounds.
    pub fn maintenance_interval(&self) -> Duration {
        Duration::from_secs(self.maintenance_interval_secs.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Permission, Role};

    #[test]
    fn an_empty_section_gives_the_defaults() {
        let c: AuthConfig = toml::from_str("").unwrap();
        assert_eq!(c, AuthConfig::default());
        assert_eq!(c.maintenance_interval(), Duration::from_secs(10));
        assert_eq!(c.audit_retention(), Some(Duration::from_secs(90 * 86_400)));
        let o = c.build_options().unwrap();
        assert_eq!(o.permissions, PermissionTable::default());
        assert_eq!(o.cache_ttl, Duration::from_secs(30));
    }

    #[test]
    fn a_full_section_is_read_and_validated() {
        let text = r#"
            key_cache_ttl_secs = 5
            audit_retention_days = 0
            [rate_limits]
            inference_per_minute = 1200
            [allowlist]
            allow = ["0.0.0.0/0"]
            [permissions]
            viewer = ["+AuditRead"]
        "#;
        let c: AuthConfig = toml::from_str(text).unwrap();
        assert_eq!(c.rate_limits.inference_per_minute.get(), 1200);
        assert_eq!(c.audit_retention(), None);
        let o = c.build_options().unwrap();
        assert!(o.permissions.allows(Role::Viewer, Permission::AuditRead));
        assert!(o.allowlist.allows("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn bad_sections_name_the_field() {
        assert!(toml::from_str::<AuthConfig>("key_cache_ttl = 5").is_err());
        let c: AuthConfig = toml::from_str("[permissions]\nviewer = [\"Nope\"]").unwrap();
        assert!(c.build_options().unwrap_err().to_string().contains("Nope"));
        let c: AuthConfig = toml::from_str("[allowlist]\nallow = []").unwrap();
        assert_eq!(c.build_options().unwrap_err(), AuthConfigError::Allowlist(AllowlistError::Empty));
        let c: AuthConfig = toml::from_str("audit_batch_max = 0").unwrap();
        assert_eq!(c.audit_log_config().unwrap_err(), AuthConfigError::Zero("audit_batch_max"));
    }
}
