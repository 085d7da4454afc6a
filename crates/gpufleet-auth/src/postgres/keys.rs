//! Key queries of [`super::PostgresMetaStore`].

use super::backend;
use crate::key::{KeyHash, KeyPrefix};
use crate::metastore::StoreError;
use crate::record::{KeyRecord, Owner};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;

const COLUMNS: &str = "prefix, hash, owner, role, label, created_at_ms, expires_at_ms, revoked_at_ms, \
                       last_used_ms, allowed_models";

pub(super) async fn create(pool: &PgPool, r: &KeyRecord) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(backend)?;
    insert(&mut conn, r).await
}

async fn insert(conn: &mut PgConnection, r: &KeyRecord) -> Result<(), StoreError> {
    let models = match &r.allowed_models {
        Some(m) => Some(serde_json::to_string(m).map_err(|e| StoreError::Corrupt(e.to_string()))?),
        None => None,
    };
    let sql = format!("INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
    let res = sqlx::query(&sql)
        .bind(r.prefix.as_str())
        .bind(&r.hash.as_bytes()[..])
        .bind(r.owner.as_str())
        .bind(r.role.as_str())
        .bind(r.label.as_deref())
        .bind(r.created_at_ms)
        .bind(r.expires_at_ms)
        .bind(r.revoked_at_ms)
        .bind(r.last_used_ms)
        .bind(models)
        .execute(conn)
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(StoreError::DuplicatePrefix(r.prefix)),
        Err(e) => Err(backend(e)),
    }
}

pub(super) async fn get(pool: &PgPool, prefix: &KeyPrefix) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE prefix = $1");
    let row = sqlx::query(&sql).bind(prefix.as_str()).fetch_optional(pool).await.map_err(backend)?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn list(pool: &PgPool) -> Result<Vec<KeyRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at_ms, prefix");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(backend)?;
    rows.iter().map(decode).collect()
}

const REVOKE: &str = "UPDATE api_keys SET revoked_at_ms = $1 WHERE prefix = $2 AND revoked_at_ms IS NULL";

pub(super) async fn revoke(pool: &PgPool, prefix: &KeyPrefix, at_ms: i64) -> Result<bool, StoreError> {
    let res = sqlx::query(REVOKE).bind(at_ms).bind(prefix.as_str()).execute(pool).await.map_err(backend)?;
    Ok(res.rows_affected() == 1)
}

pub(super) async fn rotate(pool: &PgPool, old: &KeyPrefix, new: &KeyRecord, at_ms: i64) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(backend)?;
    let res = sqlx::query(REVOKE).bind(at_ms).bind(old.as_str()).execute(&mut *tx).await.map_err(backend)?;
    if res.rows_affected() != 1 {
        tx.rollback().await.map_err(backend)?;
        return Err(StoreError::KeyNotFound(*old));
    }
    insert(&mut tx, new).await?;
    tx.commit().await.map_err(backend)
}

pub(super) async fn touch(pool: &PgPool, uses: &[(KeyPrefix, i64)]) -> Result<(), StoreError> {
    // The latest use per key, in prefix order: one row per key in the UPDATE, and concurrent
    // batches lock their rows in the same order (no deadlock between replicas).
    let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
    for (prefix, at) in uses {
        let t = latest.entry(prefix.as_str()).or_insert(*at);
        *t = (*t).max(*at);
    }
    if latest.is_empty() {
        return Ok(());
    }
    let prefixes: Vec<&str> = latest.keys().copied().collect();
    let times: Vec<i64> = latest.values().copied().collect();
    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query("SELECT 1 FROM api_keys WHERE prefix = ANY($1) ORDER BY prefix FOR UPDATE")
        .bind(&prefixes)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    sqlx::query(
        "UPDATE api_keys AS k SET last_used_ms = u.at \
         FROM unnest($1::text[], $2::bigint[]) AS u(prefix, at) \
         WHERE k.prefix = u.prefix AND (k.last_used_ms IS NULL OR k.last_used_ms < u.at)",
    )
    .bind(&prefixes)
    .bind(&times)
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    tx.commit().await.map_err(backend)
}

fn decode(row: &PgRow) -> Result<KeyRecord, StoreError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("api_keys.{what}: {e}"));
    let get_str = |c: &str| row.try_get::<String, _>(c).map_err(|e| corrupt(c, &e));
    let get_opt_i64 = |c: &str| row.try_get::<Option<i64>, _>(c).map_err(|e| corrupt(c, &e));
    let prefix = KeyPrefix::parse(&get_str("prefix")?).map_err(|e| corrupt("prefix", &e))?;
    let hash_bytes: Vec<u8> = row.try_get("hash").map_err(|e| corrupt("hash", &e))?;
    let hash = KeyHash::from_slice(&hash_bytes).ok_or_else(|| corrupt("hash", &"not 32 bytes"))?;
    let owner = Owner::new(&get_str("owner")?).map_err(|e| corrupt("owner", &e))?;
    let role = get_str("role")?.parse().map_err(|e| corrupt("role", &e))?;
    let models: Option<String> = row.try_get("allowed_models").map_err(|e| corrupt("allowed_models", &e))?;
    let allowed_models = match models {
        Some(m) => Some(serde_json::from_str(&m).map_err(|e| corrupt("allowed_models", &e))?),
        None => None,
    };
    Ok(KeyRecord {
        prefix,
        hash,
        owner,
        role,
        label: row.try_get("label").map_err(|e| corrupt("label", &e))?,
        created_at_ms: row.try_get("created_at_ms").map_err(|e| corrupt("created_at_ms", &e))?,
        expires_at_ms: get_opt_i64("expires_at_ms")?,
        revoked_at_ms: get_opt_i64("revoked_at_ms")?,
        last_used_ms: get_opt_i64("last_used_ms")?,
        allowed_models,
    })
}
