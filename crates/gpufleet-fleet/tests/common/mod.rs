//! Shared test support: a stub agent serving many hosts on one loopback port (host `i` under
//! `/h/{i}`) with a scripted answer per host, request counters, the order of requests and the
//! most requests in flight at once, requests held until the test releases them; and helpers to build a fleet over a SQLite store.

#![allow(dead_code, unreachable_pub)]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gpufleet_agent::wire::{Component, ComponentKind, HealthReport, HostMetrics, Status};
use gpufleet_fleet::{Fleet, FleetConfig, FleetSettings, FleetStore, FleetWorkers, HostInput, LocalLeases, SqliteFleetStore};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What one stub host answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// A report with one `disk:/` component of this status.
    Report(Status),
    /// HTTP 500.
    ServerError,
    /// 200 with a body that is not a report.
    Garbage,
    /// A healthy report after this long.
    Slow(Duration),
    /// A healthy report (or host metrics) once [`Stub::release_held`] is called; until then the
    /// request waits (counted by [`Stub::held`]).
    Held,
}

#[derive(Default)]
struct StubState {
    answers: Mutex<Vec<Answer>>,
    counts: Mutex<Vec<u64>>,
    order: Mutex<Vec<usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    held: AtomicUsize,
    released: tokio::sync::watch::Sender<bool>,
}

impl StubState {
    /// Waits, when host `i` answers [`Answer::Held`], until the test releases held requests.
    async fn hold(&self, i: usize) {
        if self.answers.lock().get(i) != Some(&Answer::Held) {
            return;
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        let mut released = self.released.subscribe();
        let _ = released.wait_for(|r| *r).await;
    }
}

/// A running stub agent.
pub struct Stub {
    pub base: String,
    state: Arc<StubState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    /// Serves `answers.len()` hosts.
    pub async fn start(answers: Vec<Answer>) -> Stub {
        let n = answers.len();
        let state = Arc::new(StubState { answers: Mutex::new(answers), counts: Mutex::new(vec![0; n]), ..Default::default() });
        let app = Router::new()
            .route("/h/{i}/health", get(health))
            .route("/h/{i}/metrics/host", get(metrics))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("stub serves");
        });
        Stub { base, state, task }
    }

    /// The agent URL of host `i`.
    pub fn url(&self, i: usize) -> String {
        format!("{}/h/{i}", self.base)
    }

    /// Requests host `i` got.
    pub fn count(&self, i: usize) -> u64 {
        self.state.counts.lock()[i]
    }

    /// Host indexes in the order their requests arrived.
    pub fn order(&self) -> Vec<usize> {
        self.state.order.lock().clone()
    }

    /// The most requests in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests that reached an [`Answer::Held`] (waiting or released).
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Lets every held request (and every later one) answer.
    pub fn release_held(&self) {
        self.state.released.send_replace(true);
    }

    /// Changes host `i`'s answer.
    pub fn set(&self, i: usize, a: Answer) {
        self.state.answers.lock()[i] = a;
    }
}

async fn health(State(s): State<Arc<StubState>>, Path(i): Path<usize>) -> Response {
    let Some(answer) = s.answers.lock().get(i).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    s.counts.lock()[i] += 1;
    s.order.lock().push(i);
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let resp = match answer {
        Answer::Report(status) => Json(report(i, status)).into_response(),
        Answer::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        Answer::Garbage => (StatusCode::OK, "{\"not\": \"a report\"}").into_response(),
        Answer::Slow(d) => {
            tokio::time::sleep(d).await;
            Json(report(i, Status::Ok)).into_response()
        }
        Answer::Held => {
            s.hold(i).await;
            Json(report(i, Status::Ok)).into_response()
        }
    };
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    resp
}

async fn metrics(State(s): State<Arc<StubState>>, Path(i): Path<usize>) -> Json<HostMetrics> {
    s.hold(i).await;
    Json(HostMetrics { host: format!("stub-{i}"), time_ms: gpufleet_core::time::now_ms(), ..Default::default() })
}

fn report(i: usize, status: Status) -> HealthReport {
    let disk = Component { name: "disk:/".into(), kind: ComponentKind::Disk, status, message: format!("disk is {}", status.as_str()), detail: serde_json::Value::Null };
    HealthReport::new(format!("stub-{i}"), "stub", gpufleet_core::time::now_ms(), vec![disk])
}

/// A URL on which nothing listens (connection refused).
pub async fn dead_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

/// Test settings: short timeout and backoff.
pub fn settings(unreachable_after: u32, concurrency: usize) -> FleetSettings {
    let cfg = FleetConfig {
        health_interval: "200ms".into(),
        health_timeout: "150ms".into(),
        health_retry_backoff: "5ms".into(),
        metrics_interval: "200ms".into(),
        unreachable_after,
        health_concurrency: concurrency,
        ..FleetConfig::default()
    };
    cfg.validate().expect("test settings")
}

/// A fleet over a fresh SQLite store in `dir` with in-process leases.
pub async fn fleet(dir: &std::path::Path, settings: FleetSettings) -> (Arc<Fleet>, FleetWorkers, Arc<SqliteFleetStore>) {
    let store = Arc::new(SqliteFleetStore::open(&dir.join("fleet.db")).await.expect("open store"));
    let (fleet, workers) = Fleet::open(store.clone(), Arc::new(LocalLeases::new()), settings).await.expect("fleet");
    (fleet, workers, store)
}

/// Registers a host.
pub async fn register(fleet: &Fleet, name: &str, agent_url: &str) -> i64 {
    let input = HostInput { name: name.into(), agent_url: agent_url.into(), ..Default::default() };
    fleet.register(&input).await.expect("register").id
}

/// The state of a host now.
pub async fn state_of(store: &dyn FleetStore, id: i64) -> gpufleet_fleet::HostState {
    store.get_host(id).await.expect("get").expect("host").state
}
