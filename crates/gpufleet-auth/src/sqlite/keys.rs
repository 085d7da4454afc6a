//! Key queries of [`super::SqliteMetaStore`].

use super::backend;
use crate::key::{KeyHash, KeyPrefix};
use crate::metastore::StoreError;
use crate::record::{KeyRecord, Owner};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, Sqlite, Transaction};

const COLUMNS: &str = "prefix, hash, owner, role, label, created_at_ms, expires_at_ms, revoked_at_ms, \
                       last_used_ms, allowed_models";

pub(super) async fn create(pool: &SqlitePool, r: &KeyRecord) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    insert(&mut tx, r).await?;
    tx.commit().await.map_err(backend)
}

async fn insert(tx: &mut Transaction<'static, Sqlite>, r: &KeyRecord) -> Result<(), StoreError> {
    let models = match &r.allowed_models {
        Some(m) => Some(serde_json::to_string(m).map_err(|e| StoreError::Corrupt(e.to_string()))?),
        None => None,
    };
    let sql = format!("INSERT INTO api_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
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
        .execute(&mut **tx)
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(StoreError::DuplicatePrefix(r.prefix)),
        Err(e) => Err(backend(e)),
    }
}

pub(super) async fn get(pool: &SqlitePool, prefix: &KeyPrefix) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE prefix = ?");
    let row = sqlx::query(&sql).bind(prefix.as_str()).fetch_optional(pool).await.map_err(backend)?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<KeyRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at_ms, prefix");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(backend)?;
    rows.iter().map(decode).collect()
}

pub(super) async fn revoke(pool: &SqlitePool, prefix: &KeyPrefix, at_ms: i64) -> Result<bool, StoreError> {
    let res = sqlx::query("UPDATE api_keys SET revoked_at_ms = ? WHERE prefix = ? AND revoked_at_ms IS NULL")
        .bind(at_ms)
        .bind(prefix.as_str())
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(res.rows_affected() == 1)
}

pub(super) async fn rotate(pool: &SqlitePool, old: &KeyPrefix, new: &KeyRecord, at_ms: i64) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    let res = sqlx::query("UPDATE api_keys SET revoked_at_ms = ? WHERE prefix = ? AND revoked_at_ms IS NULL")
        .bind(at_ms)
        .bind(old.as_str())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    if res.rows_affected() != 1 {
        // Dropping the transaction rolls it back.
        return Err(StoreError::KeyNotFound(*old));
    }
    insert(&mut tx, new).await?;
    tx.commit().await.map_err(backend)
}

pub(super) async fn touch(pool: &SqlitePool, uses: &[(KeyPrefix, i64)]) -> Result<(), StoreError> {
    if uses.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    for (prefix, at) in uses {
        sqlx::query(
            "UPDATE api_keys SET last_used_ms = ?1 \
             WHERE prefix = ?2 AND (last_used_ms IS NULL OR last_used_ms < ?1)",
        )
        .bind(at)
        .bind(prefix.as_str())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)
}

fn decode(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
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
