//! Test helpers: a loopback HTTP receiver that records what it is sent and can fail or hang the
//! first requests, and a polling `eventually`.

#![allow(dead_code, unreachable_pub)]

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the receiver does with the first requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehave {
    /// Answer 500.
    Fail,
    /// Never answer (the client's timeout must fire).
    Hang,
    /// Answer 400 with a Telegram-style error.
    BadRequest,
}

#[derive(Default)]
pub struct Recorded {
    /// `(path, body)` of every request, in arrival order (including the failed ones).
    pub requests: Mutex<Vec<(String, serde_json::Value)>>,
    /// Requests answered with success.
    pub accepted: Mutex<Vec<(String, serde_json::Value)>>,
    calls: AtomicU32,
    misbehave_first: AtomicU32,
    mode: Mutex<Option<Misbehave>>,
}

impl Recorded {
    pub fn accepted(&self) -> Vec<(String, serde_json::Value)> {
        self.accepted.lock().clone()
    }
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub rec: Arc<Recorded>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn record(State(rec): State<Arc<Recorded>>, uri: Uri, body: Bytes) -> axum::response::Response {
    let n = rec.calls.fetch_add(1, Ordering::SeqCst);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    rec.requests.lock().push((uri.path().to_owned(), json.clone()));
    if n < rec.misbehave_first.load(Ordering::SeqCst) {
        let mode = *rec.mode.lock();
        match mode {
            Some(Misbehave::Fail) => return (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response(),
            Some(Misbehave::Hang) => std::future::pending::<()>().await,
            Some(Misbehave::BadRequest) => {
                return (StatusCode::BAD_REQUEST, Json(serde_json::json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}))).into_response()
            }
            None => {}
        }
    }
    rec.accepted.lock().push((uri.path().to_owned(), json));
    (StatusCode::OK, Json(serde_json::json!({"ok": true}))).into_response()
}

async fn telegram(State(rec): State<Arc<Recorded>>, Path(_bot): Path<String>, uri: Uri, body: Bytes) -> axum::response::Response {
    record(State(rec), uri, body).await
}

/// Starts a receiver on 127.0.0.1:0 whose first `n` requests misbehave as `mode`.
pub async fn receiver(n: u32, mode: Option<Misbehave>) -> Receiver {
    let rec = Arc::new(Recorded::default());
    rec.misbehave_first.store(n, Ordering::SeqCst);
    *rec.mode.lock() = mode;
    let app = Router::new()
        .route("/hook", post(record))
        .route("/slack", post(record))
        .route("/{bot}/sendMessage", post(telegram))
        .with_state(rec.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { addr, rec, task }
}

/// Polls `f` every 20 ms until it gives `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port on 127.0.0.1 that refuses connections (bound, then closed).
pub async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}
