//! PostgreSQL test support: the server URL, a unique schema per test, and a guard that drops the
//! schema when the test ends (also when it panics). Included with `#[path]` by the PostgreSQL
//! test files.

#![allow(dead_code)]

use gpufleet_fleet::PostgresFleetStore;
use std::sync::atomic::{AtomicU32, Ordering};

/// `GPUFLEET_TEST_POSTGRES_URL`, else the local test server.
pub(crate) fn url() -> String {
    std::env::var("GPUFLEET_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema name no other test (in this or another process) uses.
pub(crate) fn unique_schema(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("gpufleet_test_{what}_{}_{n}_{:08x}", std::process::id(), rand::random::<u32>())
}

/// The message when the server cannot be reached.
pub(crate) fn how_to_start(url: &str, e: &dyn std::fmt::Display) -> String {
    format!(
        "cannot open PostgreSQL at {url} ({e}). Start it with \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main start` \
         (or run .ci/run), or point GPUFLEET_TEST_POSTGRES_URL at a server"
    )
}

/// Connects a fleet store on `schema`, failing with how to start the server when it is down.
pub(crate) async fn connect(schema: &str) -> PostgresFleetStore {
    let url = url();
    PostgresFleetStore::connect(&url, schema, 4).await.unwrap_or_else(|e| panic!("{}", how_to_start(&url, &e)))
}

/// Drops its schema on drop, from a thread with its own runtime (drop cannot await); the test
/// passes even when this fails, with a warning naming the schema left behind.
pub(crate) struct SchemaGuard(pub(crate) String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let schema = self.0.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url()).await?;
                // End sessions of the finished test still holding locks in this schema.
                sqlx::query(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                     JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                )
                .bind(&schema)
                .execute(&mut conn)
                .await?;
                sqlx::query("SET lock_timeout = '5s'").execute(&mut conn).await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&mut conn).await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test schema {}: {dropped:?}", self.0);
        }
    }
}
