//! Rough proxy overhead: a bounded wrk-like loop (fixed connections, fixed duration, keep-alive,
//! 127.0.0.1 only) against a fast mock backend directly and through the gateway.
//!
//! `cargo run -p gpufleet-gateway --release --example proxy_overhead -- [seconds] [connections...]`
//! (defaults: 3 s, 16 and 64 connections). Prints one line per target and connection count.

use gpufleet_broker::{BrokerConfig, EmbeddedBroker, FsyncPolicy};
use gpufleet_gateway::{
    router, BackendConfig, BackendKind, Gateway, GatewayConfig, SqliteJobStore,
};
use gpufleet_sim::{MockConfig, MockServer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &str =
    r#"{"model":"bench","messages":[{"role":"user","content":"hi"}],"max_tokens":16}"#;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: u64 = args
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .clamp(1, 30);
    let mut conns: Vec<usize> = args
        .iter()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .map(|c: usize| c.clamp(1, 256))
        .collect();
    if conns.is_empty() {
        conns = vec![16, 64];
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(Duration::from_secs(secs), conns))
}

async fn run(duration: Duration, conns: Vec<usize>) -> anyhow::Result<()> {
    let mock = MockServer::start(MockConfig {
        slots: 512,
        max_tokens: 16,
        ..MockConfig::new("bench")
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let mut config = GatewayConfig::default();
    config.backends.push(BackendConfig {
        name: "mock".into(),
        kind: BackendKind::Llamacpp,
        url: mock.url(),
        models: vec!["bench".into()],
        max_concurrency: 512,
        weight: 1.0,
        api_key: None,
        gpus: vec![],
    });
    let mut bc = BrokerConfig::new(dir.path().join("broker"));
    bc.fsync = FsyncPolicy::Never;
    let broker = Arc::new(EmbeddedBroker::open(bc)?);
    let store = Arc::new(SqliteJobStore::open(&dir.path().join("jobs.db")).await?);
    // No workers: the probe and job workers are not part of the request path.
    let (gw, _workers) = Gateway::new(config.validate()?, broker, store, None)?;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let gw_addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router(gw)).await;
    });
    for &c in &conns {
        let direct = load(mock.addr(), c, duration).await?;
        let proxied = load(gw_addr, c, duration).await?;
        for (name, r) in [("direct", &direct), ("gpufleet", &proxied)] {
            println!(
                "{name:>8} c={c:<3} rps={:>8.0} p50_ms={:.3} p99_ms={:.3} added_p99_ms={:.3} errors={}",
                r.rps,
                r.p50_ms,
                r.p99_ms,
                r.p99_ms - direct.p99_ms,
                r.errors
            );
        }
    }
    server.abort();
    Ok(())
}

struct Report {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

async fn load(addr: SocketAddr, conns: usize, duration: Duration) -> anyhow::Result<Report> {
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let request = request.clone();
        tasks.spawn(async move { connection(addr, request.into_bytes(), deadline).await });
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, e) = r??;
        lat.extend(l);
        errors += e;
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d: &Duration| d.as_secs_f64() * 1000.0)
    };
    Ok(Report {
        rps: lat.len() as f64 / duration.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    })
}

/// One keep-alive connection sending requests back to back until `deadline`.
async fn connection(
    addr: SocketAddr,
    request: Vec<u8>,
    deadline: Instant,
) -> anyhow::Result<(Vec<Duration>, u64)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut buf = vec![0u8; 16 << 10];
    while Instant::now() < deadline {
        let t = Instant::now();
        stream.write_all(&request).await?;
        let mut have = 0;
        let (head_end, body_len, ok) = loop {
            let n = stream.read(&mut buf[have..]).await?;
            anyhow::ensure!(n > 0, "connection closed");
            have += n;
            if let Some(end) = memchr::memmem::find(&buf[..have], b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end])?.to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| anyhow::anyhow!("no content-length"))?;
                break (end + 4, len, head.starts_with("http/1.1 200"));
            }
        };
        while have < head_end + body_len {
            let n = stream.read(&mut buf[have..]).await?;
            anyhow::ensure!(n > 0, "connection closed");
            have += n;
        }
        lat.push(t.elapsed());
        if !ok {
            errors += 1;
        }
    }
    Ok((lat, errors))
}
