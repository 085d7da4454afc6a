//! The per-request cost of security on a hot key: `check_access` (client IP, allowlist, IP and key
//! rate limits, authentication from the cache, permission) plus building and enqueueing the audit
//! entry of a mutating request. 200k iterations after a warm-up; prints p50/p99/p99.9/max in µs,
//! then how fast the writer stored the queued records. Target: p99 ≤ 50 µs.
//!
//! Run: `cargo bench -p gpufleet-auth --bench auth_hot`.

use gpufleet_auth::{
    AccessRequest, Actor, AuditLog, AuditLogConfig, AuthOptions, AuthService, LimitClass, LocalRateLimiter, MetaStore,
    NewKey, Outcome, Owner, Permission, RateLimitConfig, Role, SqliteMetaStore,
};
use gpufleet_runtime::{Shutdown, Supervisor};
use std::{
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const ITERATIONS: usize = 200_000;
const WARMUP: usize = 10_000;
const COLD_KEYS: usize = 200;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn report(name: &str, mut ns: Vec<u64>) {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
    println!(
        "{name:<44} n={:<7} p50={:>7.2}µs p99={:>7.2}µs p99.9={:>7.2}µs max={:>8.2}µs",
        ns.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        *ns.last().unwrap_or(&0) as f64 / 1000.0
    );
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteMetaStore::open(&dir.path().join("meta.db")).await?);
    // The queue holds every record of the run, so the figures are the enqueue cost, not the
    // writer's throughput (reported separately below).
    let (log, writer) =
        AuditLog::new(store.clone(), AuditLogConfig { capacity: ITERATIONS + WARMUP + 16, max_batch: 512 });
    let mut sup = Supervisor::new(Shutdown::new());
    sup.spawn(writer);
    // Quotas high enough that the hot key is never limited: the checks still run every time.
    let huge = NonZeroU32::new(1_000_000_000).unwrap_or(NonZeroU32::MIN);
    let limits = RateLimitConfig { management_per_minute: huge, inference_per_minute: huge, ..Default::default() };
    let options = AuthOptions { limiter: Arc::new(LocalRateLimiter::new(&limits)), ..Default::default() };
    let service = AuthService::new(store.clone(), log, options);
    let new = NewKey {
        owner: Owner::new("bench")?,
        role: Role::Operator,
        label: None,
        expires_at_ms: None,
        allowed_models: None,
    };
    let created = service.create_key(new, &Actor::default(), now_ms()).await?;
    let header = format!("Bearer {}", created.key.expose_secret());
    let req = AccessRequest {
        peer: "10.0.0.7:51000".parse()?,
        x_forwarded_for: None,
        credential: Some(header.as_bytes()),
        class: LimitClass::Management,
        permission: Permission::FleetWrite,
        method: "POST",
        route: "/api/v1/fleet/hosts/{host}/restart",
        request_id: Some("0193c0de-7a2b-7c3d-8e4f-5a6b7c8d9e0f"),
    };

    let loop_started = Instant::now();
    let mut full = Vec::with_capacity(ITERATIONS);
    let mut auth_only = Vec::with_capacity(ITERATIONS);
    for i in 0..WARMUP + ITERATIONS {
        let t0 = Instant::now();
        let now = now_ms();
        let access = service.check_access(&req, now).await?;
        let t1 = Instant::now();
        let entry = access.audit_entry(&req, "host.restart", "gpu-node-17", Outcome::Success, now);
        service.audit(entry).await?;
        let t2 = Instant::now();
        if i >= WARMUP {
            full.push((t2 - t0).as_nanos() as u64);
            auth_only.push((t1 - t0).as_nanos() as u64);
        }
    }
    let loop_took = loop_started.elapsed();
    report("check_access + audit enqueue (hot key)", full);
    report("check_access only", auth_only);

    let authn_started = Instant::now();
    let mut authn = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let t0 = Instant::now();
        let id = service.authenticate(Some(header.as_bytes()), now_ms()).await?;
        let ok = service.authorize(&id, Permission::FleetWrite).is_ok();
        authn.push((t0.elapsed()).as_nanos() as u64);
        assert!(ok);
    }
    let authn_took = authn_started.elapsed();
    report("authenticate + authorize", authn);

    // Cache misses: the first use of each key reads the store.
    let cold_started = Instant::now();
    let mut cold_keys = Vec::new();
    for i in 0..COLD_KEYS {
        let new = NewKey {
            owner: Owner::new(&format!("cold-{i}"))?,
            role: Role::User,
            label: None,
            expires_at_ms: None,
            allowed_models: None,
        };
        cold_keys.push(format!(
            "Bearer {}",
            service.create_key(new, &Actor::default(), now_ms()).await?.key.expose_secret()
        ));
    }
    let mut cold = Vec::with_capacity(COLD_KEYS);
    for h in &cold_keys {
        let t0 = Instant::now();
        service.authenticate(Some(h.as_bytes()), now_ms()).await?;
        cold.push(t0.elapsed().as_nanos() as u64);
    }
    let cold_took = cold_started.elapsed();
    report("authenticate, cache miss (SQLite read)", cold);

    let started = Instant::now();
    service.audit_log().flush().await?;
    let drained = started.elapsed();
    let report_chain = store.audit_chain_verify().await?;
    let total = report_chain.checked;
    let writer_secs = (loop_took + authn_took + cold_took + drained).as_secs_f64();
    println!(
        "audit writer: {total} records stored in ≤ {writer_secs:.2} s (≥ {:.0} records/s, synchronous=FULL); chain ok: {}",
        total as f64 / writer_secs,
        report_chain.first_broken.is_none()
    );
    sup.shutdown(Duration::from_secs(30)).await;
    Ok(())
}
