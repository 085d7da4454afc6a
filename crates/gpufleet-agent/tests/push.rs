//! GPU samples pushed to a stub of `POST /api/v1/telemetry`: the lines decode with the server's
//! own JSON-lines decoder, use canonical DCGM names, carry the API key, and a failed push is
//! retried until it lands.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{eventually, serve_stub};
use gpufleet_agent::push::{gpu_lines, PushBuffer, PushWorker};
use gpufleet_agent::sim::host::SimHostState;
use gpufleet_agent::Scenario;
use gpufleet_runtime::{Shutdown, Supervisor};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Ingest {
    calls: AtomicU32,
    bodies: Mutex<Vec<(String, String, Bytes)>>,
}

async fn ingest(State(s): State<Arc<Ingest>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = s.calls.fetch_add(1, Ordering::SeqCst);
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if n < 2 {
        return StatusCode::SERVICE_UNAVAILABLE; // the first two pushes fail: the worker must retry
    }
    s.bodies.lock().push((h("authorization"), h("content-type"), body));
    StatusCode::OK
}

#[test]
fn lines_decode_with_the_servers_decoder_and_use_dcgm_names() {
    let host = SimHostState::new("gpu-node-1".into(), 9, 2, Scenario::GpuXid, None);
    let m = host.metrics(1_700_000_000_000);
    let lines = gpu_lines(&m.host, m.time_ms, &m.gpus);
    assert_eq!(lines.len(), 2 * 11);
    let body = lines.join("\n");
    let (batch, rows, errors) = gpufleet_telemetry::ingest::decode_jsonl(body.as_bytes(), 1, 0);
    assert_eq!((rows, errors.count), (22, 0), "{:?}", errors.first);
    assert_eq!(batch.len(), 22);
    assert!(batch.points.iter().all(|p| p.ts_ms == 1_700_000_000_000));
    let known: Vec<&str> = gpufleet_core::metric_names::METRIC_ALIASES.iter().map(|a| a.1).collect();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let metric = v["metric"].as_str().unwrap();
        assert!(known.contains(&metric), "{metric} is not a canonical DCGM name");
        assert_eq!(v["host"], "gpu-node-1");
    }
    // FB in MiB, as DCGM reports it.
    let fb_total = lines.iter().find(|l| l.contains("DCGM_FI_DEV_FB_TOTAL")).unwrap();
    assert!(fb_total.contains("\"value\":81920.0"), "{fb_total}");
    // GPU 3 does not exist on a 2-GPU host, so no XID here; on 8 GPUs GPU 3 reports XID 79.
    let big = SimHostState::new("n".into(), 9, 8, Scenario::GpuXid, None).metrics(0);
    let xid = gpu_lines("n", 0, &big.gpus).into_iter().filter(|l| l.contains("XID_ERRORS") && l.contains("\"value\":79.0")).count();
    assert_eq!(xid, 1);
}

#[tokio::test]
async fn push_worker_retries_until_accepted_then_empties_the_buffer() {
    let state = Arc::new(Ingest::default());
    let url = serve_stub(Router::new().route("/api/v1/telemetry", post(ingest)).with_state(state.clone())).await;
    let host = SimHostState::new("gpu-node-2".into(), 1, 4, Scenario::Healthy, None);
    let buffer = Arc::new(PushBuffer::new(1_000));
    let m = host.metrics(1_000);
    buffer.extend(gpu_lines(&m.host, m.time_ms, &m.gpus));
    let m = host.metrics(2_000);
    buffer.extend(gpu_lines(&m.host, m.time_ms, &m.gpus));
    let total = buffer.len();
    assert_eq!(total, 2 * 4 * 11);

    let stop = Shutdown::new();
    let mut sup = Supervisor::new(stop.clone());
    sup.spawn(PushWorker::new(&url, "gf_ingest_key", Duration::from_millis(20), buffer.clone()));
    let statuses = sup.status_handle();
    eventually(30, "buffer pushed", || {
        let b = buffer.clone();
        async move { b.is_empty().then_some(()) }
    })
    .await;
    sup.shutdown(Duration::from_secs(5)).await;

    assert!(state.calls.load(Ordering::SeqCst) >= 3);
    let bodies = state.bodies.lock().clone();
    let lines: usize = bodies.iter().map(|b| b.2.split(|c| *c == b'\n').filter(|l| !l.is_empty()).count()).sum();
    assert_eq!(lines, total);
    assert_eq!(buffer.pushed() as usize, total);
    assert_eq!(buffer.dropped(), 0);
    for (auth, ctype, _) in &bodies {
        assert_eq!(auth, "Bearer gf_ingest_key");
        assert_eq!(ctype, "application/x-ndjson");
    }
    let s = &statuses.snapshot()[0];
    assert_eq!(s.name, "agent-push");
    assert!(s.failures >= 2 && s.successes >= 1, "{s:?}");
}
