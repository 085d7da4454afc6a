//! `gpufleet mock-backend`: a llama.cpp-compatible model server simulator (from `gpufleet-sim`)
//! for tests, benchmarks and the demo. Loopback by default; exits on SIGINT/SIGTERM, or by itself
//! after `--crash-after` requests (failure injection).

use anyhow::{Context, Result};
use gpufleet_runtime::Shutdown;
use gpufleet_sim::{MockBackend, MockConfig};

/// Flags of `mock-backend`.
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: String,
    /// Model name it serves.
    #[arg(long, default_value = "mock-model")]
    pub model: String,
    /// Parallel slots.
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// Time to first token (ms).
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// Generation speed (0 = no pacing).
    #[arg(long, default_value_t = 200.0)]
    pub tokens_per_s: f64,
    /// Probability of a 500 answer.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Probability of never answering.
    #[arg(long, default_value_t = 0.0)]
    pub hang_rate: f64,
    /// Delay before response headers (ms).
    #[arg(long, default_value_t = 0)]
    pub slow_first_byte_ms: u64,
    /// Answer 503 "Loading model" for this long after start (ms).
    #[arg(long, default_value_t = 0)]
    pub loading_ms: u64,
    /// Answer 503 when all slots are busy instead of waiting for one.
    #[arg(long)]
    pub reject_when_full: bool,
    /// Exit (as a crash, status 3) after this many requests.
    #[arg(long)]
    pub crash_after: Option<u64>,
}

/// Runs the simulator until a signal (or the injected crash).
pub async fn run(a: &MockArgs, shutdown: Shutdown) -> Result<()> {
    let cfg = MockConfig {
        model: a.model.clone(),
        slots: a.slots,
        latency_ms: a.latency_ms,
        tokens_per_s: a.tokens_per_s,
        fail_rate: a.fail_rate,
        hang_rate: a.hang_rate,
        slow_first_byte_ms: a.slow_first_byte_ms,
        loading_for_ms: a.loading_ms,
        queue_when_full: !a.reject_when_full,
        crash_after: a.crash_after,
        ..MockConfig::new(&a.model)
    };
    let listener = tokio::net::TcpListener::bind(&a.listen).await.with_context(|| format!("binding {}", a.listen))?;
    let addr = listener.local_addr()?;
    println!("mock llama.cpp backend for model {} on http://{addr} ({} slots)", a.model, a.slots);
    let backend = MockBackend::new(cfg);
    let handle = backend.handle();
    tokio::select! {
        r = backend.serve(listener, async move { shutdown.wait().await }) => r.context("mock backend"),
        _ = handle.crash_requested() => {
            eprintln!("mock backend: crashing after {} requests, as asked", a.crash_after.unwrap_or(0));
            std::process::exit(3);
        }
    }
}
