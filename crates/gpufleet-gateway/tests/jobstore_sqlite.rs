//! The JobStore conformance suite against SQLite (a fresh file in a temp dir per case), plus
//! reopening the file keeps records and handled dead letters.

use gpufleet_gateway::jobs::testsuite::{job, TestJobStore};
use gpufleet_gateway::{JobStatus, JobStore, SqliteJobStore};
use std::sync::Arc;

async fn make() -> TestJobStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteJobStore::open(&dir.path().join("jobs.db"))
        .await
        .expect("open sqlite");
    TestJobStore::new(Arc::new(store), dir)
}

gpufleet_gateway::jobstore_test_suite!(make);

#[tokio::test]
async fn reopening_keeps_records_and_handled_dead_letters() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("jobs.db");
    let keep = job(JobStatus::Running, None);
    {
        let store = SqliteJobStore::open(&path).await?;
        store.upsert(&keep).await?;
        assert!(store.resolve_dead_letter("7", "discarded", 1).await?);
        store.close().await;
    }
    let store = SqliteJobStore::open(&path).await?;
    assert_eq!(store.get(&keep.id, 5_000).await?, Some(keep));
    assert_eq!(store.resolved_dead_letters().await?, vec!["7".to_owned()]);
    assert!(!store.resolve_dead_letter("7", "retried", 2).await?);
    Ok(())
}
