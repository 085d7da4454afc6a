//! Test helpers: a tiny fake Docker Engine API on a unix socket, stub model servers, polling.

#![allow(dead_code, unreachable_pub)]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Polls `f` until it returns `Some`, at most `secs` seconds.
pub async fn eventually<T, F: Future<Output = Option<T>>>(secs: u64, what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(id, name, status, health, exit code, restart policy, oom)`.
pub type FakeContainer = (&'static str, &'static str, &'static str, Option<&'static str>, i64, &'static str, bool);

/// The containers of the fake engine.
pub const FAKE_CONTAINERS: [FakeContainer; 4] = [
    ("aaa111", "web", "running", Some("healthy"), 0, "always", false),
    ("bbb222", "flaky", "running", Some("unhealthy"), 0, "always", false),
    ("ccc333", "batch", "exited", None, 0, "no", false),
    ("ddd444", "crashed", "exited", None, 139, "no", false),
];

/// What the fake engine saw.
#[derive(Default)]
pub struct FakeDocker {
    pub restarts: Mutex<BTreeMap<String, u64>>,
    pub requests: Mutex<Vec<String>>,
}

fn find(id: &str) -> Option<FakeContainer> {
    FAKE_CONTAINERS.iter().copied().find(|c| c.0 == id || c.1 == id)
}

async fn list(State(s): State<Arc<FakeDocker>>) -> Json<Value> {
    s.requests.lock().push("GET /containers/json".into());
    Json(Value::Array(FAKE_CONTAINERS.iter().map(|c| json!({"Id": c.0, "Names": [format!("/{}", c.1)], "State": c.2})).collect()))
}

async fn inspect(State(s): State<Arc<FakeDocker>>, Path(id): Path<String>) -> impl IntoResponse {
    s.requests.lock().push(format!("GET /containers/{id}/json"));
    let Some((id, name, status, health, exit, policy, oom)) = find(&id) else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": format!("No such container: {id}")})));
    };
    let restarts = s.restarts.lock().get(id).copied().unwrap_or(0);
    let mut state = json!({"Status": status, "Running": status == "running", "Restarting": false, "OOMKilled": oom, "ExitCode": exit});
    if let Some(h) = health {
        let log: Vec<Value> = (0..6).map(|i| json!({"ExitCode": if h == "healthy" { 0 } else { 1 }, "Output": format!("probe {i} {h}\n")})).collect();
        state["Health"] = json!({"Status": h, "FailingStreak": 0, "Log": log});
    }
    (
        StatusCode::OK,
        Json(json!({
            "Id": id, "Name": format!("/{name}"), "RestartCount": restarts, "State": state,
            "Config": {"Image": format!("example/{name}:1")},
            "HostConfig": {"RestartPolicy": {"Name": policy, "MaximumRetryCount": 0}}
        })),
    )
}

async fn restart(State(s): State<Arc<FakeDocker>>, Path(id): Path<String>) -> impl IntoResponse {
    s.requests.lock().push(format!("POST /containers/{id}/restart"));
    match find(&id) {
        Some(c) => {
            *s.restarts.lock().entry(c.0.to_owned()).or_insert(0) += 1;
            StatusCode::NO_CONTENT.into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"message": format!("No such container: {id}")}))).into_response(),
    }
}

/// Serves the fake engine on `<dir>/docker.sock` until the returned sender is dropped.
pub async fn fake_docker(dir: &std::path::Path) -> (std::path::PathBuf, Arc<FakeDocker>, tokio::sync::oneshot::Sender<()>) {
    let path = dir.join("docker.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let state = Arc::new(FakeDocker::default());
    let app = Router::new()
        .route("/containers/json", get(list))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/restart", post(restart))
        .with_state(state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (path, state, tx)
}

/// Serves `app` on 127.0.0.1:0; returns its base URL.
pub async fn serve_stub(app: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

/// A port on 127.0.0.1 nothing listens on (bound, then released).
pub async fn closed_port_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}
