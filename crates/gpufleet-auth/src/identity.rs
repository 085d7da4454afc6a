//! Who a request is ([`Identity`]), what it asks for ([`AccessRequest`]) and what the checks
//! found ([`Access`]); also how a request becomes an [`AuditEntry`].

use crate::audit::{AuditEntry, Outcome};
use crate::key::KeyPrefix;
use crate::permission::Permission;
use crate::ratelimit::LimitClass;
use crate::record::{model_allowed, KeyRecord, Owner};
use crate::role::Role;
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

/// An authenticated key: what handlers need to know about the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The key's public prefix.
    pub prefix: KeyPrefix,
    /// Who it belongs to (jobs are "own" when their user is this owner).
    pub owner: Owner,
    /// Its role.
    pub role: Role,
    /// Models it may use; `None` means all.
    pub allowed_models: Option<Arc<[String]>>,
    /// When it expires (epoch ms).
    pub expires_at_ms: Option<i64>,
}

impl Identity {
    /// The identity a stored key grants.
    pub fn from_record(r: &KeyRecord) -> Self {
        Self {
            prefix: r.prefix,
            owner: r.owner.clone(),
            role: r.role,
            allowed_models: r.allowed_models.as_deref().map(Arc::from),
            expires_at_ms: r.expires_at_ms,
        }
    }

    /// Whether this key may use `model` through the gateway.
    pub fn may_use_model(&self, model: &str) -> bool {
        model_allowed(self.allowed_models.as_deref(), model)
    }
}

/// Everything [`crate::AuthService::check_access`] needs from one HTTP request. Its `Debug` never
/// shows the credential.
#[derive(Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// `X-Forwarded-For` (several headers joined with `,`), honoured only from trusted proxies.
    pub x_forwarded_for: Option<&'a str>,
    /// The `Authorization` value (`Bearer <key>`), else the `X-Api-Key` value, as raw bytes.
    pub credential: Option<&'a [u8]>,
    /// Which rate-limit budget the route draws from.
    pub class: LimitClass,
    /// The permission the route needs.
    pub permission: Permission,
    /// HTTP method, for the audit log.
    pub method: &'a str,
    /// Matched route pattern, for the audit log.
    pub route: &'a str,
    /// Request id, for the audit log.
    pub request_id: Option<&'a str>,
}

/// A request that passed every check.
#[derive(Clone, Debug)]
pub struct Access {
    /// The caller.
    pub identity: Arc<Identity>,
    /// The client address (after trusted-proxy resolution).
    pub client_ip: IpAddr,
}

impl std::fmt::Debug for AccessRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRequest")
            .field("peer", &self.peer)
            .field("x_forwarded_for", &self.x_forwarded_for)
            .field("credential", &self.credential.map(|_| "<redacted>"))
            .field("class", &self.class)
            .field("permission", &self.permission)
            .field("method", &self.method)
            .field("route", &self.route)
            .field("request_id", &self.request_id)
            .finish()
    }
}

impl AccessRequest<'_> {
    /// An audit entry for this request; `identity` and `client_ip` as far as they are known.
    pub fn audit_entry(
        &self,
        identity: Option<&Identity>,
        client_ip: Option<IpAddr>,
        action: &str,
        target: &str,
        outcome: Outcome,
        now_ms: i64,
    ) -> AuditEntry {
        AuditEntry {
            time_ms: now_ms,
            key_prefix: identity.map(|i| i.prefix),
            owner: identity.map(|i| i.owner.clone()),
            role: identity.map(|i| i.role),
            client_ip,
            method: self.method.to_owned(),
            route: self.route.to_owned(),
            target: target.to_owned(),
            action: action.to_owned(),
            outcome,
            request_id: self.request_id.map(str::to_owned),
        }
    }
}

impl Access {
    /// The audit entry of a mutating request this access allowed, once its outcome is known.
    pub fn audit_entry(
        &self,
        req: &AccessRequest<'_>,
        action: &str,
        target: &str,
        outcome: Outcome,
        now_ms: i64,
    ) -> AuditEntry {
        req.audit_entry(Some(&self.identity), Some(self.client_ip), action, target, outcome, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ApiKey;

    #[test]
    fn identity_carries_the_record_and_its_model_list() {
        let k = ApiKey::generate();
        let mut r = KeyRecord::new(k.prefix(), k.hash(), Owner::new("carol").unwrap(), Role::User, 0);
        assert!(Identity::from_record(&r).may_use_model("anything"));
        r.allowed_models = Some(vec!["llama3".into()]);
        let id = Identity::from_record(&r);
        assert!(id.may_use_model("llama3") && !id.may_use_model("qwen"));
        assert_eq!((id.prefix, id.role, id.owner.as_str()), (k.prefix(), Role::User, "carol"));
    }

    #[test]
    fn audit_entries_carry_the_request() {
        let req = AccessRequest {
            peer: "10.0.0.1:5000".parse().unwrap(),
            x_forwarded_for: None,
            credential: None,
            class: LimitClass::Management,
            permission: Permission::FleetWrite,
            method: "POST",
            route: "/api/v1/hosts/{host}/restart",
            request_id: Some("req-1"),
        };
        let e = req.audit_entry(None, Some(req.peer.ip()), "host.restart", "gpu-3", Outcome::Denied, 42);
        let key = ApiKey::generate();
        let with_key = AccessRequest { credential: Some(key.expose_secret().as_bytes()), ..req };
        let shown = format!("{with_key:?}");
        assert!(!shown.contains(&key.expose_secret()[12..]) && shown.contains("<redacted>"), "{shown}");
        assert_eq!((e.method.as_str(), e.route.as_str(), e.target.as_str()), ("POST", req.route, "gpu-3"));
        assert_eq!((e.request_id.as_deref(), e.time_ms, e.key_prefix), (Some("req-1"), 42, None));
    }
}
