//! The [`JobStore`] conformance suite. Every implementation runs it through
//! [`jobstore_test_suite!`](crate::jobstore_test_suite):
//!
//! ```ignore
//! async fn make() -> gpufleet_gateway::jobs::testsuite::TestJobStore { /* a fresh, empty store */ }
//! gpufleet_gateway::jobstore_test_suite!(make);
//! ```
//!
//! Reopening (records survive closing the store) is backend-specific and lives in each backend's
//! test file, using [`job`] to build records.
//!
//! Test-support code: cases fail by panicking with a message naming the broken contract.

use super::store::{JobRecord, JobStatus, JobStore};
use super::JobId;
use crate::proxy::Endpoint;
use crate::queue::Priority;
use std::{any::Any, sync::Arc};

/// A fresh store plus whatever must live as long as it (a temp dir, a schema guard).
pub struct TestJobStore {
    /// The store under test.
    pub store: Arc<dyn JobStore>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl TestJobStore {
    /// Wraps a store and its guard.
    pub fn new(store: Arc<dyn JobStore>, guard: impl Any + Send + Sync) -> Self {
        Self {
            store,
            _guard: Box::new(guard),
        }
    }
}

/// A job record with a fresh id and every field set.
pub fn job(status: JobStatus, expires_ms: Option<i64>) -> JobRecord {
    JobRecord {
        id: JobId::generate(),
        status,
        model: "m".into(),
        endpoint: Endpoint::Chat,
        priority: Priority::High,
        created_ms: 1,
        updated_ms: 2,
        attempts: 1,
        result: Some("{\"ok\":true}".into()),
        error: None,
        expires_ms,
    }
}

/// A record comes back with every field; an unknown id is `None`.
pub async fn records_round_trip(s: Arc<dyn JobStore>) {
    let mut a = job(JobStatus::Queued, None);
    a.model = "qwen3-8b ünïcode".into();
    a.endpoint = Endpoint::Embeddings;
    a.priority = Priority::Low;
    a.result = None;
    a.error = Some("backend said 503".into());
    a.attempts = u32::MAX;
    let b = job(JobStatus::Completed, Some(i64::MAX));
    s.upsert(&a).await.expect("upsert a");
    s.upsert(&b).await.expect("upsert b");
    assert_eq!(s.get(&a.id, 0).await.expect("get a"), Some(a));
    assert_eq!(s.get(&b.id, 0).await.expect("get b"), Some(b));
    let missing = JobId::generate();
    assert_eq!(s.get(&missing, 0).await.expect("get missing"), None);
}

/// Upserting an existing id replaces every field.
pub async fn upsert_replaces_the_record(s: Arc<dyn JobStore>) {
    let queued = job(JobStatus::Queued, None);
    s.upsert(&queued).await.expect("upsert queued");
    let done = JobRecord {
        status: JobStatus::Failed,
        updated_ms: 50,
        attempts: 3,
        result: None,
        error: Some("dead-lettered".into()),
        expires_ms: Some(10_000),
        ..queued.clone()
    };
    s.upsert(&done).await.expect("upsert failed");
    assert_eq!(s.get(&queued.id, 100).await.expect("get"), Some(done));
}

/// A record is hidden from its expiry on and deleted by `expire`; unexpiring ones stay.
pub async fn expired_records_are_hidden_then_swept(s: Arc<dyn JobStore>) {
    let keep = job(JobStatus::Queued, None);
    let old = job(JobStatus::Completed, Some(1_000));
    let later = job(JobStatus::Completed, Some(3_000));
    for r in [&keep, &old, &later] {
        s.upsert(r).await.expect("upsert");
    }
    assert_eq!(s.get(&old.id, 500).await.expect("get").as_ref(), Some(&old));
    assert_eq!(
        s.get(&old.id, 1_000).await.expect("get"),
        None,
        "expired records are not returned"
    );
    assert_eq!(
        s.expire(2_000).await.expect("expire"),
        1,
        "only `old` ends by 2000"
    );
    assert_eq!(s.expire(2_000).await.expect("expire again"), 0);
    assert_eq!(s.get(&later.id, 2_000).await.expect("get"), Some(later));
    assert_eq!(s.get(&keep.id, i64::MAX).await.expect("get"), Some(keep));
}

/// A dead letter is handled once; the handled ones are listed.
pub async fn dead_letters_are_resolved_once(s: Arc<dyn JobStore>) {
    assert!(s.resolved_dead_letters().await.expect("list").is_empty());
    assert!(s
        .resolve_dead_letter("7", "discarded", 1)
        .await
        .expect("resolve"));
    assert!(
        !s.resolve_dead_letter("7", "retried", 2)
            .await
            .expect("resolve again"),
        "a dead letter is handled once"
    );
    assert!(s
        .resolve_dead_letter("8-0", "retried", 3)
        .await
        .expect("resolve"));
    let mut ids = s.resolved_dead_letters().await.expect("list");
    ids.sort();
    assert_eq!(ids, vec!["7".to_owned(), "8-0".to_owned()]);
}

/// Concurrent resolutions of the same dead letter: exactly one wins.
pub async fn concurrent_resolutions_have_one_winner(s: Arc<dyn JobStore>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.resolve_dead_letter("42", "retried", i)
                    .await
                    .expect("resolve")
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.expect("resolve task"));
    }
    assert_eq!(winners, 1, "exactly one resolution must win");
}

/// Generates one `#[tokio::test]` per conformance case. `$make` is an
/// `async fn() -> TestJobStore` returning a fresh, empty store.
#[macro_export]
macro_rules! jobstore_test_suite {
    ($make:path) => {
        $crate::jobstore_test_suite!(@case $make, records_round_trip);
        $crate::jobstore_test_suite!(@case $make, upsert_replaces_the_record);
        $crate::jobstore_test_suite!(@case $make, expired_records_are_hidden_then_swept);
        $crate::jobstore_test_suite!(@case $make, dead_letters_are_resolved_once);

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_resolutions_have_one_winner() {
            let t = $make().await;
            $crate::jobs::testsuite::concurrent_resolutions_have_one_winner(t.store.clone()).await;
        }
    };
    (@case $make:path, $case:ident) => {
        #[tokio::test]
        async fn $case() {
            let t = $make().await;
            $crate::jobs::testsuite::$case(t.store.clone()).await;
        }
    };
}
