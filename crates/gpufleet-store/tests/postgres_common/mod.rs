//! Shared by the PostgreSQL store tests: the server URL, unique schemas that are dropped when
//! their guard goes away (also when a test panics), and the conformance factory.
//! The tests need a running server; they fail (never skip) with how to start one.

#![allow(dead_code, unreachable_pub)]

use gpufleet_store::{testsuite::StoreFactory, MetricStore, PgStoreConfig, PostgresStore};
use parking_lot::Mutex;
use sqlx::{Connection, Executor, PgConnection};
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

/// The test server (`GPUFLEET_TEST_POSTGRES_URL`, default the local trust-auth server).
pub fn url() -> String {
    std::env::var("GPUFLEET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema name no other test (or test process) uses.
pub fn unique_schema(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "gft_{tag}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn how_to_start(e: &dyn std::fmt::Display) -> String {
    format!(
        "PostgreSQL is not reachable at {} ({e}). Start it with \
         `pg_ctlcluster $(ls /etc/postgresql | head -1) main start` (as .ci/run does), or point \
         GPUFLEET_TEST_POSTGRES_URL at a server where this user may create schemas.",
        url()
    )
}

/// Schemas to drop when this guard is dropped.
#[derive(Default)]
pub struct Schemas(Mutex<Vec<String>>);

impl Schemas {
    /// A fresh schema name, remembered for the drop.
    pub fn fresh(&self, tag: &str) -> String {
        let s = unique_schema(tag);
        self.0.lock().push(s.clone());
        s
    }

    /// A store in a fresh schema with the default configuration.
    pub async fn store(&self, tag: &str) -> PostgresStore {
        connect(self.config(tag)).await
    }

    /// The default configuration for a fresh schema.
    pub fn config(&self, tag: &str) -> PgStoreConfig {
        let mut cfg = PgStoreConfig::new(url());
        cfg.schema = self.fresh(tag);
        cfg.max_connections = 4;
        cfg
    }
}

/// Connects, failing the test with how to start the server when it is down.
pub async fn connect(cfg: PgStoreConfig) -> PostgresStore {
    match PostgresStore::connect(cfg).await {
        Ok(s) => s,
        Err(e) if e.is_retryable() => panic!("{}", how_to_start(&e)),
        Err(e) => panic!("connect: {e}"),
    }
}

/// A plain connection for checks the store does not expose.
pub async fn raw_conn() -> PgConnection {
    PgConnection::connect(&url())
        .await
        .unwrap_or_else(|e| panic!("{}", how_to_start(&e)))
}

impl Drop for Schemas {
    /// Drops the schemas from a thread of its own (Drop cannot await; the test's runtime may be
    /// the one running this).
    fn drop(&mut self) {
        let schemas = std::mem::take(&mut *self.0.lock());
        if schemas.is_empty() {
            return;
        }
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let Ok(mut c) = PgConnection::connect(&url()).await else {
                    return;
                };
                for s in schemas {
                    let sql = format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE");
                    if let Err(e) = c.execute(sql.as_str()).await {
                        eprintln!("could not drop test schema {s}: {e}");
                    }
                }
            });
        })
        .join();
        if joined.is_err() {
            eprintln!("dropping test schemas panicked");
        }
    }
}

/// Builds each conformance store in a fresh schema, all dropped with the factory.
#[derive(Default)]
pub struct PgFactory(Schemas);

#[async_trait::async_trait]
impl StoreFactory for PgFactory {
    async fn build(&self) -> Arc<dyn MetricStore> {
        Arc::new(self.0.store("conf").await)
    }
}
