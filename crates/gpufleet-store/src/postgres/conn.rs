//! Connecting: URL parsing and redaction, schema creation, migrations, the pool (search path,
//! staging table per connection), and the mapping of sqlx errors to [`StoreError`].

use super::PgStoreConfig;
use crate::StoreError;
use sqlx::{
    migrate::{MigrateError, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
    Connection, Executor, PgConnection, PgPool,
};
use std::{str::FromStr, time::Duration};

/// The versioned migrations of `migrations/postgres`.
static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// How long a call waits for a free pooled connection (or a new one) before failing retryably.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The per-connection staging table that `COPY` fills; emptied by every commit.
const CREATE_STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS gpufleet_staging \
     (seq int4 NOT NULL, series_id int4 NOT NULL, ts int8 NOT NULL, value float8 NOT NULL) \
     ON COMMIT DELETE ROWS";

/// `url` without its password (and without query parameters, which may hold one), for
/// messages and logs.
pub(crate) fn redact(url: &str) -> String {
    match PgConnectOptions::from_str(url) {
        Ok(o) => format!(
            "postgres://{}@{}:{}/{}",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        ),
        Err(_) => "<unparseable postgres url>".into(),
    }
}

/// A validated schema name double-quoted for SQL.
pub(crate) fn ident(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// Schema names are restricted so they need no escaping anywhere (SQL, `search_path` option).
fn check_schema(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidQuery(format!(
            "postgres schema name {schema:?} must be 1-63 lowercase ASCII letters, digits or '_', \
             not starting with a digit"
        )))
    }
}

/// SQLSTATE of a database error.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// An insert found no partition for a row (SQLSTATE 23514 from partition routing).
pub(crate) fn is_missing_partition(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().as_deref() == Some("23514") && d.message().contains("no partition")
        }
        _ => false,
    }
}

/// A deadlock or serialization failure: the transaction may simply be run again.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    matches!(sqlstate(e).as_deref(), Some("40001" | "40P01"))
}

/// Maps a sqlx error: undecodable rows are corrupt data, everything else is the server
/// failing (retryable).
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(format!("postgres: {e}")),
        sqlx::Error::PoolClosed => StoreError::Unavailable("postgres store is closed".into()),
        e => StoreError::Unavailable(format!("postgres: {e}")),
    }
}

fn migrate_err(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Execute(e) => db_err(e),
        e => StoreError::Corrupt(format!("postgres schema migrations: {e}")),
    }
}

/// Connects, creates the schema, migrates, and builds the pool.
pub(crate) async fn open(cfg: &PgStoreConfig) -> Result<PgPool, StoreError> {
    check_schema(&cfg.schema)?;
    let redacted = redact(&cfg.url);
    let opts = PgConnectOptions::from_str(&cfg.url)
        .map_err(|_| StoreError::InvalidQuery(format!("invalid postgres url {redacted}")))?
        .application_name("gpufleet-store")
        // JIT compiling the write statement costs more than it saves; `write` promises
        // durability whatever the server's default for synchronous_commit.
        .options([
            ("search_path", cfg.schema.as_str()),
            ("jit", "off"),
            ("synchronous_commit", "on"),
        ]);
    let unreachable =
        |e: sqlx::Error| StoreError::Unavailable(format!("cannot connect to {redacted}: {e}"));

    // Schema and migrations on one connection that is closed afterwards, so an advisory lock
    // left behind by a failed migration dies with it.
    let mut conn = PgConnection::connect_with(&opts)
        .await
        .map_err(unreachable)?;
    let create = format!("CREATE SCHEMA IF NOT EXISTS {}", ident(&cfg.schema));
    if let Err(e) = conn.execute(create.as_str()).await {
        // Two processes creating the schema at once: the loser sees a duplicate.
        if !matches!(sqlstate(&e).as_deref(), Some("42P06" | "23505")) {
            return Err(db_err(e));
        }
    }
    MIGRATOR.run_direct(&mut conn).await.map_err(migrate_err)?;
    conn.close().await.map_err(db_err)?;

    PgPoolOptions::new()
        .max_connections(cfg.max_connections.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute(CREATE_STAGING).await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await
        .map_err(unreachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_the_password_and_parameters() {
        let r =
            redact("postgres://alice:s3cret@db.example:6543/metrics?password=x&sslmode=disable");
        assert_eq!(r, "postgres://alice@db.example:6543/metrics");
        assert!(!redact("postgres://a:s3cret@h/d").contains("s3cret"));
        assert_eq!(redact("not a url"), "<unparseable postgres url>");
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema("gpufleet_metrics").is_ok());
        assert!(check_schema("_t1").is_ok());
        for bad in [
            "",
            "1abc",
            "Upper",
            "a-b",
            "a\"b",
            "a;drop",
            &"x".repeat(64),
        ] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }
}
