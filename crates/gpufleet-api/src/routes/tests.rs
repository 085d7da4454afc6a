//! Router tests with real embedded backends on a temporary directory, called with `oneshot` on
//! [`ApiService`] (the inference fast path in front of the router), as the listener serves it.

use super::{app, system::OPENAPI, Guard, RouteSpec, ROUTES};
use crate::state::{ApiSettings, AppState};
use crate::ApiService;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use gpufleet_broker::{Broker, BrokerConfig, EmbeddedBroker};
use gpufleet_core::{BatchBuilder, GpuDesc, GroupName, TopicName};
use gpufleet_auth::{Actor, AuditLog, AuditLogConfig, AuthConfig, AuthService, NewKey, Owner, RateLimitConfig, Role, SqliteMetaStore};
use gpufleet_runtime::{Shutdown, Supervisor};
use gpufleet_store::{EmbeddedStore, MetricStore, StoreConfig};
use std::collections::HashMap;
use gpufleet_telemetry::PipelineMetrics;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

struct Fixture {
    _mock: gpufleet_sim::MockServer,
    _dir: tempfile::TempDir,
    state: AppState,
    /// Plaintext keys by role.
    keys: HashMap<Role, String>,
    _supervisor: Supervisor,
}

const T0: i64 = 1_752_871_354_000; // 2025-07-18T20:42:34Z

async fn fixture() -> Fixture {
    fixture_with(RateLimitConfig::default()).await
}

/// Real embedded backends and a real auth service (SQLite) in a temp dir, with one key per role.
async fn fixture_with(limits: RateLimitConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::open(BrokerConfig::new(dir.path().join("b"))).unwrap());
    let mut sc = StoreConfig::new(dir.path().join("s"));
    sc.raw_retention = None;
    let store: Arc<dyn MetricStore> = Arc::new(EmbeddedStore::open(sc).unwrap());
    // Two GPUs on one host, 10 points per metric, 1 s apart.
    let mut b = BatchBuilder::new();
    for (i, uuid) in ["GPU-aaa", "GPU-bbb"].iter().enumerate() {
        let g = b.gpu(&GpuDesc {
            host: "node-1".into(),
            uuid: (*uuid).into(),
            index: Some(i as u32),
            device: format!("nvidia{i}"),
            model: "NVIDIA H100 80GB HBM3".into(),
            labels: vec![],
        });
        let util = b.metric(&"DCGM_FI_DEV_GPU_UTIL".into());
        let temp = b.metric(&"DCGM_FI_DEV_GPU_TEMP".into());
        for k in 0..10 {
            b.push(g, util, T0 + k * 1000, (k * 10) as f64);
            b.push(g, temp, T0 + k * 1000, 40.0 + k as f64);
        }
    }
    store.write(&b.finish(), crate::state::now_ms()).await.unwrap();

    let meta = Arc::new(SqliteMetaStore::open(&dir.path().join("meta.db")).await.unwrap());
    let (log, writer) = AuditLog::new(meta.clone(), AuditLogConfig::default());
    let mut supervisor = Supervisor::new(Shutdown::new());
    supervisor.spawn(writer);
    let config = AuthConfig { rate_limits: limits, ..AuthConfig::default() };
    let auth = Arc::new(AuthService::new(meta, log, config.build_options().unwrap()));
    let mut keys = HashMap::new();
    for role in Role::ALL {
        let new = NewKey { owner: Owner::new(&format!("{role}-owner")).unwrap(), role, label: None, expires_at_ms: None, allowed_models: None };
        let created = auth.create_key(new, &Actor::default(), crate::state::now_ms()).await.unwrap();
        keys.insert(role, created.key.expose_secret().to_owned());
    }
    // The inference gateway over one mock llama.cpp backend serving model "m1".
    let mock = gpufleet_sim::MockServer::start(gpufleet_sim::MockConfig::new("m1")).await.unwrap();
    let mut gc = gpufleet_gateway::GatewayConfig::default();
    gc.backends.push(gpufleet_gateway::BackendConfig {
        name: "b0".into(),
        kind: gpufleet_gateway::BackendKind::Llamacpp,
        url: mock.url(),
        models: vec!["m1".into()],
        max_concurrency: 4,
        weight: 1.0,
        api_key: None,
        gpus: vec![],
    });
    let jobs = Arc::new(gpufleet_gateway::SqliteJobStore::open(&dir.path().join("jobs.db")).await.unwrap());
    let (gw, workers) = gpufleet_gateway::Gateway::new(gc.validate().unwrap(), broker.clone(), jobs, None).unwrap();
    for w in workers {
        supervisor.spawn(w);
    }
    // The fleet registry with host "node-1" (also a telemetry host), on its own SQLite file.
    let fleet_store = Arc::new(gpufleet_fleet::SqliteFleetStore::open(&dir.path().join("fleet.db")).await.unwrap());
    let leases = Arc::new(gpufleet_fleet::LocalLeases::new());
    let (fleet, _fleet_workers) = gpufleet_fleet::Fleet::open(fleet_store, leases, gpufleet_fleet::FleetSettings::default()).await.unwrap();
    let node1 = gpufleet_fleet::HostInput { name: "node-1".into(), agent_url: "http://127.0.0.1:9".into(), ..Default::default() };
    fleet.register(&node1).await.unwrap();
    // Scores, trends and alerts over that registry.
    let alert_settings = gpufleet_insight::config::AlertsConfig::default().validate().unwrap();
    let alert_store = Arc::new(gpufleet_insight::alert::MemoryAlertStore::new(100));
    let alerts = Arc::new(gpufleet_insight::alert::AlertService::open(&alert_settings, alert_store, crate::state::now_ms()).await.unwrap());
    let (source, _cache) = gpufleet_insight::fleet_adapter::FleetSource::new(fleet.clone());
    let insight = Arc::new(gpufleet_insight::Insight::new(source.clone(), source, None, alerts));
    let settings = ApiSettings { body_limit_bytes: 64 * 1024, ..ApiSettings::default() };
    let state = AppState::new(broker, store, PipelineMetrics::default(), settings).with_auth(auth).with_gateway(gw).with_fleet(fleet).with_insight(insight);
    Fixture { _mock: mock, _dir: dir, state, keys, _supervisor: supervisor }
}

impl Fixture {
    fn admin(&self) -> &str {
        &self.keys[&Role::Admin]
    }
}

/// Sends a request as admin unless it already carries credentials.
async fn call(f: &Fixture, mut req: Request<Body>) -> (StatusCode, Vec<u8>) {
    if !req.headers().contains_key("authorization") && !req.headers().contains_key("x-api-key") {
        req.headers_mut().insert("authorization", format!("Bearer {}", f.admin()).parse().unwrap());
    }
    call_raw(&f.state, req).await
}

async fn call_raw(st: &AppState, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = ApiService::new(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

async fn get(f: &Fixture, uri: &str) -> (StatusCode, Value) {
    let (s, b) = call(f, Request::get(uri).body(Body::empty()).unwrap()).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::String(String::from_utf8_lossy(&b).into_owned())))
}

fn error_message(v: &Value) -> &str {
    v.pointer("/error/message").and_then(Value::as_str).unwrap_or("")
}

#[tokio::test]
async fn health_and_ready() {
    let f = fixture().await;
    assert_eq!(get(&f, "/health").await.0, StatusCode::OK);
    assert_eq!(get(&f, "/ready").await.0, StatusCode::OK);
}

#[tokio::test]
async fn gpu_inventory_has_latest_values_and_staleness() {
    let f = fixture().await;
    let (s, v) = get(&f, "/api/v1/gpus").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["count"], 2);
    let g = &v["gpus"][0];
    assert_eq!(g["uuid"], "GPU-aaa");
    assert_eq!(g["latest"]["DCGM_FI_DEV_GPU_UTIL"]["value"], 90.0);
    assert_eq!(g["first_seen"], "2025-07-18T20:42:34Z");
    assert_eq!(g["stale"], false, "just ingested");
    let (_, hosts) = get(&f, "/api/v1/hosts").await;
    assert_eq!(hosts["hosts"][0]["gpus"], 2);
    let (s, v) = get(&f, "/api/v1/hosts/node-1/gpus").await;
    assert_eq!((s, v["count"].as_u64()), (StatusCode::OK, Some(2)));
    let (s, v) = get(&f, "/api/v1/hosts/nope/gpus").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_message(&v).contains("nope"));
}

#[tokio::test]
async fn telemetry_raw_step_csv_and_paging() {
    let f = fixture().await;
    let (s, v) = get(&f, "/api/v1/gpus/GPU-aaa/telemetry?metric=DCGM_FI_DEV_GPU_UTIL").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let pts = v["series"][0]["points"].as_array().unwrap();
    assert_eq!(pts.len(), 10);
    assert_eq!(pts[3], serde_json::json!([T0 + 3000, 30.0]));

    let (_, v) = get(&f, "/api/v1/gpus/GPU-aaa/telemetry?metric=DCGM_FI_DEV_GPU_UTIL&step=5s&agg=max").await;
    // Buckets start at multiples of 5 s: T0 is 34 s past the minute, so the points (k = 0..9 at
    // T0 + k s, util = 10k) fall in [30,35) k=0, [35,40) k=1..5, [40,45) k=6..9.
    let pts = v["series"][0]["points"].as_array().unwrap();
    let b0 = T0 - 4000;
    assert_eq!(pts, &vec![serde_json::json!([b0, 0.0]), serde_json::json!([b0 + 5000, 50.0]), serde_json::json!([b0 + 10000, 90.0])], "{v}");

    // Paging: 20 points across two metrics, 7 per page, every point exactly once.
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let uri = match &cursor {
            Some(c) => format!("/api/v1/gpus/GPU-aaa/telemetry?limit=7&cursor={}", c.replace('@', "%40")),
            None => "/api/v1/gpus/GPU-aaa/telemetry?limit=7".to_owned(),
        };
        let (s, v) = get(&f, &uri).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        seen += v["series"].as_array().unwrap().iter().map(|s| s["points"].as_array().unwrap().len()).sum::<usize>();
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, 20);

    let (s, body) = call(&f, Request::get("/api/v1/gpus/GPU-bbb/telemetry?metric=DCGM_FI_DEV_GPU_TEMP&format=csv").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with("timestamp,host,gpu_uuid,metric,value\n2025-07-18T20:42:34Z,node-1,GPU-bbb,DCGM_FI_DEV_GPU_TEMP,40\n"), "{text}");
}

#[tokio::test]
async fn telemetry_bad_parameters_say_which_and_why() {
    let f = fixture().await;
    for (uri, needle) in [
        ("/api/v1/gpus/GPU-aaa/telemetry?metrc=x", "unknown parameter 'metrc'"),
        ("/api/v1/gpus/GPU-aaa/telemetry?start=yesterday", "parameter 'start'"),
        ("/api/v1/gpus/GPU-aaa/telemetry?step=1q", "parameter 'step'"),
        ("/api/v1/gpus/GPU-aaa/telemetry?agg=avg", "needs 'step'"),
        ("/api/v1/gpus/GPU-aaa/telemetry?step=1m&agg=median", "parameter 'agg'"),
        ("/api/v1/gpus/GPU-aaa/telemetry?limit=0", "parameter 'limit'"),
        ("/api/v1/gpus/GPU-aaa/telemetry?start=-1h&end=-2h", "must be after"),
        ("/api/v1/gpus/GPU-aaa/telemetry?metric=NOPE", "has no metric NOPE"),
        ("/api/v1/gpus/GPU-aaa/telemetry?cursor=zzz", "parameter 'cursor'"),
        ("/api/v1/gpus/GPU-aaa/telemetry?format=xml", "parameter 'format'"),
        ("/api/v1/telemetry/aggregate", "parameter 'metric' is required"),
    ] {
        let (s, v) = get(&f, uri).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert!(error_message(&v).contains(needle), "{uri}: {v}");
    }
    let (s, v) = get(&f, "/api/v1/gpus/GPU-zzz/telemetry").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_message(&v).contains("GPU-zzz"));
}

#[tokio::test]
async fn aggregate_per_gpu_average() {
    let f = fixture().await;
    let (s, v) = get(&f, "/api/v1/telemetry/aggregate?metric=DCGM_FI_DEV_GPU_UTIL&agg=avg").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["count"], 2);
    assert_eq!(v["series"][0]["value"], 45.0);
    assert_eq!(v["series"][0]["count"], 10);
}

fn post_csv(body: &str, ctype: &str) -> Request<Body> {
    Request::post("/api/v1/telemetry").header("content-type", ctype).header("x-gpufleet-first-line", "2").body(Body::from(body.to_owned())).unwrap()
}

const HEADER: &str = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n";

#[tokio::test]
async fn ingest_publishes_good_rows_and_reports_bad_ones_by_line() {
    let f = fixture().await;
    let body = format!(
        "{HEADER}2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-x,H100,h9,,,,50,\n\
         2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-x,H100,h9,,,,fifty,\n\
         2025-07-18T20:42:35Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-x,H100,h9,,,,51,\n"
    );
    let (s, b) = call(&f, post_csv(&body, "text/csv")).await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["rows"], 3);
    assert_eq!(v["rejected"], 1);
    assert_eq!(v["samples"], 2);
    assert_eq!(v["errors"][0]["line"], 3, "{v}");
    let topics = f.state.broker.stats().await.unwrap();
    assert_eq!(topics.iter().find(|t| t.topic == TopicName::new("telemetry")).map(|t| t.published), Some(1));
    // JSON lines go the same way.
    let jl = r#"{"host":"h9","gpu_uuid":"GPU-x","metric":"DCGM_FI_DEV_GPU_TEMP","value":61,"timestamp":"2025-07-18T20:42:34Z"}"#;
    let (s, b) = call(&f, post_csv(jl, "application/x-ndjson")).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let group = GroupName::new("g");
    f.state.broker.create_group(&TopicName::new("telemetry"), &group).await.unwrap();
}

#[tokio::test]
async fn ingest_rejections() {
    let f = fixture().await;
    let (s, b) = call(&f, post_csv("a,b\n1,2\n", "application/xml")).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", String::from_utf8_lossy(&b));
    let (s, _) = call(&f, post_csv("", "text/csv")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let all_bad = format!("{HEADER}x,y\n");
    let (s, b) = call(&f, post_csv(&all_bad, "text/csv")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{}", String::from_utf8_lossy(&b));
    let big = format!("{HEADER}{}", "x".repeat(70 * 1024));
    let (s, _) = call(&f, post_csv(&big, "text/csv")).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let req = Request::post("/api/v1/telemetry").header("content-type", "text/csv").header("x-gpufleet-first-line", "zero").body(Body::from(HEADER)).unwrap();
    assert_eq!(call(&f, req).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_expose_dcgm_names_and_pipeline_counters() {
    let f = fixture().await;
    let (s, b) = call(&f, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(b).unwrap();
    assert!(
        text.contains(r#"DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-aaa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-1"} 90"#),
        "{text}"
    );
    assert!(text.contains("gpufleet_ingest_rows_accepted_total"), "{text}");
    assert!(text.contains("gpufleet_store_samples 40"), "{text}");
}

#[tokio::test]
async fn export_csv_and_parquet() {
    let f = fixture().await;
    let (s, b) = call(&f, Request::get("/api/v1/telemetry/export?format=csv&gpu=GPU-aaa").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(String::from_utf8(b).unwrap().lines().count(), 21, "header + 20 rows");
    let (s, b) = call(&f, Request::get("/api/v1/telemetry/export?format=parquet").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&b[..4], b"PAR1");
}

#[tokio::test]
async fn broker_topics_and_dead_letters() {
    let f = fixture().await;
    let (s, _) = get(&f, "/api/v1/broker/topics").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = get(&f, "/api/v1/broker/topics/nope/dead-letters").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A request for a route that succeeds when permitted (2xx). Creates what it needs (a key to
/// revoke or rotate) with the admin key first.
async fn request_for(f: &Fixture, spec: &RouteSpec) -> Request<Body> {
    let mut path = spec.path.replace("{uuid}", "GPU-aaa").replace("{host}", "node-1").replace("{topic}", "telemetry");
    if path.contains("{prefix}") {
        let (_, v) = call_json(f, Request::post("/api/v1/keys").body(Body::from(r#"{"owner":"target","role":"viewer"}"#)).unwrap()).await;
        path = path.replace("{prefix}", v["prefix"].as_str().unwrap());
    }
    if path.contains("/v1/jobs/{id}") {
        let (_, v) = call_json(f, Request::post("/v1/jobs").header("content-type", "application/json").body(Body::from(CHAT)).unwrap()).await;
        path = path.replace("{id}", v["job_id"].as_str().unwrap());
    }
    if path.starts_with("/api/v1/hosts/{id}") {
        // A host to delete is made first; the others use the registered "node-1".
        let name = match spec.method {
            "DELETE" => {
                let body = format!(r#"{{"name":"gone-{:08x}","agent_url":"http://127.0.0.1:9"}}"#, rand::random::<u32>());
                let (s, v) = call_json(f, Request::post("/api/v1/hosts").body(Body::from(body)).unwrap()).await;
                assert_eq!(s, StatusCode::CREATED, "{v}");
                v["name"].as_str().unwrap().to_owned()
            }
            _ => "node-1".to_owned(),
        };
        path = path.replace("{id}", &name);
    }
    if path == "/api/v1/silences/{id}" {
        let (s, v) = call_json(f, Request::post("/api/v1/silences").body(Body::from(SILENCE)).unwrap()).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        path = path.replace("{id}", v["id"].as_str().unwrap());
    }
    // A DLQ id that does not exist: the guard is what is checked (404 after it, not 401/403).
    let path = path.replace("{id}", "00000000000000000000000000000000");
    let path = match spec.path {
        "/api/v1/telemetry/aggregate" => format!("{path}?metric=DCGM_FI_DEV_GPU_UTIL"),
        "/api/v1/hosts/{id}/trends" => format!("{path}?metric=disk_used_pct&range=7d"),
        _ => path,
    };
    let body = match (spec.method, spec.path) {
        ("POST", "/api/v1/telemetry") => Body::from(format!("{HEADER}2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-x,H100,h9,,,,50,\n")),
        ("POST", "/api/v1/keys") => Body::from(r#"{"owner":"new","role":"viewer"}"#),
        ("POST", "/v1/chat/completions") | ("POST", "/v1/jobs") => Body::from(CHAT),
        ("POST", "/v1/completions") => Body::from(r#"{"model":"m1","prompt":"hi","max_tokens":4}"#),
        ("POST", "/v1/embeddings") => Body::from(r#"{"model":"m1","input":"hi"}"#),
        ("POST", "/api/v1/hosts") => Body::from(format!(r#"{{"name":"new-{:08x}","agent_url":"http://127.0.0.1:9"}}"#, rand::random::<u32>())),
        ("PUT", "/api/v1/hosts/{id}") => Body::from(r#"{"watchdog":true}"#),
        ("POST", "/api/v1/silences") => Body::from(SILENCE),
        _ => Body::empty(),
    };
    let ctype = if spec.path.starts_with("/v1/") { "application/json" } else { "text/csv" };
    Request::builder().method(spec.method).uri(path).header("content-type", ctype).body(body).unwrap()
}

const SILENCE: &str = r#"{"matchers":[{"label":"host","value":"node-1"}],"duration":"1h","comment":"maintenance"}"#;

const CHAT: &str = r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#;

/// Routes whose request names an object that may not exist: passing the guard may end in 404.
fn may_404(path: &str) -> bool {
    path.starts_with("/api/v1/dlq/")
}

async fn call_json(f: &Fixture, req: Request<Body>) -> (StatusCode, Value) {
    let (s, b) = call(f, req).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn with_key(mut req: Request<Body>, header_value: &str) -> Request<Body> {
    req.headers_mut().insert("authorization", header_value.parse().unwrap());
    req
}

#[tokio::test]
async fn every_route_is_declared_documented_and_guarded_as_the_permission_table_says() {
    let limits = RateLimitConfig { management_per_minute: std::num::NonZeroU32::new(100_000).unwrap(), ..RateLimitConfig::default() };
    let f = fixture_with(limits).await;
    // Make the dead-letter route's topic exist.
    call(&f, request_for(&f, ROUTES.iter().find(|r| r.path == "/api/v1/telemetry").unwrap()).await).await;
    let auth = f.state.auth.clone().unwrap();
    let now = crate::state::now_ms();
    // An expired and a revoked key.
    let expired = gpufleet_auth::ApiKey::generate();
    let mut rec = gpufleet_auth::KeyRecord::new(expired.prefix(), expired.hash(), Owner::new("old").unwrap(), Role::Admin, now - 10_000);
    rec.expires_at_ms = Some(now - 1);
    auth.store().create_key(&rec).await.unwrap();
    let revoked = auth
        .create_key(NewKey { owner: Owner::new("gone").unwrap(), role: Role::Admin, label: None, expires_at_ms: None, allowed_models: None }, &Actor::default(), now)
        .await
        .unwrap();
    auth.revoke_key(&revoked.key.prefix(), &Actor::default(), now).await.unwrap();
    let table = gpufleet_auth::PermissionTable::default();
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();

    for spec in ROUTES {
        assert!(doc["paths"][spec.path][spec.method.to_ascii_lowercase()].is_object(), "{} {} missing from openapi.json", spec.method, spec.path);
        match spec.guard {
            Guard::Public | Guard::Metrics => {
                let (s, _) = call_raw(&f.state, request_for(&f, spec).await).await;
                assert!(s.is_success(), "{} {} must answer without a key: {s}", spec.method, spec.path);
            }
            Guard::Need(perm, _) => {
                let refused = [
                    ("no key", None),
                    ("malformed", Some("Bearer not-a-key".to_owned())),
                    ("unknown key", Some(format!("Bearer {}", gpufleet_auth::ApiKey::generate().expose_secret()))),
                    ("expired key", Some(format!("Bearer {}", expired.expose_secret()))),
                    ("revoked key", Some(format!("Bearer {}", revoked.key.expose_secret()))),
                ];
                for (what, header) in refused {
                    let mut req = request_for(&f, spec).await;
                    req.headers_mut().remove("authorization");
                    if let Some(h) = header {
                        req = with_key(req, &h);
                    }
                    let (s, _) = call_raw(&f.state, req).await;
                    assert_eq!(s, StatusCode::UNAUTHORIZED, "{} {} with {what}", spec.method, spec.path);
                }
                for role in Role::ALL {
                    let req = with_key(request_for(&f, spec).await, &format!("Bearer {}", f.keys[&role]));
                    let (s, body) = call_raw(&f.state, req).await;
                    if table.allows(role, perm) {
                        let ok = s.is_success() || (may_404(spec.path) && s == StatusCode::NOT_FOUND);
                        assert!(ok, "{} {} as {role}: {s} {}", spec.method, spec.path, String::from_utf8_lossy(&body));
                    } else {
                        assert_eq!(s, StatusCode::FORBIDDEN, "{} {} as {role}", spec.method, spec.path);
                    }
                }
            }
        }
    }
    let documented = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum::<usize>();
    assert_eq!(documented, ROUTES.len(), "openapi.json documents a route the router lacks");
}

#[tokio::test]
async fn brute_force_is_rate_limited_and_audited() {
    let f = fixture().await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..40 {
        let req = with_key(Request::get("/api/v1/keys").body(Body::empty()).unwrap(), &format!("Bearer {}", gpufleet_auth::ApiKey::generate().expose_secret()));
        let resp = ApiService::new(f.state.clone()).oneshot(req).await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(resp.status());
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(*statuses.last().unwrap(), StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    // The API itself is now closed to this IP for a while, so read the audit log directly.
    let auth = f.state.auth.clone().unwrap();
    auth.audit_log().flush().await.unwrap();
    let count = |action: &str| {
        let filter = gpufleet_auth::AuditFilter { action: Some(action.into()), limit: 1000, ..Default::default() };
        let store = auth.store().clone();
        async move { store.query_audit(&filter).await.unwrap().len() }
    };
    assert!(count("auth.failed").await >= 25);
    assert!(count("auth.rate_limited").await >= 1);
    // And the admin key from the same IP is refused too: the per-IP budget comes first.
    assert_eq!(call(&f, Request::get("/api/v1/keys").body(Body::empty()).unwrap()).await.0, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn revoked_key_stops_at_once_and_changes_are_audited_in_an_intact_chain() {
    let f = fixture().await;
    let (s, created) = call_json(&f, Request::post("/api/v1/keys").body(Body::from(r#"{"owner":"bob","role":"viewer","expires_in":"1d"}"#)).unwrap()).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let prefix = created["prefix"].as_str().unwrap().to_owned();
    let as_bob = || with_key(Request::get("/api/v1/gpus").body(Body::empty()).unwrap(), &format!("Bearer {key}"));
    assert_eq!(call_raw(&f.state, as_bob()).await.0, StatusCode::OK);
    let (_, listed) = get(&f, "/api/v1/keys").await;
    assert!(!listed.to_string().contains(&key), "listing must never show a key");
    let (s, _) = call(&f, Request::delete(format!("/api/v1/keys/{prefix}")).body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(call_raw(&f.state, as_bob()).await.0, StatusCode::UNAUTHORIZED);
    let (_, audit) = get(&f, "/api/v1/audit?action=request").await;
    let routes: Vec<&str> = audit["records"].as_array().unwrap().iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert!(routes.contains(&"/api/v1/keys") && routes.contains(&"/api/v1/keys/{prefix}"), "{audit}");
    let (_, v) = get(&f, "/api/v1/audit/verify").await;
    assert_eq!(v["intact"], true, "{v}");
    // Bad bodies say what to fix.
    let (s, v) = call_json(&f, Request::post("/api/v1/keys").body(Body::from(r#"{"owner":"x","role":"root"}"#)).unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_message(&v).contains("role"), "{v}");
}

#[tokio::test]
async fn responses_carry_security_headers_and_request_ids() {
    let f = fixture().await;
    let req = Request::get("/health").header("x-request-id", "abc-123").body(Body::empty()).unwrap();
    let resp = ApiService::new(f.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert!(resp.headers().get("access-control-allow-origin").is_none(), "CORS is off by default");
}

#[tokio::test]
async fn metrics_can_require_a_key() {
    let mut f = fixture().await;
    let mut settings = (*f.state.settings).clone();
    settings.metrics_public = false;
    f.state.settings = Arc::new(settings);
    let (s, _) = call_raw(&f.state, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(&f, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
}

#[test]
fn every_gateway_route_is_guarded() {
    for (method, path) in gpufleet_gateway::GATEWAY_ROUTES {
        assert!(super::guard_of(method, path).is_some(), "gateway route {method} {path} has no guard in ROUTES");
    }
}

#[tokio::test]
async fn gateway_answers_through_auth_and_refuses_models_outside_the_key() {
    let f = fixture().await;
    let (s, v) = call_json(&f, Request::post("/v1/chat/completions").header("content-type", "application/json").body(Body::from(CHAT)).unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    // A key limited to another model gets the OpenAI-style 403.
    let auth = f.state.auth.clone().unwrap();
    let new = NewKey { owner: Owner::new("limited").unwrap(), role: Role::User, label: None, expires_at_ms: None, allowed_models: Some(vec!["other".into()]) };
    let limited = auth.create_key(new, &Actor::default(), crate::state::now_ms()).await.unwrap();
    let req = with_key(
        Request::post("/v1/chat/completions").header("content-type", "application/json").body(Body::from(CHAT)).unwrap(),
        &format!("Bearer {}", limited.key.expose_secret()),
    );
    let (s, b) = call_raw(&f.state, req).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string(), "{v}");
}

#[test]
fn inference_calls_are_not_audited_but_every_other_change_is() {
    use super::audited;
    assert!(!audited("POST", "/v1/chat/completions"));
    assert!(!audited("POST", "/v1/embeddings"));
    assert!(audited("POST", "/v1/jobs"));
    assert!(audited("POST", "/api/v1/telemetry"));
    assert!(audited("DELETE", "/api/v1/keys/{prefix}"));
    assert!(!audited("GET", "/api/v1/keys"));
}

#[tokio::test]
async fn host_changes_are_audited_and_viewers_cannot_make_them() {
    let f = fixture().await;
    let as_role = |role: Role, req: Request<Body>| with_key(req, &format!("Bearer {}", f.keys[&role]));
    let post = || Request::post("/api/v1/hosts").body(Body::from(r#"{"name":"audited","agent_url":"http://127.0.0.1:9"}"#)).unwrap();
    assert_eq!(call_raw(&f.state, as_role(Role::Viewer, post())).await.0, StatusCode::FORBIDDEN);
    let (s, b) = call_raw(&f.state, as_role(Role::Operator, post())).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let put = Request::put("/api/v1/hosts/audited").body(Body::from(r#"{"maintenance":true}"#)).unwrap();
    assert_eq!(call_raw(&f.state, as_role(Role::Operator, put)).await.0, StatusCode::OK);
    let (s, _) = call_raw(&f.state, as_role(Role::Operator, post())).await;
    assert_eq!(s, StatusCode::CONFLICT, "registering twice");
    let (_, audit) = get(&f, "/api/v1/audit?action=request").await;
    let records = audit["records"].as_array().unwrap();
    let routes: Vec<(&str, &str)> = records.iter().map(|r| (r["route"].as_str().unwrap(), r["outcome"].as_str().unwrap_or(""))).collect();
    assert!(routes.contains(&("/api/v1/hosts", "success")), "{audit}");
    assert!(routes.contains(&("/api/v1/hosts/{id}", "success")), "{audit}");
    assert!(routes.iter().any(|(r, o)| *r == "/api/v1/hosts" && *o != "success"), "the refused duplicate is audited as failed: {audit}");
}

mod fast;
mod lane;
