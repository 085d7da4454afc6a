//! `gpufleet bench auth`: what authentication + permission check + rate limit + audit add to a
//! request on a hot key. The same app (real embedded backends, real SQLite metadata store and
//! audit writer) is called in-process with and without the auth layer, interleaved request by
//! request so both see the same machine state, on a read route whose handler does almost nothing
//! (`GET /api/v1/openapi.json`) and on a mutating route that is audited (`POST /api/v1/telemetry`
//! with a header-only body). Reports p50/p99 of each and the p99 difference (target ≤ 50 µs).

use gpufleet_core::time::now_ms;
use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::Request;
use gpufleet_api::{ApiSettings, AppState};
use gpufleet_auth::{Actor, AuditLog, AuditLogConfig, AuthConfig, AuthService, NewKey, Owner, RateLimitConfig, Role, SqliteMetaStore};
use gpufleet_broker::{BrokerConfig, EmbeddedBroker};
use gpufleet_runtime::{Shutdown, Supervisor};
use gpufleet_store::{EmbeddedStore, StoreConfig};
use gpufleet_telemetry::PipelineMetrics;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// Flags of `bench auth`.
#[derive(clap::Args, Debug, Clone)]
pub struct AuthBenchArgs {
    /// Requests per variant and route.
    #[arg(long, default_value_t = 50_000)]
    pub requests: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

const HEADER: &str = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n";

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Runs the benchmark.
pub async fn run(args: &AuthBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let broker = Arc::new(EmbeddedBroker::open(BrokerConfig::new(dir.path().join("b")))?);
    let store = Arc::new(EmbeddedStore::open(StoreConfig::new(dir.path().join("s")))?);
    let meta = Arc::new(SqliteMetaStore::open(&dir.path().join("meta.db")).await?);
    let (log, writer) = AuditLog::new(meta.clone(), AuditLogConfig::default());
    let mut sup = Supervisor::new(Shutdown::new());
    sup.spawn(writer);
    // Budgets high enough that the benchmark measures the check, not refusals.
    let big = NonZeroU32::new(1_000_000_000).context("constant")?;
    let limits = RateLimitConfig { management_per_minute: big, telemetry_per_minute: big, inference_per_minute: big, ..RateLimitConfig::default() };
    let auth = Arc::new(AuthService::new(meta, log, AuthConfig { rate_limits: limits, ..AuthConfig::default() }.build_options().map_err(|e| anyhow::anyhow!("{e}"))?));
    let new = NewKey { owner: Owner::new("bench")?, role: Role::Admin, label: None, expires_at_ms: None, allowed_models: None };
    let key = auth.create_key(new, &Actor::default(), now_ms()).await?.key.expose_secret().to_owned();
    let off = AppState::new(broker.clone(), store.clone(), PipelineMetrics::default(), ApiSettings::default());
    let on = off.clone().with_auth(auth.clone());
    let (app_off, app_on) = (gpufleet_api::app(off), gpufleet_api::app(on));
    let bearer = format!("Bearer {key}");

    let mut out = serde_json::Map::new();
    for (name, method, uri, body) in [("read", "GET", "/api/v1/openapi.json", ""), ("mutating_audited", "POST", "/api/v1/telemetry", HEADER)] {
        let make = |with_key: bool| {
            let mut b = Request::builder().method(method).uri(uri).header("content-type", "text/csv");
            if with_key {
                b = b.header("authorization", &bearer);
            }
            b.body(Body::from(body))
        };
        // Warm-up (key cache, allocator, audit writer).
        for _ in 0..1000 {
            app_on.clone().oneshot(make(true)?).await?;
            app_off.clone().oneshot(make(false)?).await?;
        }
        let (mut t_on, mut t_off) = (Vec::with_capacity(args.requests), Vec::with_capacity(args.requests));
        for _ in 0..args.requests {
            let req = make(true)?;
            let t = Instant::now();
            let resp = app_on.clone().oneshot(req).await?;
            t_on.push(t.elapsed().as_secs_f64() * 1e6);
            anyhow::ensure!(resp.status().is_success(), "{name} with auth answered {}", resp.status());
            let req = make(false)?;
            let t = Instant::now();
            app_off.clone().oneshot(req).await?;
            t_off.push(t.elapsed().as_secs_f64() * 1e6);
        }
        t_on.sort_by(f64::total_cmp);
        t_off.sort_by(f64::total_cmp);
        let v = serde_json::json!({
            "route": format!("{method} {uri}"),
            "requests": args.requests,
            "auth_on_p50_us": pct(&t_on, 0.50), "auth_on_p99_us": pct(&t_on, 0.99),
            "auth_off_p50_us": pct(&t_off, 0.50), "auth_off_p99_us": pct(&t_off, 0.99),
            "added_p50_us": pct(&t_on, 0.50) - pct(&t_off, 0.50),
            "added_p99_us": pct(&t_on, 0.99) - pct(&t_off, 0.99),
        });
        out.insert(name.to_owned(), v);
    }
    auth.audit_log().flush().await?;
    sup.shutdown(Duration::from_secs(5)).await;
    let worst = out.values().filter_map(|v| v["added_p99_us"].as_f64()).fold(f64::MIN, f64::max);
    out.insert("target_added_p99_us".into(), 50.0.into());
    out.insert("target_met".into(), (worst <= 50.0).into());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("auth overhead on a hot key ({} requests per variant, interleaved, in-process):", args.requests);
        for (name, v) in &out {
            if let Some(o) = v.as_object() {
                println!(
                    "  {name:<17} {:<26} on p50 {:>6.1} µs p99 {:>6.1} µs | off p50 {:>6.1} µs p99 {:>6.1} µs | added p99 {:>6.1} µs",
                    o["route"].as_str().unwrap_or(""),
                    o["auth_on_p50_us"].as_f64().unwrap_or(0.0),
                    o["auth_on_p99_us"].as_f64().unwrap_or(0.0),
                    o["auth_off_p50_us"].as_f64().unwrap_or(0.0),
                    o["auth_off_p99_us"].as_f64().unwrap_or(0.0),
                    o["added_p99_us"].as_f64().unwrap_or(0.0),
                );
            }
        }
        println!("  target: added p99 <= 50 µs -> {}", if worst <= 50.0 { "met" } else { "MISSED" });
    }
    Ok(())
}

