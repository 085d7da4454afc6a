//! API keys: create (the key is shown once), list, revoke, rotate.

use super::guarded;
use crate::auth::RequestId;
use crate::error::ApiError;
use crate::params::Params;
use crate::state::{now_ms, AppState};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use gpufleet_auth::{Access, Actor, AuthService, CreatedKey, KeyAdminError, KeyPrefix, KeyRecord, NewKey, Owner, Role};
use gpufleet_core::time::{format_rfc3339, parse_duration_ms, parse_timestamp};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) fn router() -> Router<AppState> {
    let r = Router::new();
    let r = guarded(r, "POST", "/api/v1/keys", post(create));
    let r = guarded(r, "GET", "/api/v1/keys", get(list));
    let r = guarded(r, "DELETE", "/api/v1/keys/{prefix}", delete(revoke));
    guarded(r, "POST", "/api/v1/keys/{prefix}/rotate", post(rotate))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    owner: String,
    role: String,
    label: Option<String>,
    /// A duration from now, e.g. `30d`.
    expires_in: Option<String>,
    /// An RFC 3339 instant.
    expires_at: Option<String>,
    allowed_models: Option<Vec<String>>,
}

fn service(st: &AppState) -> Result<Arc<AuthService>, ApiError> {
    st.auth.clone().ok_or_else(|| ApiError::BadRequest("authentication is disabled on this server, so there are no keys to manage".into()))
}

fn actor(access: Option<Extension<Access>>, rid: Option<Extension<RequestId>>) -> Actor {
    match access {
        Some(Extension(a)) => Actor::from_access(&a, rid.as_ref().map(|r| r.0 .0.as_str())),
        None => Actor::default(),
    }
}

fn admin_error(e: KeyAdminError) -> ApiError {
    match e.status_code() {
        400 => ApiError::BadRequest(e.to_string()),
        404 => ApiError::NotFound(e.to_string()),
        409 => ApiError::BadRequest(format!("{e}; retry")),
        503 => ApiError::Unavailable(e.to_string()),
        _ => ApiError::Internal(e.to_string()),
    }
}

/// A key as listed: never the hash.
pub(crate) fn record_json(r: &KeyRecord) -> Value {
    json!({
        "prefix": r.prefix.as_str(),
        "owner": r.owner,
        "role": r.role.as_str(),
        "label": r.label,
        "created_at": format_rfc3339(r.created_at_ms),
        "expires_at": r.expires_at_ms.map(format_rfc3339),
        "revoked_at": r.revoked_at_ms.map(format_rfc3339),
        "last_used": r.last_used_ms.map(format_rfc3339),
        "allowed_models": r.allowed_models,
    })
}

fn created_json(c: &CreatedKey) -> Value {
    let mut v = record_json(&c.record);
    v["key"] = Value::String(c.key.expose_secret().to_owned());
    v["note"] = Value::String("store this key now: it is shown once and only its hash is kept".into());
    v
}

fn parse_prefix(s: &str) -> Result<KeyPrefix, ApiError> {
    KeyPrefix::parse(s).map_err(|e| ApiError::BadRequest(format!("path: {s:?} is not a key prefix ({e}); GET /api/v1/keys lists prefixes")))
}

async fn create(
    State(st): State<AppState>,
    access: Option<Extension<Access>>,
    rid: Option<Extension<RequestId>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let auth = service(&st)?;
    let b: CreateBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("body: {e}; send {{\"owner\": \"alice\", \"role\": \"user\", \"expires_in\": \"30d\", \"allowed_models\": [\"qwen3-8b\"]}}"))
    })?;
    let owner = Owner::new(&b.owner).map_err(|e| ApiError::BadRequest(format!("owner: {e}")))?;
    let role: Role = b.role.parse().map_err(|_| ApiError::BadRequest(format!("role: {:?} is not one of admin, operator, user, viewer", b.role)))?;
    let now = now_ms();
    let expires_at_ms = match (b.expires_in.as_deref(), b.expires_at.as_deref()) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("give expires_in or expires_at, not both".into())),
        (Some(d), None) => Some(now + parse_duration_ms(d).map_err(|why| ApiError::BadRequest(format!("expires_in: {why} (e.g. 12h, 30d)")))?),
        (None, Some(t)) => Some(parse_timestamp(t.as_bytes()).map_err(|e| ApiError::BadRequest(format!("expires_at: {e}")))?),
        (None, None) => None,
    };
    let new = NewKey { owner, role, label: b.label, expires_at_ms, allowed_models: b.allowed_models };
    let created = auth.create_key(new, &actor(access, rid), now).await.map_err(admin_error)?;
    Ok((StatusCode::CREATED, Json(created_json(&created))))
}

async fn list(State(st): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let keys = service(&st)?.list_keys().await.map_err(admin_error)?;
    let list: Vec<Value> = keys.iter().map(record_json).collect();
    Ok(Json(json!({ "count": list.len(), "keys": list })))
}

async fn revoke(
    State(st): State<AppState>,
    Path(prefix): Path<String>,
    access: Option<Extension<Access>>,
    rid: Option<Extension<RequestId>>,
) -> Result<Json<Value>, ApiError> {
    let prefix = parse_prefix(&prefix)?;
    let newly = service(&st)?.revoke_key(&prefix, &actor(access, rid), now_ms()).await.map_err(admin_error)?;
    Ok(Json(json!({ "prefix": prefix.as_str(), "revoked": true, "already_revoked": !newly })))
}

async fn rotate(
    State(st): State<AppState>,
    Path(prefix): Path<String>,
    access: Option<Extension<Access>>,
    rid: Option<Extension<RequestId>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let prefix = parse_prefix(&prefix)?;
    let created = service(&st)?.rotate_key(&prefix, &actor(access, rid), now_ms()).await.map_err(admin_error)?;
    Ok((StatusCode::CREATED, Json(created_json(&created))))
}
