//! Audit chain queries of [`super::PostgresMetaStore`].

use super::backend;
use crate::audit::{AuditEntry, AuditFilter, AuditRecord, ChainHash, ChainVerifier, Outcome, VerifyReport};
use crate::key::KeyPrefix;
use crate::metastore::StoreError;
use crate::record::Owner;
use futures::TryStreamExt;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

const COLUMNS: &str = "id, time_ms, key_prefix, owner, role, client_ip, method, route, target, action, outcome, \
                       request_id, prev_hash, hash";

/// Serializes appends and retention across every process on this schema; reads are not blocked.
const LOCK: &str = "LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE";

/// The id and hash the next record links to: the last record, else the retention anchor, else
/// genesis. Must run inside the appending transaction, after [`LOCK`].
async fn chain_head(conn: &mut PgConnection) -> Result<(i64, ChainHash), StoreError> {
    let last = sqlx::query("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    match last {
        Some(row) => id_and_hash(&row, "audit_log"),
        None => anchor(conn).await,
    }
}

async fn anchor(conn: &mut PgConnection) -> Result<(i64, ChainHash), StoreError> {
    let row = sqlx::query("SELECT last_id AS id, last_hash AS hash FROM audit_anchor WHERE singleton = 1")
        .fetch_optional(conn)
        .await
        .map_err(backend)?;
    match row {
        Some(row) => id_and_hash(&row, "audit_anchor"),
        None => Ok((0, ChainHash::GENESIS)),
    }
}

fn id_and_hash(row: &PgRow, table: &str) -> Result<(i64, ChainHash), StoreError> {
    let id: i64 = row.try_get("id").map_err(|e| StoreError::Corrupt(format!("{table}: {e}")))?;
    let hash: Vec<u8> = row.try_get("hash").map_err(|e| StoreError::Corrupt(format!("{table}: {e}")))?;
    let hash =
        ChainHash::from_slice(&hash).ok_or_else(|| StoreError::Corrupt(format!("{table}: hash not 32 bytes")))?;
    Ok((id, hash))
}

/// Rows per INSERT statement: 14 bound values each, well under PostgreSQL's 65535-parameter limit.
const ROWS_PER_INSERT: usize = 1000;

pub(super) async fn append(pool: &PgPool, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>, StoreError> {
    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query(LOCK).execute(&mut *tx).await.map_err(backend)?;
    let (mut id, mut prev) = chain_head(&mut tx).await?;
    let records: Vec<AuditRecord> = entries
        .iter()
        .map(|entry| {
            id += 1;
            let r = AuditRecord::chain(id, entry.clone(), prev);
            prev = r.hash;
            r
        })
        .collect();
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let mut qb = QueryBuilder::<Postgres>::new(format!("INSERT INTO audit_log ({COLUMNS}) "));
        qb.push_values(chunk, |mut b, r| {
            let e = &r.entry;
            b.push_bind(r.id)
                .push_bind(e.time_ms)
                .push_bind(e.key_prefix.as_ref().map(KeyPrefix::as_str))
                .push_bind(e.owner.as_ref().map(Owner::as_str))
                .push_bind(e.role.map(|r| r.as_str()))
                .push_bind(e.client_ip.map(|ip| ip.to_string()))
                .push_bind(e.method.as_str())
                .push_bind(e.route.as_str())
                .push_bind(e.target.as_str())
                .push_bind(e.action.as_str())
                .push_bind(e.outcome.as_str())
                .push_bind(e.request_id.as_deref())
                .push_bind(&r.prev_hash.0[..])
                .push_bind(&r.hash.0[..]);
        });
        // Not prepared: the statement text changes with the chunk size.
        qb.build().persistent(false).execute(&mut *tx).await.map_err(backend)?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(records)
}

pub(super) async fn query(pool: &PgPool, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
    let mut qb = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM audit_log WHERE TRUE"));
    if let Some(since) = f.since_ms {
        qb.push(" AND time_ms >= ").push_bind(since);
    }
    if let Some(actor) = &f.actor {
        qb.push(" AND (key_prefix = ").push_bind(actor.clone()).push(" OR owner = ").push_bind(actor.clone()).push(")");
    }
    if let Some(action) = &f.action {
        qb.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(before) = f.before_id {
        qb.push(" AND id < ").push_bind(before);
    }
    qb.push(" ORDER BY id DESC LIMIT ").push_bind(f.effective_limit() as i64);
    let rows = qb.build().fetch_all(pool).await.map_err(backend)?;
    rows.iter().map(|r| decode(r).map_err(StoreError::Corrupt)).collect()
}

pub(super) async fn verify(pool: &PgPool) -> Result<VerifyReport, StoreError> {
    // One snapshot for the anchor and the rows: a retention committing meanwhile is not seen
    // half-applied.
    let mut tx = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(backend)?;
    let (anchor_id, anchor_hash) = anchor(&mut tx).await?;
    let mut verifier = ChainVerifier::new(anchor_id, anchor_hash);
    let sql = format!("SELECT {COLUMNS} FROM audit_log ORDER BY id");
    let mut broken = None;
    let mut rows = sqlx::query(&sql).fetch(&mut *tx);
    while let Some(row) = rows.try_next().await.map_err(backend)? {
        broken = match decode(&row) {
            Ok(record) => verifier.check(&record).err(),
            Err(detail) => Some(verifier.unreadable(row.try_get("id").unwrap_or(-1), detail)),
        };
        if broken.is_some() {
            break;
        }
    }
    drop(rows);
    // Ends the snapshot now, not when the pool gets the connection back.
    tx.commit().await.map_err(backend)?;
    Ok(verifier.report(broken))
}

pub(super) async fn retain(pool: &PgPool, older_than_ms: i64) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query(LOCK).execute(&mut *tx).await.map_err(backend)?;
    // The first record to keep; everything before it goes (a prefix of the chain).
    let keep_from: Option<i64> = sqlx::query_scalar("SELECT min(id) FROM audit_log WHERE time_ms >= $1")
        .bind(older_than_ms)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
    let last_removed = match keep_from {
        Some(keep) => sqlx::query("SELECT id, hash FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT 1").bind(keep),
        None => sqlx::query("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1"),
    }
    .fetch_optional(&mut *tx)
    .await
    .map_err(backend)?;
    let Some(row) = last_removed else {
        // Nothing to remove: release the table lock now.
        tx.rollback().await.map_err(backend)?;
        return Ok(0);
    };
    let (last_id, last_hash) = id_and_hash(&row, "audit_log")?;
    // The append-only trigger lets DELETE through only in a transaction marked like this.
    sqlx::query("SELECT set_config('gpufleet.audit_retention', 'on', true)")
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    let removed = sqlx::query("DELETE FROM audit_log WHERE id <= $1")
        .bind(last_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
    sqlx::query(
        "INSERT INTO audit_anchor (singleton, last_id, last_hash) VALUES (1, $1, $2) \
         ON CONFLICT (singleton) DO UPDATE SET last_id = EXCLUDED.last_id, last_hash = EXCLUDED.last_hash",
    )
    .bind(last_id)
    .bind(&last_hash.0[..])
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    tx.commit().await.map_err(backend)?;
    Ok(removed)
}

fn decode(row: &PgRow) -> Result<AuditRecord, String> {
    fn get<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(row: &'r PgRow, c: &str) -> Result<T, String> {
        row.try_get(c).map_err(|e| format!("audit_log.{c}: {e}"))
    }
    let bad = |c: &str, e: &dyn std::fmt::Display| format!("audit_log.{c}: {e}");
    let key_prefix = match get::<Option<String>>(row, "key_prefix")? {
        Some(p) => Some(KeyPrefix::parse(&p).map_err(|e| bad("key_prefix", &e))?),
        None => None,
    };
    let owner = match get::<Option<String>>(row, "owner")? {
        Some(o) => Some(Owner::new(&o).map_err(|e| bad("owner", &e))?),
        None => None,
    };
    let role = match get::<Option<String>>(row, "role")? {
        Some(r) => Some(r.parse().map_err(|e| bad("role", &e))?),
        None => None,
    };
    let client_ip = match get::<Option<String>>(row, "client_ip")? {
        Some(ip) => Some(ip.parse().map_err(|e| bad("client_ip", &e))?),
        None => None,
    };
    let outcome: String = get(row, "outcome")?;
    let outcome = Outcome::parse(&outcome).ok_or_else(|| bad("outcome", &outcome))?;
    let hash = |c: &str| -> Result<ChainHash, String> {
        ChainHash::from_slice(&get::<Vec<u8>>(row, c)?).ok_or_else(|| bad(c, &"not 32 bytes"))
    };
    Ok(AuditRecord {
        id: get(row, "id")?,
        entry: AuditEntry {
            time_ms: get(row, "time_ms")?,
            key_prefix,
            owner,
            role,
            client_ip,
            method: get(row, "method")?,
            route: get(row, "route")?,
            target: get(row, "target")?,
            action: get(row, "action")?,
            outcome,
            request_id: get(row, "request_id")?,
        },
        prev_hash: hash("prev_hash")?,
        hash: hash("hash")?,
    })
}
