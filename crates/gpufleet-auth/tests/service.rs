//! AuthService end to end over SQLite: authentication, revocation taking effect at once,
//! rotation, expiry, the access pipeline with its audit records, rate-limit bursts, bootstrap.

mod common;

use common::Harness;
use gpufleet_auth::audit::action;
use gpufleet_auth::{
    AccessRequest, Actor, AuthError, AuthOptions, Bootstrap, KeyAdminError, LimitClass, LocalRateLimiter, MetaStore,
    NewKey, Owner, Permission, RateLimitConfig, Role,
};
use std::{num::NonZeroU32, sync::Arc, time::Duration};

const NOW: i64 = 1_700_000_000_000;

fn new_key(owner: &str, role: Role) -> NewKey {
    NewKey { owner: Owner::new(owner).unwrap(), role, label: None, expires_at_ms: None, allowed_models: None }
}

fn request<'a>(credential: Option<&'a [u8]>, permission: Permission) -> AccessRequest<'a> {
    AccessRequest {
        peer: "10.1.2.3:40000".parse().unwrap(),
        x_forwarded_for: None,
        credential,
        class: LimitClass::Management,
        permission,
        method: "POST",
        route: "/api/v1/fleet/silences",
        request_id: Some("req-7"),
    }
}

#[tokio::test]
async fn a_revoked_key_stops_working_immediately() -> anyhow::Result<()> {
    let h = Harness::new(AuthOptions::default()).await?;
    let created = h.service.create_key(new_key("alice", Role::User), &Actor::default(), NOW).await?;
    let header = format!("Bearer {}", created.key.expose_secret());
    let id = h.service.authenticate(Some(header.as_bytes()), NOW).await?;
    assert_eq!((id.owner.as_str(), id.role), ("alice", Role::User));

    assert!(h.service.revoke_key(&created.key.prefix(), &Actor::default(), NOW + 1).await?);
    let err = h.service.authenticate(Some(header.as_bytes()), NOW + 1).await.unwrap_err();
    assert!(matches!(err, AuthError::Revoked), "{err:?}");
    assert_eq!(err.status_code(), 401);
    assert!(!h.service.revoke_key(&created.key.prefix(), &Actor::default(), NOW + 2).await?, "already revoked");
    let records = h.audit(action::KEY_REVOKED).await?;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].entry.target, created.key.prefix().to_string());
    Ok(())
}

#[tokio::test]
async fn another_replica_sees_a_revocation_after_its_cache_ttl() -> anyhow::Result<()> {
    let h = Harness::new(AuthOptions::default()).await?;
    let other = Harness::over(h.store.clone(), AuthOptions::default(), tempfile::tempdir()?);
    let created = h.service.create_key(new_key("alice", Role::User), &Actor::default(), NOW).await?;
    let header = created.key.expose_secret().as_bytes().to_vec();
    other.service.authenticate(Some(&header), NOW).await?;
    h.service.revoke_key(&created.key.prefix(), &Actor::default(), NOW).await?;
    // Within the TTL the other replica still serves its cached entry...
    other.service.authenticate(Some(&header), NOW + 1_000).await?;
    // ...and re-reads the store once it has expired.
    let err = other.service.authenticate(Some(&header), NOW + 30_000).await.unwrap_err();
    assert!(matches!(err, AuthError::Revoked), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn rotation_replaces_the_key_and_keeps_its_grants() -> anyhow::Result<()> {
    let h = Harness::new(AuthOptions::default()).await?;
    let mut nk = new_key("bob", Role::Operator);
    nk.allowed_models = Some(vec!["llama3".into()]);
    let old = h.service.create_key(nk, &Actor::default(), NOW).await?;
    h.service.authenticate(Some(old.key.expose_secret().as_bytes()), NOW).await?;
    let new = h.service.rotate_key(&old.key.prefix(), &Actor::default(), NOW + 5).await?;
    let err = h.service.authenticate(Some(old.key.expose_secret().as_bytes()), NOW + 5).await.unwrap_err();
    assert!(matches!(err, AuthError::Revoked), "{err:?}");
    let id = h.service.authenticate(Some(new.key.expose_secret().as_bytes()), NOW + 5).await?;
    assert_eq!((id.owner.as_str(), id.role), ("bob", Role::Operator));
    assert!(h.service.check_model(&id, "llama3").is_ok());
    assert_eq!(h.service.check_model(&id, "qwen").unwrap_err().status_code(), 403);
    let again = h.service.rotate_key(&old.key.prefix(), &Actor::default(), NOW + 6).await.unwrap_err();
    assert!(matches!(again, KeyAdminError::NotFound(_)), "{again:?}");
    assert_eq!(h.audit(action::KEY_ROTATED).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn expired_unknown_and_malformed_credentials_are_401() -> anyhow::Result<()> {
    let h = Harness::new(AuthOptions::default()).await?;
    let mut nk = new_key("carol", Role::Viewer);
    nk.expires_at_ms = Some(NOW + 1_000);
    let created = h.service.create_key(nk, &Actor::default(), NOW).await?;
    let secret = created.key.expose_secret().to_owned();
    h.service.authenticate(Some(secret.as_bytes()), NOW + 999).await?;
    let expired = h.service.authenticate(Some(secret.as_bytes()), NOW + 1_000).await.unwrap_err();
    assert!(matches!(expired, AuthError::Expired), "{expired:?}");

    // Right prefix, wrong secret: indistinguishable from an unknown key.
    let last = if secret.ends_with('A') { "B" } else { "A" };
    let forged = format!("{}{last}", &secret[..secret.len() - 1]);
    let err = h.service.authenticate(Some(forged.as_bytes()), NOW).await.unwrap_err();
    assert!(matches!(err, AuthError::UnknownKey), "{err:?}");
    let unknown = gpufleet_auth::ApiKey::generate();
    let err = h.service.authenticate(Some(unknown.expose_secret().as_bytes()), NOW).await.unwrap_err();
    assert!(matches!(err, AuthError::UnknownKey), "{err:?}");
    let err = h.service.authenticate(None, NOW).await.unwrap_err();
    assert!(matches!(err, AuthError::MissingCredential), "{err:?}");
    let err = h.service.authenticate(Some(b"Bearer hunter2"), NOW).await.unwrap_err();
    assert!(matches!(err, AuthError::Malformed(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"));
    for e in [expired, err] {
        assert_eq!(e.status_code(), 401);
    }
    let past = h
        .service
        .create_key(NewKey { expires_at_ms: Some(NOW), ..new_key("dan", Role::User) }, &Actor::default(), NOW)
        .await;
    assert_eq!(past.unwrap_err().status_code(), 400);
    Ok(())
}

#[tokio::test]
async fn check_access_runs_every_check_and_audits_refusals() -> anyhow::Result<()> {
    let h = Harness::new(AuthOptions::default()).await?;
    let viewer = h.service.create_key(new_key("vic", Role::Viewer), &Actor::default(), NOW).await?;
    let cred = viewer.key.expose_secret().as_bytes();

    let ok = h.service.check_access(&request(Some(cred), Permission::FleetRead), NOW).await?;
    assert_eq!((ok.identity.owner.as_str(), ok.client_ip.to_string().as_str()), ("vic", "10.1.2.3"));
    let mutation = request(Some(cred), Permission::FleetRead);
    h.service
        .audit(ok.audit_entry(&mutation, "silence.create", "host-4", gpufleet_auth::Outcome::Success, NOW))
        .await?;

    let denied = h.service.check_access(&request(Some(cred), Permission::FleetWrite), NOW).await.unwrap_err();
    assert!(matches!(denied, AuthError::Forbidden(Permission::FleetWrite)), "{denied:?}");
    assert_eq!(denied.status_code(), 403);

    let mut outside = request(Some(cred), Permission::FleetRead);
    outside.peer = "8.8.8.8:1234".parse()?;
    let err = h.service.check_access(&outside, NOW).await.unwrap_err();
    assert!(matches!(err, AuthError::IpNotAllowed(_)), "{err:?}");

    let bad = h.service.check_access(&request(Some(b"gf_nope"), Permission::FleetRead), NOW).await.unwrap_err();
    assert_eq!(bad.status_code(), 401);

    let done = h.audit("silence.create").await?;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].entry.key_prefix, Some(viewer.key.prefix()));
    assert_eq!((done[0].entry.method.as_str(), done[0].entry.request_id.as_deref()), ("POST", Some("req-7")));
    let perm = h.audit(action::PERMISSION_DENIED).await?;
    assert_eq!(perm.len(), 1);
    assert_eq!((perm[0].entry.role, perm[0].entry.outcome), (Some(Role::Viewer), gpufleet_auth::Outcome::Denied));
    assert_eq!(h.audit(action::IP_DENIED).await?[0].entry.client_ip, Some("8.8.8.8".parse()?));
    assert_eq!(h.audit(action::AUTH_FAILED).await?.len(), 1);
    assert_eq!(h.store.audit_chain_verify().await?.first_broken, None);
    Ok(())
}

#[tokio::test]
async fn a_rate_limited_burst_is_refused_with_retry_after_and_audited_once() -> anyhow::Result<()> {
    let config = RateLimitConfig { management_per_minute: NonZeroU32::new(2).unwrap(), ..Default::default() };
    let options = AuthOptions { limiter: Arc::new(LocalRateLimiter::new(&config)), ..Default::default() };
    let h = Harness::new(options).await?;
    let user = h.service.create_key(new_key("ursula", Role::User), &Actor::default(), NOW).await?;
    let cred = user.key.expose_secret().as_bytes();
    for _ in 0..2 {
        h.service.check_access(&request(Some(cred), Permission::JobsSubmit), NOW).await?;
    }
    for i in 0..3 {
        let err = h.service.check_access(&request(Some(cred), Permission::JobsSubmit), NOW + i).await.unwrap_err();
        assert_eq!(err.status_code(), 429);
        let retry = err.retry_after().expect("a 429 carries Retry-After");
        assert!(retry.0 > Duration::ZERO && retry.header_secs() >= 1);
    }
    assert_eq!(h.audit(action::RATE_LIMITED).await?.len(), 1, "one record per burst");
    Ok(())
}

#[tokio::test]
async fn bootstrap_generates_imports_or_leaves_alone() -> anyhow::Result<()> {
    let h = Harness::new(AuthOptions::default()).await?;
    let Bootstrap::Generated(key) = h.service.bootstrap_admin(None, NOW).await? else {
        panic!("an empty store gets a generated admin key");
    };
    let id = h.service.authenticate(Some(key.expose_secret().as_bytes()), NOW).await?;
    assert_eq!(id.role, Role::Admin);
    assert!(matches!(h.service.bootstrap_admin(None, NOW).await?, Bootstrap::Existing));
    assert_eq!(h.audit(action::KEY_CREATED).await?.len(), 1);

    let fresh = Harness::new(AuthOptions::default()).await?;
    let err = fresh.service.bootstrap_admin(Some("admin123"), NOW).await.unwrap_err();
    assert!(matches!(err, KeyAdminError::InvalidImportedKey(_)), "{err:?}");
    let chosen = gpufleet_auth::ApiKey::generate();
    let imported = fresh.service.bootstrap_admin(Some(chosen.expose_secret()), NOW).await?;
    assert!(matches!(imported, Bootstrap::Imported(p) if p == chosen.prefix()), "{imported:?}");
    let id = fresh.service.authenticate(Some(chosen.expose_secret().as_bytes()), NOW).await?;
    assert_eq!(id.role, Role::Admin);
    Ok(())
}

#[tokio::test]
async fn last_use_is_written_in_batches() -> anyhow::Result<()> {
    let h = Harness::new(AuthOptions::default()).await?;
    let k = h.service.create_key(new_key("eve", Role::User), &Actor::default(), NOW).await?;
    for t in [NOW + 10, NOW + 30, NOW + 20] {
        h.service.authenticate(Some(k.key.expose_secret().as_bytes()), t).await?;
    }
    assert_eq!(h.store.get_key_by_prefix(&k.key.prefix()).await?.unwrap().last_used_ms, None);
    assert_eq!(h.service.flush_last_used().await?, 1);
    assert_eq!(h.store.get_key_by_prefix(&k.key.prefix()).await?.unwrap().last_used_ms, Some(NOW + 30));
    assert_eq!(h.service.flush_last_used().await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_cached_key_outlives_a_store_outage_but_new_keys_get_503() -> anyhow::Result<()> {
    let h = Harness::new(AuthOptions::default()).await?;
    let k = h.service.create_key(new_key("fay", Role::User), &Actor::default(), NOW).await?;
    h.service.authenticate(Some(k.key.expose_secret().as_bytes()), NOW).await?;
    h.store.close().await;
    h.service.authenticate(Some(k.key.expose_secret().as_bytes()), NOW + 60_000).await?;
    let other = gpufleet_auth::ApiKey::generate();
    let err = h.service.authenticate(Some(other.expose_secret().as_bytes()), NOW).await.unwrap_err();
    assert_eq!(err.status_code(), 503, "{err:?}");
    Ok(())
}

#[tokio::test]
async fn the_audit_writer_drains_on_shutdown() -> anyhow::Result<()> {
    let h = Harness::new(AuthOptions::default()).await?;
    h.service.create_key(new_key("gus", Role::User), &Actor::default(), NOW).await?;
    let store = h.store.clone();
    h.supervisor.shutdown(Duration::from_secs(10)).await;
    let records = store.query_audit(&gpufleet_auth::AuditFilter::default()).await?;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].entry.action, action::KEY_CREATED);
    Ok(())
}

#[tokio::test]
async fn maintenance_writes_last_use_and_applies_retention() -> anyhow::Result<()> {
    let h = Harness::new(AuthOptions::default()).await?;
    let k = h.service.create_key(new_key("hal", Role::User), &Actor::default(), NOW).await?;
    h.service.authenticate(Some(k.key.expose_secret().as_bytes()), NOW + 5).await?;
    h.service.audit_log().flush().await?;
    let upkeep =
        gpufleet_auth::AuthMaintenance::new(h.service.clone(), Duration::from_secs(10), Some(Duration::from_secs(60)));
    upkeep.run_once(NOW + 61_000).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(h.store.get_key_by_prefix(&k.key.prefix()).await?.unwrap().last_used_ms, Some(NOW + 5));
    assert!(h.store.query_audit(&gpufleet_auth::AuditFilter::default()).await?.is_empty(), "the old record is gone");
    let report = h.store.audit_chain_verify().await?;
    assert_eq!((report.checked, report.first_broken), (0, None));
    Ok(())
}

/// A connection's proven credential skips only the hash: a near miss of it, a revocation, an
/// expiry and a missing permission are refused as on the first request.
#[tokio::test]
async fn a_proven_credential_is_still_checked_for_everything_but_its_hash() -> anyhow::Result<()> {
    let h = Harness::new(AuthOptions::default()).await?;
    let mut nk = new_key("pat", Role::Viewer);
    nk.expires_at_ms = Some(NOW + 60_000);
    let created = h.service.create_key(nk, &Actor::default(), NOW).await?;
    let cred = format!("Bearer {}", created.key.expose_secret()).into_bytes();
    let mut proven = gpufleet_auth::ProvenKey::default();
    assert_eq!(format!("{proven:?}"), "ProvenKey { proven: false }");
    let ok = h.service.check_access_proven(&request(Some(&cred), Permission::FleetRead), NOW, Some(&mut proven)).await?;
    assert_eq!(ok.identity.owner.as_str(), "pat");
    assert_eq!(format!("{proven:?}"), "ProvenKey { proven: true }", "remembered, and never printed");

    // One byte off the proven credential: not taken for it.
    let mut near = cred.clone();
    *near.last_mut().unwrap() ^= 1;
    let err = h.service.check_access_proven(&request(Some(&near), Permission::FleetRead), NOW, Some(&mut proven)).await.unwrap_err();
    assert_eq!(err.status_code(), 401, "{err:?}");
    // The proven one still works, and still needs the route's permission.
    h.service.check_access_proven(&request(Some(&cred), Permission::FleetRead), NOW + 1, Some(&mut proven)).await?;
    let err = h.service.check_access_proven(&request(Some(&cred), Permission::FleetWrite), NOW + 1, Some(&mut proven)).await.unwrap_err();
    assert!(matches!(err, AuthError::Forbidden(Permission::FleetWrite)), "{err:?}");
    // Expiry and revocation apply to it at once.
    let err = h.service.check_access_proven(&request(Some(&cred), Permission::FleetRead), NOW + 60_000, Some(&mut proven)).await.unwrap_err();
    assert!(matches!(err, AuthError::Expired), "{err:?}");
    h.service.revoke_key(&created.key.prefix(), &Actor::default(), NOW + 2).await?;
    let err = h.service.check_access_proven(&request(Some(&cred), Permission::FleetRead), NOW + 3, Some(&mut proven)).await.unwrap_err();
    assert!(matches!(err, AuthError::Revoked), "{err:?}");
    Ok(())
}
