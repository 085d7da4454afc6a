//! [`AuthError`]: why a request is refused, and the one place that maps it to an HTTP status.

use crate::key::KeyParseError;
use crate::metastore::StoreError;
use crate::permission::Permission;
use crate::ratelimit::RetryAfter;
use std::net::IpAddr;
use thiserror::Error;

/// Why a request is refused. Messages are safe to return to the client: they never contain a
/// credential.
#[derive(Debug, Error)]
pub enum AuthError {
    /// No `Authorization` / `X-Api-Key` header.
    #[error("missing API key (send `Authorization: Bearer <key>` or `X-Api-Key: <key>`)")]
    MissingCredential,
    /// The credential is not a well-formed key.
    #[error("malformed API key: {0}")]
    Malformed(#[from] KeyParseError),
    /// No key with this prefix, or the secret does not match.
    #[error("invalid API key")]
    UnknownKey,
    /// The key is past its expiry.
    #[error("API key expired")]
    Expired,
    /// The key was revoked.
    #[error("API key revoked")]
    Revoked,
    /// The key's role lacks a permission the route needs.
    #[error("permission denied: this route needs {0}")]
    Forbidden(Permission),
    /// The key may not use this model.
    #[error("this API key may not use model {0:?}")]
    ModelNotAllowed(String),
    /// The client IP is outside the allowlist.
    #[error("client address {0} is not allowed")]
    IpNotAllowed(IpAddr),
    /// Over a rate limit.
    #[error("rate limit exceeded; retry in {}s", .0.header_secs())]
    RateLimited(RetryAfter),
    /// The key store could not be reached to check an uncached key.
    #[error("authentication unavailable")]
    Unavailable(#[source] StoreError),
}

impl AuthError {
    /// The HTTP status: 401 for credential problems, 403 for refusals of a known caller, 429 for
    /// rate limits, 503 when the key store is down.
    pub fn status_code(&self) -> u16 {
        match self {
            AuthError::MissingCredential
            | AuthError::Malformed(_)
            | AuthError::UnknownKey
            | AuthError::Expired
            | AuthError::Revoked => 401,
            AuthError::Forbidden(_) | AuthError::ModelNotAllowed(_) | AuthError::IpNotAllowed(_) => 403,
            AuthError::RateLimited(_) => 429,
            AuthError::Unavailable(_) => 503,
        }
    }

    /// The wait for a `Retry-After` header (429 only).
    pub fn retry_after(&self) -> Option<RetryAfter> {
        match self {
            AuthError::RateLimited(r) => Some(*r),
            _ => None,
        }
    }

    /// The audit action recording this refusal.
    pub fn audit_action(&self) -> &'static str {
        use crate::audit::action;
        match self.status_code() {
            401 => action::AUTH_FAILED,
            429 => action::RATE_LIMITED,
            _ if matches!(self, AuthError::IpNotAllowed(_)) => action::IP_DENIED,
            _ => action::PERMISSION_DENIED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_variant_maps_to_one_status() {
        let cases: Vec<(AuthError, u16)> = vec![
            (AuthError::MissingCredential, 401),
            (AuthError::Malformed(KeyParseError::BadFormat), 401),
            (AuthError::UnknownKey, 401),
            (AuthError::Expired, 401),
            (AuthError::Revoked, 401),
            (AuthError::Forbidden(Permission::KeysManage), 403),
            (AuthError::ModelNotAllowed("m".into()), 403),
            (AuthError::IpNotAllowed(IpAddr::from([8, 8, 8, 8])), 403),
            (AuthError::RateLimited(RetryAfter(Duration::from_millis(1500))), 429),
            (AuthError::Unavailable(StoreError::Backend("down".into())), 503),
        ];
        for (e, code) in cases {
            assert_eq!(e.status_code(), code, "{e}");
            assert_eq!(e.retry_after().is_some(), code == 429, "{e}");
        }
        assert_eq!(
            AuthError::RateLimited(RetryAfter(Duration::from_millis(1500))).to_string(),
            "rate limit exceeded; retry in 2s"
        );
        assert_eq!(AuthError::IpNotAllowed(IpAddr::from([8, 8, 8, 8])).audit_action(), "auth.ip_denied");
        assert_eq!(AuthError::Forbidden(Permission::FleetWrite).audit_action(), "auth.denied");
        assert_eq!(AuthError::Revoked.audit_action(), "auth.failed");
    }
}
