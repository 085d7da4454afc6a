//! The [`FleetStore`] conformance cases, run against every backend by
//! [`fleet_store_test_suite!`](crate::fleet_store_test_suite). Test-support code: a case fails by
//! panicking with a message naming the broken contract.

use crate::error::FleetError;
use crate::model::{CheckResult, HostState, HostStatus, StateChange};
use crate::month::{month_of, month_start, partition_name};
use crate::spec::{HostInput, HostSpec};
use crate::store::{EventQuery, FleetStore, HistoryQuery, HostFilter, HostOrder};
use gpufleet_agent::wire::{Component, ComponentKind, CpuPercent, Disk, HostMetrics, Status};
use std::any::Any;
use std::sync::Arc;

/// A fresh store plus whatever must live as long as it (a temp dir, a schema guard).
pub struct TestFleetStore {
    /// The store under test.
    pub store: Arc<dyn FleetStore>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl TestFleetStore {
    /// Wraps a store and its guard.
    pub fn new(store: Arc<dyn FleetStore>, guard: impl Any + Send + Sync) -> Self {
        Self { store, _guard: Box::new(guard) }
    }
}

/// 2026-11-01T00:00:00Z.
pub const NOV_2026: i64 = 1_793_491_200_000;
const DAY: i64 = 86_400_000;

/// A valid spec named `name` in `groups`.
pub fn spec(name: &str, groups: &[&str]) -> HostSpec {
    let input = HostInput {
        name: name.into(),
        agent_url: format!("http://127.0.0.1:9/{name}"),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        ..Default::default()
    };
    input.validate().expect("test spec is valid")
}

/// A check of `host_id` at `at_ms`: answered (`error` none) with one component of `status`.
pub fn check(host_id: i64, at_ms: i64, state: HostState, error: Option<&str>) -> CheckResult {
    let status = match state {
        HostState::Critical => Status::Critical,
        HostState::Degraded => Status::Warn,
        _ => Status::Ok,
    };
    let components = match error {
        Some(_) => Vec::new(),
        None => vec![
            Component { name: "cpu".into(), kind: ComponentKind::Cpu, status: Status::Ok, message: "fine".into(), detail: serde_json::Value::Null },
            Component { name: "disk:/".into(), kind: ComponentKind::Disk, status, message: "the disk".into(), detail: serde_json::json!({"used": 1}) },
        ],
    };
    CheckResult {
        host_id,
        at_ms,
        state,
        latency_ms: 1.5,
        components,
        error: error.map(str::to_owned),
        consecutive_failures: u32::from(error.is_some()),
    }
}

/// A host metrics sample at `time_ms` with steal `steal` and `/` used `disk_pct` %.
pub fn sample(time_ms: i64, steal: f64, disk_pct: u64) -> Arc<HostMetrics> {
    Arc::new(HostMetrics {
        time_ms,
        cpu: CpuPercent { steal, idle: 100.0 - steal, ..Default::default() },
        mem_total_bytes: 1 << 30,
        mem_available_bytes: 1 << 29,
        disks: vec![
            Disk { mount: "/".into(), fs: "ext4".into(), total_bytes: 100, used_bytes: disk_pct, free_bytes: 100 - disk_pct },
            Disk { mount: "/data".into(), fs: "xfs".into(), total_bytes: 100, used_bytes: 10, free_bytes: 90 },
        ],
        ..Default::default()
    })
}

/// Names are unique; get by id and name; update; delete.
pub async fn hosts_crud_and_unique_names(s: &dyn FleetStore) {
    let a = s.create_host(&spec("gpu-a", &["gpu"]), 1_000).await.expect("create");
    assert!(a.id > 0);
    assert_eq!((a.state, a.status, a.last_check_ms, a.created_ms), (HostState::Unknown, HostStatus::Active, None, 1_000));
    assert_eq!(a.groups, vec!["gpu"]);
    let dup = s.create_host(&spec("gpu-a", &[]), 1_001).await;
    assert!(matches!(dup, Err(FleetError::DuplicateName(n)) if n == "gpu-a"), "a taken name is refused");
    let b = s.create_host(&spec("gpu-b", &[]), 1_002).await.expect("create b");
    assert_ne!(a.id, b.id);
    assert_eq!(s.get_host(a.id).await.expect("get").as_ref(), Some(&a));
    assert_eq!(s.get_host_by_name("gpu-b").await.expect("by name").map(|h| h.id), Some(b.id));
    assert_eq!(s.get_host_by_name("nope").await.expect("by name"), None);

    let mut changed = spec("gpu-a", &["gpu", "rack-1"]);
    changed.status = HostStatus::Maintenance;
    changed.watchdog = true;
    changed.tags.insert("rack".into(), "1".into());
    let a2 = s.update_host(a.id, &changed, 2_000).await.expect("update");
    assert_eq!((a2.status, a2.watchdog, a2.updated_ms, a2.created_ms), (HostStatus::Maintenance, true, 2_000, 1_000));
    assert_eq!(a2.tags.get("rack").map(String::as_str), Some("1"));
    let rename = s.update_host(a.id, &spec("gpu-b", &[]), 2_001).await;
    assert!(matches!(rename, Err(FleetError::DuplicateName(_))), "renaming onto a taken name is refused");
    assert!(matches!(s.update_host(9_999_999, &changed, 2_002).await, Err(FleetError::NotFound(_))));

    assert!(s.delete_host(a.id).await.expect("delete"));
    assert!(!s.delete_host(a.id).await.expect("delete twice"), "already gone");
    assert_eq!(s.get_host(a.id).await.expect("get"), None);
    let again = s.create_host(&spec("gpu-a", &[]), 3_000).await.expect("the name is free again");
    assert!(again.id > b.id, "ids are not reused");
}

/// Filters by group, status and state; stale-first puts never-checked hosts first.
pub async fn list_filters_and_orders_stale_first(s: &dyn FleetStore) {
    let mut ids = Vec::new();
    for (name, groups) in [("c", vec!["gpu"]), ("a", vec!["gpu", "cpu"]), ("b", vec!["cpu"]), ("d", vec![])] {
        ids.push(s.create_host(&spec(name, &groups), 0).await.expect("create").id);
    }
    let mut maint = spec("m", &["gpu"]);
    maint.status = HostStatus::Maintenance;
    s.create_host(&maint, 0).await.expect("create m");
    let names = |hs: Vec<crate::model::Host>| hs.into_iter().map(|h| h.name).collect::<Vec<_>>();
    assert_eq!(names(s.list_hosts(&HostFilter::default()).await.expect("all")), ["a", "b", "c", "d", "m"]);
    let gpu = HostFilter { group: Some("gpu".into()), ..Default::default() };
    assert_eq!(names(s.list_hosts(&gpu).await.expect("gpu")), ["a", "c", "m"]);
    let active_gpu = HostFilter { group: Some("gpu".into()), status: Some(HostStatus::Active), ..Default::default() };
    assert_eq!(names(s.list_hosts(&active_gpu).await.expect("active gpu")), ["a", "c"]);
    // c checked long ago, a recently, b and d never.
    s.record_checks(&[check(ids[1], 500, HostState::Healthy, None), check(ids[0], 100, HostState::Degraded, None)]).await.expect("record");
    let stale = HostFilter { status: Some(HostStatus::Active), order: HostOrder::StaleFirst, ..Default::default() };
    assert_eq!(names(s.list_hosts(&stale).await.expect("stale first")), ["b", "d", "c", "a"], "never checked (by id), then oldest check");
    let degraded = HostFilter { states: Some(vec![HostState::Degraded]), ..Default::default() };
    assert_eq!(names(s.list_hosts(&degraded).await.expect("degraded")), ["c"]);
}

/// A batch updates state, last check, last seen (answers only) and failures, and adds history.
pub async fn record_checks_updates_hosts_and_history(s: &dyn FleetStore) {
    let a = s.create_host(&spec("a", &[]), 0).await.expect("a").id;
    let b = s.create_host(&spec("b", &[]), 0).await.expect("b").id;
    s.record_checks(&[check(a, 1_000, HostState::Degraded, None), check(b, 1_000, HostState::Healthy, None)]).await.expect("first");
    s.record_checks(&[check(a, 2_000, HostState::Unreachable, Some("connection refused"))]).await.expect("second");
    let ha = s.get_host(a).await.expect("get").expect("a");
    assert_eq!(ha.state, HostState::Unreachable);
    assert_eq!((ha.last_check_ms, ha.last_seen_ms, ha.consecutive_failures), (Some(2_000), Some(1_000), 1), "last_seen only on answers");
    let hb = s.get_host(b).await.expect("get").expect("b");
    assert_eq!((hb.state, hb.last_seen_ms, hb.consecutive_failures), (HostState::Healthy, Some(1_000), 0));
    let hist = s.health_history(a, &HistoryQuery::default()).await.expect("history");
    assert_eq!(hist.len(), 2);
    assert_eq!(hist[0].error.as_deref(), Some("connection refused"));
    assert_eq!((hist[0].state, hist[0].consecutive_failures, hist[0].latency_ms), (HostState::Unreachable, 1, 1.5));
    assert_eq!(hist[1].components.len(), 1, "only components that are not ok are kept");
    assert_eq!((hist[1].components[0].name.as_str(), hist[1].components[0].status), ("disk:/", Status::Warn));
    assert_eq!(hist[1].components[0].detail, serde_json::json!({"used": 1}));
    let hb_hist = s.health_history(b, &HistoryQuery::default()).await.expect("history b");
    assert!(hb_hist[0].components.is_empty(), "a healthy check keeps no component");
    // A check of a deleted host is harmless.
    s.record_checks(&[check(424_242, 3_000, HostState::Healthy, None)]).await.expect("unknown host");
    s.record_checks(&[]).await.expect("empty batch");
}

/// History is newest first, honours limit and since, and retention deletes old rows.
pub async fn history_queries_and_retention(s: &dyn FleetStore) {
    let a = s.create_host(&spec("a", &[]), 0).await.expect("a").id;
    let checks: Vec<_> = (1..=10).map(|i| check(a, i * 1_000, HostState::Healthy, None)).collect();
    s.record_checks(&checks).await.expect("record");
    let at = |v: Vec<CheckResult>| v.into_iter().map(|c| c.at_ms).collect::<Vec<_>>();
    assert_eq!(at(s.health_history(a, &HistoryQuery { since_ms: None, limit: 3 }).await.expect("h")), [10_000, 9_000, 8_000]);
    assert_eq!(at(s.health_history(a, &HistoryQuery { since_ms: Some(8_000), limit: 100 }).await.expect("h")), [10_000, 9_000, 8_000]);
    s.insert_events(&[event(a, 1_500, HostState::Unknown, HostState::Healthy), event(a, 9_500, HostState::Healthy, HostState::Critical)])
        .await
        .expect("events");
    let deleted = s.apply_history_retention(5_000).await.expect("retention");
    assert_eq!(deleted, 4 + 1, "checks at 1..4 s and the event at 1.5 s");
    assert_eq!(at(s.health_history(a, &HistoryQuery::default()).await.expect("h")).last(), Some(&5_000));
    assert_eq!(s.events(&EventQuery::default()).await.expect("events").len(), 1);
}

fn event(host_id: i64, at_ms: i64, from: HostState, to: HostState) -> StateChange {
    StateChange { id: 0, host_id, host: format!("host-{host_id}"), at_ms, from, to, reason: format!("{from} → {to}") }
}

/// Events get ids, come back newest first, filter by host and time.
pub async fn events_round_trip(s: &dyn FleetStore) {
    s.insert_events(&[event(1, 100, HostState::Unknown, HostState::Healthy), event(2, 200, HostState::Healthy, HostState::Unreachable)])
        .await
        .expect("insert");
    s.insert_events(&[event(1, 300, HostState::Healthy, HostState::Critical)]).await.expect("insert");
    s.insert_events(&[]).await.expect("empty");
    let all = s.events(&EventQuery::default()).await.expect("all");
    assert_eq!(all.iter().map(|e| e.at_ms).collect::<Vec<_>>(), [300, 200, 100]);
    assert!(all.iter().all(|e| e.id > 0) && all[0].id != all[1].id, "ids assigned");
    assert_eq!((all[0].from, all[0].to, all[0].host.as_str()), (HostState::Healthy, HostState::Critical, "host-1"));
    assert_eq!(all[0].reason, "healthy → critical");
    let host1 = s.events(&EventQuery { host_id: Some(1), ..Default::default() }).await.expect("host 1");
    assert_eq!(host1.len(), 2);
    let recent = s.events(&EventQuery { since_ms: Some(200), limit: 1, ..Default::default() }).await.expect("recent");
    assert_eq!(recent.iter().map(|e| e.at_ms).collect::<Vec<_>>(), [300]);
}

/// Deleting a host removes its history, keeps its events.
pub async fn delete_removes_history_keeps_events(s: &dyn FleetStore) {
    let a = s.create_host(&spec("a", &[]), 0).await.expect("a").id;
    s.record_checks(&[check(a, 1, HostState::Healthy, None)]).await.expect("record");
    s.insert_events(&[event(a, 1, HostState::Unknown, HostState::Healthy)]).await.expect("event");
    assert!(s.delete_host(a).await.expect("delete"));
    assert!(s.health_history(a, &HistoryQuery::default()).await.expect("history").is_empty());
    assert_eq!(s.events(&EventQuery { host_id: Some(a), ..Default::default() }).await.expect("events").len(), 1);
}

/// One call records thousands of checks (the backends chunk or array them).
pub async fn large_batches(s: &dyn FleetStore) {
    let mut ids = Vec::new();
    for i in 0..1_200 {
        ids.push(s.create_host(&spec(&format!("h{i:05}"), &[]), 0).await.expect("create").id);
    }
    let checks: Vec<_> = ids.iter().map(|id| check(*id, 5_000, HostState::Degraded, None)).collect();
    s.record_checks(&checks).await.expect("one large batch");
    let degraded = HostFilter { states: Some(vec![HostState::Degraded]), ..Default::default() };
    assert_eq!(s.list_hosts(&degraded).await.expect("list").len(), 1_200, "every host of the batch updated");
    assert_eq!(s.health_history(ids[1_199], &HistoryQuery::default()).await.expect("h").len(), 1);
}

/// Partitions are created for this month and ahead, idempotently; a missing one is reported.
pub async fn partitions_are_created_ahead_and_reported(s: &dyn FleetStore) {
    let now = NOV_2026 + 3 * DAY;
    let problem = s.partition_status(now).await.expect("status");
    assert!(problem.as_deref().is_some_and(|p| p.contains("host_metrics_2026_11")), "missing current month: {problem:?}");
    let created = s.ensure_partitions(now, 1).await.expect("ensure");
    assert_eq!(created, ["host_metrics_2026_11", "host_metrics_2026_12"]);
    assert_eq!(s.ensure_partitions(now, 2).await.expect("again"), ["host_metrics_2027_01"], "only the missing one");
    assert_eq!(s.partition_status(now).await.expect("status"), None);
    assert_eq!(s.partitions().await.expect("list"), ["host_metrics_2026_11", "host_metrics_2026_12", "host_metrics_2027_01"]);
    assert!(s.partition_status(NOV_2026 + 100 * DAY).await.expect("status").is_some(), "a later month is missing");
}

/// Samples are stored per month and read back by metric name, also per mount and across months.
pub async fn metrics_round_trip(s: &dyn FleetStore) {
    let nov = month_of(NOV_2026);
    s.ensure_partitions(month_start(nov - 1), 1).await.expect("oct and nov");
    let (a, b) = (1_i64, 2_i64);
    let batch = vec![
        (a, sample(NOV_2026 - 60_000, 1.0, 40)),
        (a, sample(NOV_2026, 2.0, 41)),
        (a, sample(NOV_2026 + 60_000, 3.0, 42)),
        (b, sample(NOV_2026, 9.0, 90)),
    ];
    assert_eq!(s.write_host_metrics(&batch).await.expect("write"), 4);
    assert_eq!(s.write_host_metrics(&[]).await.expect("empty"), 0);
    let all = |m: &'static str| s.host_metrics_range(a, m, 0, i64::MAX);
    assert_eq!(all("cpu_steal_pct").await.expect("steal"), [(NOV_2026 - 60_000, 1.0), (NOV_2026, 2.0), (NOV_2026 + 60_000, 3.0)], "across the month boundary");
    assert_eq!(all("disk_used_pct").await.expect("disk").last(), Some(&(NOV_2026 + 60_000, 42.0)), "the fullest mount");
    assert_eq!(all("disk_used_pct:/data").await.expect("mount")[0].1, 10.0);
    assert_eq!(all("disk_free_bytes:/").await.expect("free")[0].1, 60.0);
    assert!(all("disk_used_pct:/nowhere").await.expect("no such mount").is_empty());
    assert!(all("gpu_util_pct").await.expect("no gpus").is_empty(), "no reading, no point");
    assert_eq!(all("mem_available_pct").await.expect("mem")[0].1, 50.0);
    let window = s.host_metrics_range(a, "cpu_steal_pct", NOV_2026, NOV_2026 + 60_000).await.expect("window");
    assert_eq!(window, [(NOV_2026, 2.0)], "start inclusive, end exclusive");
    assert_eq!(s.host_metrics_range(b, "cpu_steal_pct", 0, i64::MAX).await.expect("b"), [(NOV_2026, 9.0)]);
    assert!(s.host_metrics_range(a, "cpu_steal_pct", 10, 10).await.expect("empty range").is_empty());
    let bad = s.host_metrics_range(a, "steal", 0, 1).await;
    assert!(matches!(bad, Err(FleetError::Invalid { field, .. }) if field == "metric"), "unknown names are refused");
}

/// A sample for a month without a partition fails the write and writes nothing.
pub async fn metrics_write_refuses_a_missing_partition(s: &dyn FleetStore) {
    s.ensure_partitions(NOV_2026, 0).await.expect("nov");
    let batch = vec![(1, sample(NOV_2026, 1.0, 10)), (1, sample(NOV_2026 + 40 * DAY, 1.0, 10))];
    let err = s.write_host_metrics(&batch).await;
    assert!(matches!(&err, Err(FleetError::PartitionMissing(p)) if p == "host_metrics_2026_12"), "{err:?}");
    assert!(s.host_metrics_range(1, "cpu_steal_pct", 0, i64::MAX).await.expect("read").is_empty(), "nothing of the batch was written");
}

/// Retention drops whole months that ended before the cutoff.
pub async fn metrics_retention_drops_whole_months(s: &dyn FleetStore) {
    let nov = month_of(NOV_2026);
    s.ensure_partitions(month_start(nov - 2), 3).await.expect("sep..dec");
    s.write_host_metrics(&[(1, sample(month_start(nov - 2), 1.0, 1)), (1, sample(NOV_2026, 2.0, 1))]).await.expect("write");
    let dropped = s.drop_partitions_before(NOV_2026 + DAY).await.expect("drop");
    assert_eq!(dropped, [partition_name(nov - 2), partition_name(nov - 1)], "September and October ended before the cutoff");
    assert_eq!(s.partitions().await.expect("left"), [partition_name(nov), partition_name(nov + 1)]);
    assert_eq!(s.host_metrics_range(1, "cpu_steal_pct", 0, i64::MAX).await.expect("read"), [(NOV_2026, 2.0)]);
    assert!(s.drop_partitions_before(0).await.expect("nothing").is_empty());
}

/// Generates one `#[tokio::test]` per case. `$make` is an `async fn() -> TestFleetStore` giving a
/// fresh, empty store.
#[macro_export]
macro_rules! fleet_store_test_suite {
    ($make:path) => {
        $crate::fleet_store_test_suite!(@cases $make,
            hosts_crud_and_unique_names,
            list_filters_and_orders_stale_first,
            record_checks_updates_hosts_and_history,
            history_queries_and_retention,
            events_round_trip,
            delete_removes_history_keeps_events,
            large_batches,
            partitions_are_created_ahead_and_reported,
            metrics_round_trip,
            metrics_write_refuses_a_missing_partition,
            metrics_retention_drops_whole_months
        );
    };
    (@cases $make:path, $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let t = $make().await;
                $crate::testsuite::$case(&*t.store).await;
            }
        )*
    };
}
