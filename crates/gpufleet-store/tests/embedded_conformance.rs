//! The conformance suite run against the embedded store.

use gpufleet_store::{testsuite::StoreFactory, EmbeddedStore, MetricStore, StoreConfig};
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

/// Builds stores in numbered directories under one temporary directory.
struct Embedded {
    dir: tempfile::TempDir,
    n: AtomicUsize,
}

impl Embedded {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            n: AtomicUsize::new(0),
        }
    }
}

#[async_trait::async_trait]
impl StoreFactory for Embedded {
    async fn build(&self) -> Arc<dyn MetricStore> {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let cfg = StoreConfig::new(self.dir.path().join(n.to_string()));
        Arc::new(EmbeddedStore::open(cfg).expect("open"))
    }
}

gpufleet_store::store_test_suite!(Embedded::new());
