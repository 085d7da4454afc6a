//! The [`MetaStore`] conformance suite. Every implementation runs it through
//! [`metastore_test_suite!`](crate::metastore_test_suite):
//!
//! ```ignore
//! async fn make() -> gpufleet_auth::testsuite::TestStore { /* a fresh, empty store */ }
//! gpufleet_auth::metastore_test_suite!(make);
//! ```
//!
//! Test-support code: cases fail by panicking with a message naming the broken contract.

use crate::audit::{AuditEntry, AuditFilter, Outcome};
use crate::key::{ApiKey, KeyPrefix};
use crate::metastore::{MetaStore, StoreError};
use crate::record::{KeyRecord, Owner};
use crate::role::Role;
use std::{any::Any, sync::Arc};

/// A fresh store plus whatever must live as long as it (a temp dir, a container handle).
pub struct TestStore {
    /// The store under test.
    pub store: Arc<dyn MetaStore>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl TestStore {
    /// Wraps a store and its guard.
    pub fn new(store: Arc<dyn MetaStore>, guard: impl Any + Send + Sync) -> Self {
        Self { store, _guard: Box::new(guard) }
    }
}

/// A key record with a fresh key for `owner`.
pub fn key_record(owner: &str, role: Role, now_ms: i64) -> KeyRecord {
    let k = ApiKey::generate();
    KeyRecord::new(k.prefix(), k.hash(), Owner::new(owner).expect("valid owner"), role, now_ms)
}

fn entry(time_ms: i64, action: &str, owner: &str) -> AuditEntry {
    let mut e = AuditEntry::new(time_ms, action, Outcome::Success);
    e.owner = Some(Owner::new(owner).expect("valid owner"));
    e.key_prefix = Some(KeyPrefix::parse("abcd1234").expect("valid prefix"));
    e.role = Some(Role::Operator);
    e.client_ip = Some([192, 168, 1, 7].into());
    e.method = "POST".into();
    e.route = "/api/v1/jobs/{id}/cancel".into();
    e.target = format!("job-{time_ms}");
    e.request_id = Some(format!("req-{time_ms}"));
    e
}

/// Keys come back as stored, listed oldest first, with every field.
pub async fn keys_round_trip(s: &dyn MetaStore) {
    let mut a = key_record("alice", Role::User, 10);
    a.label = Some("laptop".into());
    a.expires_at_ms = Some(1_000);
    a.allowed_models = Some(vec!["llama3".into(), "qwen2".into()]);
    let b = key_record("bob", Role::Viewer, 20);
    s.create_key(&a).await.expect("create a");
    s.create_key(&b).await.expect("create b");
    assert_eq!(s.get_key_by_prefix(&a.prefix).await.expect("get"), Some(a.clone()));
    assert_eq!(s.list_keys().await.expect("list"), vec![a, b]);
    let missing = KeyPrefix::parse("zzzzzzzz").expect("prefix");
    assert_eq!(s.get_key_by_prefix(&missing).await.expect("get missing"), None);
}

/// A second key with the same prefix is refused.
pub async fn duplicate_prefix_is_refused(s: &dyn MetaStore) {
    let a = key_record("alice", Role::User, 10);
    s.create_key(&a).await.expect("create");
    let mut dup = key_record("mallory", Role::Admin, 11);
    dup.prefix = a.prefix;
    let err = s.create_key(&dup).await.expect_err("duplicate prefix must be refused");
    assert!(matches!(err, StoreError::DuplicatePrefix(p) if p == a.prefix), "{err:?}");
    assert_eq!(s.get_key_by_prefix(&a.prefix).await.expect("get"), Some(a));
}

/// Revocation is recorded once; unknown keys report `false`.
pub async fn revoke_marks_the_key(s: &dyn MetaStore) {
    let a = key_record("alice", Role::User, 10);
    s.create_key(&a).await.expect("create");
    assert!(s.revoke_key(&a.prefix, 50).await.expect("revoke"));
    assert!(!s.revoke_key(&a.prefix, 60).await.expect("revoke again"));
    let got = s.get_key_by_prefix(&a.prefix).await.expect("get").expect("still listed");
    assert_eq!(got.revoked_at_ms, Some(50));
    let missing = KeyPrefix::parse("zzzzzzzz").expect("prefix");
    assert!(!s.revoke_key(&missing, 60).await.expect("revoke missing"));
}

/// Rotation stores the new key and revokes the old one, or changes nothing.
pub async fn rotate_is_atomic(s: &dyn MetaStore) {
    let old = key_record("alice", Role::Operator, 10);
    s.create_key(&old).await.expect("create");
    let new = key_record("alice", Role::Operator, 20);
    s.rotate_key(&old.prefix, &new, 20).await.expect("rotate");
    assert_eq!(s.get_key_by_prefix(&old.prefix).await.expect("get").and_then(|k| k.revoked_at_ms), Some(20));
    assert_eq!(s.get_key_by_prefix(&new.prefix).await.expect("get"), Some(new.clone()));

    // Old key already revoked: nothing is stored.
    let newer = key_record("alice", Role::Operator, 30);
    let err = s.rotate_key(&old.prefix, &newer, 30).await.expect_err("rotating a revoked key");
    assert!(matches!(err, StoreError::KeyNotFound(_)), "{err:?}");
    assert_eq!(s.get_key_by_prefix(&newer.prefix).await.expect("get"), None);

    // New prefix taken: the old key stays active.
    let mut clash = key_record("alice", Role::Operator, 40);
    clash.prefix = old.prefix;
    let err = s.rotate_key(&new.prefix, &clash, 40).await.expect_err("clashing prefix");
    assert!(matches!(err, StoreError::DuplicatePrefix(_)), "{err:?}");
    let still = s.get_key_by_prefix(&new.prefix).await.expect("get").expect("present");
    assert_eq!(still.revoked_at_ms, None, "a failed rotation must not revoke the old key");
}

/// Last-use times only move forward; unknown prefixes are ignored.
pub async fn touch_last_used_only_raises(s: &dyn MetaStore) {
    let a = key_record("alice", Role::User, 10);
    s.create_key(&a).await.expect("create");
    let missing = KeyPrefix::parse("zzzzzzzz").expect("prefix");
    s.touch_last_used(&[(a.prefix, 100), (missing, 5)]).await.expect("touch");
    s.touch_last_used(&[(a.prefix, 90)]).await.expect("touch older");
    let got = s.get_key_by_prefix(&a.prefix).await.expect("get").expect("present");
    assert_eq!(got.last_used_ms, Some(100));
    s.touch_last_used(&[]).await.expect("empty batch");
}

/// Appends number records 1, 2, … and link each to the previous hash.
pub async fn audit_append_builds_a_chain(s: &dyn MetaStore) {
    let empty = s.audit_chain_verify().await.expect("verify empty");
    assert_eq!((empty.checked, empty.first_broken), (0, None));
    let first =
        s.append_audit(&[entry(1, "job.cancel", "alice"), entry(2, "job.cancel", "bob")]).await.expect("append");
    let second = s.append_audit(&[entry(3, "host.restart", "alice")]).await.expect("append");
    assert_eq!(first.iter().chain(&second).map(|r| r.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(first[1].prev_hash, first[0].hash);
    assert_eq!(second[0].prev_hash, first[1].hash);
    assert!(s.append_audit(&[]).await.expect("empty append").is_empty());
    let report = s.audit_chain_verify().await.expect("verify");
    assert_eq!((report.checked, report.first_broken), (3, None));
    let stored = s.query_audit(&AuditFilter::default()).await.expect("query");
    assert_eq!(stored.iter().rev().cloned().collect::<Vec<_>>(), [first, second].concat(), "stored as returned");
}

/// Concurrent appends still form one linear chain.
pub async fn concurrent_appends_stay_linear(s: Arc<dyn MetaStore>) {
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    s.append_audit(&[entry(t * 100 + i, "job.submit", "alice")]).await.expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("append task");
    }
    let report = s.audit_chain_verify().await.expect("verify");
    assert_eq!((report.checked, report.first_broken), (80, None));
}

/// Queries filter by time, actor (prefix or owner), action and id, newest first, limited.
pub async fn audit_query_filters(s: &dyn MetaStore) {
    let mut entries: Vec<_> =
        (1..=6).map(|t| entry(t * 10, if t % 2 == 0 { "job.cancel" } else { "key.created" }, "alice")).collect();
    entries[5].owner = Some(Owner::new("bob").expect("owner"));
    entries[5].key_prefix = Some(KeyPrefix::parse("bbbbbbbb").expect("prefix"));
    s.append_audit(&entries).await.expect("append");
    let ids = |f: AuditFilter| async move {
        s.query_audit(&f).await.expect("query").iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(AuditFilter::default()).await, vec![6, 5, 4, 3, 2, 1]);
    assert_eq!(ids(AuditFilter { since_ms: Some(40), ..Default::default() }).await, vec![6, 5, 4]);
    assert_eq!(ids(AuditFilter { action: Some("job.cancel".into()), ..Default::default() }).await, vec![6, 4, 2]);
    assert_eq!(ids(AuditFilter { actor: Some("bob".into()), ..Default::default() }).await, vec![6]);
    assert_eq!(ids(AuditFilter { actor: Some("bbbbbbbb".into()), ..Default::default() }).await, vec![6]);
    assert_eq!(ids(AuditFilter { actor: Some("abcd1234".into()), ..Default::default() }).await, vec![5, 4, 3, 2, 1]);
    assert_eq!(ids(AuditFilter { limit: 2, ..Default::default() }).await, vec![6, 5]);
    assert_eq!(ids(AuditFilter { before_id: Some(5), limit: 2, ..Default::default() }).await, vec![4, 3]);
    let all = s.query_audit(&AuditFilter { since_ms: Some(60), ..Default::default() }).await.expect("query");
    assert_eq!(all[0].entry, entries[5], "every field is stored");
}

/// Retention removes a prefix of the chain, which still verifies and keeps growing.
pub async fn audit_retention_keeps_the_chain_verifiable(s: &dyn MetaStore) {
    // Times are not monotonic: retention stops at the first record that is new enough.
    let times = [10, 20, 30, 50, 40, 60, 70];
    let entries: Vec<_> = times.iter().map(|&t| entry(t, "job.cancel", "alice")).collect();
    s.append_audit(&entries).await.expect("append");
    assert_eq!(s.apply_audit_retention(45).await.expect("retain"), 3);
    let left: Vec<_> = s.query_audit(&AuditFilter::default()).await.expect("query").iter().map(|r| r.id).collect();
    assert_eq!(left, vec![7, 6, 5, 4]);
    let r = s.audit_chain_verify().await.expect("verify");
    assert_eq!((r.checked, r.first_broken), (4, None));
    assert_eq!(s.apply_audit_retention(45).await.expect("retain again"), 0);
    s.append_audit(&[entry(80, "job.cancel", "alice")]).await.expect("append");
    assert_eq!(s.apply_audit_retention(1_000).await.expect("retain all"), 5);
    let r = s.audit_chain_verify().await.expect("verify empty");
    assert_eq!((r.checked, r.first_broken), (0, None));
    let next = s.append_audit(&[entry(90, "job.cancel", "alice")]).await.expect("append after");
    assert_eq!(next[0].id, 9, "ids continue after retention");
    let r = s.audit_chain_verify().await.expect("verify");
    assert_eq!((r.checked, r.first_broken), (1, None));
}

/// Generates one `#[tokio::test]` per conformance case. `$make` is an `async fn() -> TestStore`
/// returning a fresh, empty store.
#[macro_export]
macro_rules! metastore_test_suite {
    ($make:path) => {
        $crate::metastore_test_suite!(@case $make, keys_round_trip);
        $crate::metastore_test_suite!(@case $make, duplicate_prefix_is_refused);
        $crate::metastore_test_suite!(@case $make, revoke_marks_the_key);
        $crate::metastore_test_suite!(@case $make, rotate_is_atomic);
        $crate::metastore_test_suite!(@case $make, touch_last_used_only_raises);
        $crate::metastore_test_suite!(@case $make, audit_append_builds_a_chain);
        $crate::metastore_test_suite!(@case $make, audit_query_filters);
        $crate::metastore_test_suite!(@case $make, audit_retention_keeps_the_chain_verifiable);

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_appends_stay_linear() {
            let t = $make().await;
            $crate::testsuite::concurrent_appends_stay_linear(t.store.clone()).await;
        }
    };
    (@case $make:path, $case:ident) => {
        #[tokio::test]
        async fn $case() {
            let t = $make().await;
            $crate::testsuite::$case(&*t.store).await;
        }
    };
}
