//! Fleet route tests: real embedded backends and a SQLite fleet store in a temp dir, no auth
//! (the route × role matrix in `routes/tests.rs` covers the guards), called with `oneshot`.

use crate::routes::app;
use crate::state::{ApiSettings, AppState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use gpufleet_broker::{BrokerConfig, EmbeddedBroker};
use gpufleet_core::{BatchBuilder, GpuDesc};
use gpufleet_fleet::{Fleet, FleetConfig, FleetWorkers, LocalLeases, SqliteFleetStore};
use gpufleet_runtime::Shutdown;
use gpufleet_store::{EmbeddedStore, MetricStore, StoreConfig};
use gpufleet_telemetry::PipelineMetrics;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

struct Fixture {
    state: AppState,
    fleet: Arc<Fleet>,
    workers: FleetWorkers,
    _dir: tempfile::TempDir,
}

/// Telemetry from `node-1` (2 GPUs) and `tele-only` (1 GPU); a fleet that gives up after one try.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(EmbeddedBroker::open(BrokerConfig::new(dir.path().join("b"))).unwrap());
    let store: Arc<dyn MetricStore> = Arc::new(EmbeddedStore::open(StoreConfig::new(dir.path().join("s"))).unwrap());
    let mut b = BatchBuilder::new();
    for (host, uuid) in [("node-1", "GPU-a"), ("node-1", "GPU-b"), ("tele-only", "GPU-c")] {
        let g = b.gpu(&GpuDesc { host: host.into(), uuid: uuid.into(), index: Some(0), device: "nvidia0".into(), model: "H100".into(), labels: vec![] });
        let m = b.metric(&"DCGM_FI_DEV_GPU_UTIL".into());
        b.push(g, m, crate::state::now_ms(), 50.0);
    }
    store.write(&b.finish(), crate::state::now_ms()).await.unwrap();
    let fleet_store = Arc::new(SqliteFleetStore::open(&dir.path().join("fleet.db")).await.unwrap());
    let cfg = FleetConfig { unreachable_after: 1, health_timeout: "1s".into(), ..FleetConfig::default() };
    let (fleet, workers) = Fleet::new(fleet_store, Arc::new(LocalLeases::new()), cfg.validate().unwrap()).unwrap();
    let state = AppState::new(broker, store, PipelineMetrics::default(), ApiSettings::default()).with_fleet(fleet.clone());
    Fixture { state, fleet, workers, _dir: dir }
}

async fn call(st: &AppState, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::builder().method(method).uri(uri).header("content-type", "application/json").body(Body::from(body.to_owned())).unwrap();
    let resp = app(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn message(v: &Value) -> &str {
    v.pointer("/error/message").and_then(Value::as_str).unwrap_or("")
}

#[tokio::test]
async fn hosts_are_created_read_changed_and_removed_by_id_or_name() {
    let f = fixture().await;
    let st = &f.state;
    let body = r#"{"name":"gpu-01","address":"10.0.0.5","agent_url":"http://10.0.0.5:9100/","groups":["gpu","rack-1"],"tags":{"rack":"1"},"maintenance":false,"watchdog":true}"#;
    let (s, v) = call(st, "POST", "/api/v1/hosts", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!((v["name"].as_str(), v["agent_url"].as_str(), v["state"].as_str()), (Some("gpu-01"), Some("http://10.0.0.5:9100"), Some("unknown")));
    assert_eq!((v["watchdog"].as_bool(), v["maintenance"].as_bool(), v["registered"].as_bool()), (Some(true), Some(false), Some(true)));
    let id = v["id"].as_i64().unwrap();

    let (s, v) = call(st, "POST", "/api/v1/hosts", body).await;
    assert_eq!(s, StatusCode::CONFLICT, "a duplicate name: {v}");
    assert!(message(&v).contains("gpu-01"), "{v}");
    for (bad, field) in [
        (r#"{"name":"x","agent_url":"gopher://a"}"#, "agent_url"),
        (r#"{"name":"a b","agent_url":"http://a"}"#, "name"),
        (r#"{"name":"x","agent_url":"http://a","groups":["no spaces"]}"#, "groups[0]"),
        (r#"{"name":"x","agent_url":"http://a","nmae":"y"}"#, "nmae"),
        (r#"{"agent_url":"http://a"}"#, "name"),
        ("not json", "body"),
    ] {
        let (s, v) = call(st, "POST", "/api/v1/hosts", bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(message(&v).contains(field), "{bad}: the message names {field}: {v}");
    }

    let (s, by_id) = call(st, "GET", &format!("/api/v1/hosts/{id}"), "").await;
    assert_eq!(s, StatusCode::OK);
    let (_, by_name) = call(st, "GET", "/api/v1/hosts/gpu-01", "").await;
    assert_eq!(by_id, by_name);
    assert_eq!(by_id["last_check_result"], Value::Null, "never checked");

    let (s, v) = call(st, "PUT", "/api/v1/hosts/gpu-01", r#"{"maintenance":true,"tags":{}}"#).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["status"].as_str(), v["maintenance"].as_bool(), v["groups"].as_array().map(Vec::len)), (Some("maintenance"), Some(true), Some(2)));
    assert_eq!(v["tags"], serde_json::json!({}));
    let (s, v) = call(st, "PUT", "/api/v1/hosts/gpu-01", "{}").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    call(st, "POST", "/api/v1/hosts", r#"{"name":"gpu-02","agent_url":"http://10.0.0.6:9100"}"#).await;
    let (s, _) = call(st, "PUT", "/api/v1/hosts/gpu-01", r#"{"name":"gpu-02"}"#).await;
    assert_eq!(s, StatusCode::CONFLICT, "renaming onto a taken name");
    let (s, v) = call(st, "PUT", "/api/v1/hosts/nope", r#"{"watchdog":false}"#).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    let (s, v) = call(st, "DELETE", &format!("/api/v1/hosts/{id}"), "").await;
    assert_eq!((s, v["deleted"]["name"].as_str()), (StatusCode::OK, Some("gpu-01")));
    let (s, v) = call(st, "GET", "/api/v1/hosts/gpu-01", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(message(&v).contains("gpu-01"), "{v}");
}

#[tokio::test]
async fn the_host_list_merges_the_registry_with_telemetry_hosts() {
    let f = fixture().await;
    let st = &f.state;
    call(st, "POST", "/api/v1/hosts", r#"{"name":"node-1","agent_url":"http://127.0.0.1:9","groups":["gpu"]}"#).await;
    call(st, "POST", "/api/v1/hosts", r#"{"name":"reg-only","agent_url":"http://127.0.0.1:9","status":"inactive"}"#).await;
    let (s, v) = call(st, "GET", "/api/v1/hosts", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["count"], 3);
    let by_name = |n: &str| v["hosts"].as_array().unwrap().iter().find(|h| h["name"] == n).cloned().unwrap_or(Value::Null);
    assert_eq!((by_name("node-1")["registered"].as_bool(), by_name("node-1")["gpus"].as_u64()), (Some(true), Some(2)));
    assert_eq!((by_name("reg-only")["gpus"].as_u64(), by_name("reg-only")["status"].as_str()), (Some(0), Some("inactive")));
    let tele = by_name("tele-only");
    assert_eq!((tele["registered"].as_bool(), tele["gpus"].as_u64(), tele["host"].as_str()), (Some(false), Some(1), Some("tele-only")));

    let (_, v) = call(st, "GET", "/api/v1/hosts?group=gpu", "").await;
    assert_eq!(v["count"], 1, "a registry filter leaves telemetry-only hosts out: {v}");
    let (_, v) = call(st, "GET", "/api/v1/hosts?status=inactive", "").await;
    assert_eq!(v["hosts"][0]["name"], "reg-only");
    for (q, needle) in [("state=fine", "parameter 'state'"), ("status=gone", "parameter 'status'"), ("colour=red", "unknown parameter 'colour'")] {
        let (s, v) = call(st, "GET", &format!("/api/v1/hosts?{q}"), "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        assert!(message(&v).contains(needle), "{q}: {v}");
    }
}

#[tokio::test]
async fn a_cycle_shows_in_history_events_summary_and_worker_status() {
    let f = fixture().await;
    let st = &f.state;
    // Nothing listens on the dead host's port: one try (unreachable_after = 1) and it is down.
    let dead = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    call(st, "POST", "/api/v1/hosts", &format!(r#"{{"name":"dead","agent_url":"{dead}","groups":["gpu"]}}"#)).await;
    call(st, "POST", "/api/v1/hosts", r#"{"name":"resting","agent_url":"http://127.0.0.1:9","maintenance":true,"groups":["gpu"]}"#).await;
    f.workers.health.run_cycle(&Shutdown::new()).await.unwrap();

    let (s, v) = call(st, "GET", "/api/v1/hosts/dead/health?limit=5", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["count"].as_u64(), v["host"]["state"].as_str()), (Some(1), Some("unreachable")));
    assert!(v["checks"][0]["error"].as_str().is_some_and(|e| e.contains("connect")), "{v}");
    let (s, v) = call(st, "GET", "/api/v1/hosts/dead/health?limit=0", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    let (_, v) = call(st, "GET", "/api/v1/fleet/events?host=dead", "").await;
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!((v["events"][0]["from"].as_str(), v["events"][0]["to"].as_str()), (Some("unknown"), Some("unreachable")));
    let (_, v) = call(st, "GET", "/api/v1/fleet/events?host=resting", "").await;
    assert_eq!(v["count"], 0, "maintenance hosts are not checked");

    let (s, v) = call(st, "GET", "/api/v1/fleet/summary", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["hosts"].as_u64(), v["by_state"]["unreachable"].as_u64(), v["by_status"]["maintenance"].as_u64()), (Some(2), Some(1), Some(1)));
    assert_eq!(v["by_group"]["gpu"]["hosts"], 2);
    assert_eq!(v["top_problems"][0]["host"], "dead");
    assert!(v["top_problems"][0]["reason"].as_str().is_some_and(|r| r.contains("connect")), "{v}");
    assert!(v["partition_problem"].as_str().is_some_and(|p| p.contains("host_metrics_")), "no partition yet: {v}");

    let (s, v) = call(st, "GET", "/api/v1/fleet/workers/status", "").await;
    assert_eq!(s, StatusCode::OK);
    let health = &v["workers"][0];
    assert_eq!((health["name"].as_str(), health["checks_performed"].as_u64(), health["failed"].as_u64()), (Some("fleet.health"), Some(1), Some(1)));
    assert_eq!((health["success_rate"].as_f64(), health["interval_s"].as_f64()), (Some(0.0), Some(30.0)));
    assert!(health["last_run"].is_string() && health["last_duration_ms"].is_number(), "{v}");
    assert_eq!(v["workers"].as_array().map(Vec::len), Some(3));
    assert!(f.fleet.partition_problem(crate::state::now_ms()).await.is_some());
}

#[tokio::test]
async fn ready_reports_a_missing_host_metrics_partition_until_it_is_created() {
    let f = fixture().await;
    let (s, v) = call(&f.state, "GET", "/ready", "").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["problems"].to_string().contains("host_metrics_"), "{v}");
    f.workers.maintenance.tick(crate::state::now_ms()).await.unwrap();
    let (s, v) = call(&f.state, "GET", "/ready", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn without_a_fleet_the_routes_say_so_and_the_host_list_is_telemetrys() {
    let mut f = fixture().await;
    f.state.fleet = None;
    let (s, v) = call(&f.state, "GET", "/api/v1/fleet/summary", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(message(&v).contains("[fleet]"), "{v}");
    let (s, v) = call(&f.state, "POST", "/api/v1/hosts", r#"{"name":"x","agent_url":"http://a"}"#).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = call(&f.state, "GET", "/api/v1/hosts", "").await;
    assert_eq!((s, v["count"].as_u64()), (StatusCode::OK, Some(2)), "{v}");
    assert!(v["hosts"].as_array().unwrap().iter().all(|h| h["registered"] == false));
}
