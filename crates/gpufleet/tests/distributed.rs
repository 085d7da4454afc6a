//! System tests of distributed mode: real `gpufleet` processes (streamers, collectors, an API
//! process) sharing real Redis and PostgreSQL, with the failures the issue names:
//! a collector killed with SIGKILL mid-stream, Redis (AOF on) killed and restarted mid-stream, and
//! PostgreSQL unreachable for 10 s. Each test uses its own Redis key prefix and PostgreSQL schemas
//! and removes them afterwards. Redis and PostgreSQL must be running (see `.ci/run`); when one is
//! not, the test fails with the command that starts it.

mod common;

use common::*;
use gpufleet_core::BatchBuilder;
use gpufleet_telemetry::source::{CsvDecoder, CsvFileReader, DecodeOptions, RowErrors};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One test's slice of the shared servers: a Redis key prefix and PostgreSQL schema prefix,
/// removed on drop.
struct Slice {
    key_prefix: String,
    schema_prefix: String,
}

impl Slice {
    fn new(name: &str) -> Slice {
        require_redis();
        require_postgres();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
        let tag = format!("{name}_{}_{nanos}", std::process::id());
        Slice { key_prefix: format!("gft-{tag}"), schema_prefix: format!("gft_{tag}") }
    }

    /// Environment for a `gpufleet server` process of this slice.
    fn env(&self, cmd: &mut Command) {
        cmd.env("GPUFLEET_BROKER_KEY_PREFIX", &self.key_prefix)
            .env("GPUFLEET_DATABASE_SCHEMA_PREFIX", &self.schema_prefix)
            .env("GPUFLEET_BROKER_VISIBILITY_TIMEOUT", "3s")
            .env("GPUFLEET_ADMIN_KEY", admin_key())
            .env("GPUFLEET_STORE_RAW_RETENTION", "forever")
            .env("GPUFLEET_STORE_ROLLUP_1M_RETENTION", "forever")
            .env("GPUFLEET_STORE_ROLLUP_1H_RETENTION", "forever")
            .env("GPUFLEET_LOG_LEVEL", "warn");
    }
}

impl Drop for Slice {
    fn drop(&mut self) {
        for suffix in ["meta", "jobs", "metrics"] {
            let _ = Command::new("psql")
                .args([&test_postgres_url(), "-q", "-c", &format!("DROP SCHEMA IF EXISTS {}_{suffix} CASCADE", self.schema_prefix)])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let script = format!(
            "redis-cli -u {} --scan --pattern '{}:*' | xargs -r redis-cli -u {} del > /dev/null",
            test_redis_url(),
            self.key_prefix,
            test_redis_url()
        );
        let _ = Command::new("sh").args(["-c", &script]).status();
    }
}

/// A `gpufleet server --roles …` child, killed on drop.
struct Role {
    child: KilledOnDrop,
}

impl Role {
    fn start(slice: &Slice, roles: &str, broker: &str, database: &str, listen: Option<u16>, data: &Path) -> Role {
        Self::start_env(slice, roles, broker, database, listen, data, &[])
    }

    fn start_env(slice: &Slice, roles: &str, broker: &str, database: &str, listen: Option<u16>, data: &Path, env: &[(&str, &str)]) -> Role {
        let mut cmd = Command::new(BIN);
        cmd.args(["server", "--roles", roles, "--broker", broker, "--database", database, "--data-dir"]).arg(data);
        if let Some(p) = listen {
            cmd.args(["--listen", &format!("127.0.0.1:{p}")]);
        }
        slice.env(&mut cmd);
        cmd.envs(env.iter().copied());
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("spawn gpufleet server");
        Role { child: KilledOnDrop(child) }
    }

    fn kill9(&mut self) {
        self.child.kill9();
    }
}

/// Distinct `(host, gpu, metric, ts)` over several CSV files.
fn distinct_samples(paths: &[PathBuf]) -> usize {
    let mut seen = HashSet::new();
    for path in paths {
        let mut reader = CsvFileReader::open(path).unwrap();
        let mut dec = CsvDecoder::from_header(reader.header(), DecodeOptions { default_host: None, ingest_ms: 0 }).unwrap();
        while let Some(chunk) = reader.next_chunk(10_000).unwrap() {
            let mut b = BatchBuilder::new();
            let mut errors = RowErrors::default();
            dec.decode(&chunk.bytes, chunk.first_line, &mut b, &mut errors);
            assert_eq!(errors.count, 0);
            let batch = b.finish();
            for p in &batch.points {
                let k = batch.key_of(p);
                seen.insert((k.host, k.uuid, k.metric, p.ts_ms));
            }
        }
    }
    seen.len()
}

fn csv(dir: &Path, name: &str, rows: u64, seed: u64) -> PathBuf {
    let path = dir.join(name);
    gpufleet_telemetry::synth::write_dcgm_csv(std::fs::File::create(&path).unwrap(), rows, seed).unwrap();
    path
}

/// `gpufleet stream FILE --broker URL` straight into Redis.
fn streamer(slice: &Slice, broker: &str, file: &Path, rate: u32) -> Child {
    Command::new(BIN)
        .args(["stream", "--broker", broker, "--key-prefix", &slice.key_prefix, "--rate", &rate.to_string(), "--batch", "500", "--workers", "2", "--json"])
        .arg(file)
        .env("GPUFLEET_LOG_LEVEL", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn gpufleet stream")
}

/// Waits for a streamer to exit 0 and returns its JSON summary.
fn finish_streamer(mut child: Child) -> serde_json::Value {
    let status = child.wait().unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "streamer failed: {status}; output: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("streamer summary is not JSON ({e}): {out}"))
}

/// Samples stored, as the API process (reading PostgreSQL) reports them.
fn stored(api: &str) -> Option<u64> {
    get(&format!("{api}/stats")).and_then(|v| v.pointer("/store/samples")?.as_u64())
}

/// Dead letters and not-yet-acked messages (in flight + not yet delivered) of the telemetry
/// topic's collector group, from the API process.
fn broker_counts(api: &str) -> Option<(u64, u64)> {
    let v = get(&format!("{api}/stats"))?;
    let topic = v.pointer("/broker")?.as_array()?.iter().find(|t| t["topic"] == "telemetry")?.clone();
    let group = topic["groups"].as_array()?.iter().find(|g| g["group"] == "collectors")?.clone();
    Some((topic["dead_letters"].as_u64()?, group["in_flight"].as_u64()? + group["lag"].as_u64()?))
}

/// Waits until the stored count reaches `expected` and checks it stays there (no double counting).
fn assert_all_stored_once(api: &str, expected: u64) {
    wait_until(Duration::from_secs(120), &format!("{expected} samples stored"), || stored(api).is_some_and(|n| n >= expected));
    assert_eq!(stored(api), Some(expected), "every distinct sample stored exactly once");
    wait_until(Duration::from_secs(30), "every message acked", || broker_counts(api).is_some_and(|(_, f)| f == 0));
    assert_eq!(broker_counts(api).map(|(d, _)| d), Some(0), "nothing was dead-lettered");
}

#[test]
fn two_streamers_three_collectors_one_killed_stores_every_sample_once() {
    let slice = Slice::new("kill");
    let dir = tempfile::tempdir().unwrap();
    let files = [csv(dir.path(), "a.csv", 24_000, 11), csv(dir.path(), "b.csv", 24_000, 12)];
    let expected = distinct_samples(&files) as u64;
    let (redis, pg) = (test_redis_url(), test_postgres_url());
    let port = free_port();
    let _api = Role::start(&slice, "api", &redis, &pg, Some(port), &dir.path().join("api"));
    let api = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(60), "api /health", || get(&format!("{api}/health")).is_some());
    let mut collectors: Vec<Role> =
        (0..3).map(|i| Role::start(&slice, "collector", &redis, &pg, None, &dir.path().join(format!("c{i}")))).collect();
    let streams: Vec<Child> = files.iter().map(|f| streamer(&slice, &redis, f, 4000)).collect();

    wait_until(Duration::from_secs(60), "a first part stored", || stored(&api).is_some_and(|n| n >= 8_000));
    collectors[0].kill9();
    let at_kill = stored(&api).unwrap();
    assert!(at_kill < expected, "the collector must die mid-stream (stored {at_kill} of {expected})");

    for s in streams {
        let summary = finish_streamer(s);
        assert_eq!(summary["rejected"], 0);
    }
    assert_all_stored_once(&api, expected);
}

/// A loopback TCP forwarder to PostgreSQL that the test can cut (drop every connection and refuse
/// new ones) and restore: PostgreSQL becomes unreachable for the collectors only.
struct CuttableProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl CuttableProxy {
    fn start(target: String) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, k) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if c.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(&target) else { continue };
                k.lock().unwrap().extend([inbound.try_clone().unwrap(), outbound.try_clone().unwrap()]);
                pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                pipe(outbound, inbound);
            }
        });
        CuttableProxy { port, cut, conns }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for s in self.conns.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

#[test]
fn postgres_away_for_ten_seconds_collectors_hold_then_everything_lands() {
    let slice = Slice::new("pgaway");
    let dir = tempfile::tempdir().unwrap();
    let files = [csv(dir.path(), "a.csv", 30_000, 21)];
    let expected = distinct_samples(&files) as u64;
    let (redis, pg) = (test_redis_url(), test_postgres_url());
    let proxy = CuttableProxy::start(host_port(&pg));
    let pg_via_proxy = pg.replace(&host_port(&pg), &format!("127.0.0.1:{}", proxy.port));
    let port = free_port();
    let _api = Role::start(&slice, "api", &redis, &pg, Some(port), &dir.path().join("api"));
    let api = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(60), "api /health", || get(&format!("{api}/health")).is_some());
    // Three collectors (one process each, one worker each) and only 2 delivery attempts: a batch
    // held through the outage must not be handed to an idle collector (that would be attempt 2,
    // then 3 → dead letter); the holder extends its visibility while it retries.
    let _collectors: Vec<Role> = (0..3)
        .map(|i| {
            let env = [("GPUFLEET_BROKER_MAX_ATTEMPTS", "2"), ("GPUFLEET_TELEMETRY_COLLECTORS", "1")];
            Role::start_env(&slice, "collector", &redis, &pg_via_proxy, None, &dir.path().join(format!("c{i}")), &env)
        })
        .collect();
    let stream = streamer(&slice, &redis, &files[0], 3000);

    wait_until(Duration::from_secs(60), "a first part stored", || stored(&api).is_some_and(|n| n >= 6_000));
    proxy.set_cut(true);
    let cut_at = Instant::now();
    let at_cut = stored(&api).unwrap();
    // The outage lasts 10 s by design (the scenario); meanwhile the streamer keeps
    // publishing and Redis buffers.
    while cut_at.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = stored(&api).unwrap();
    // A write that was committing at the instant of the cut may land; nothing after it can.
    assert!(during < expected, "the outage must start mid-stream ({during} of {expected} stored)");
    let backlog = broker_counts(&api).unwrap().1;
    assert!(backlog > 0, "unstored messages must wait in the broker, unacked, during the outage");
    proxy.set_cut(false);
    let summary = finish_streamer(stream);
    assert_eq!(summary["rejected"], 0);
    assert!(during >= at_cut);
    assert_all_stored_once(&api, expected);
}

/// Redis with AOF (`appendfsync always`) in a temp dir on a free port, as a child process.
struct OwnRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl OwnRedis {
    fn start(dir: &Path) -> OwnRedis {
        let mut r = OwnRedis { child: None, port: free_port(), dir: dir.to_path_buf() };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until(Duration::from_secs(20), "own redis-server accepting", || TcpStream::connect(&addr).is_ok());
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[test]
fn redis_killed_and_restarted_mid_stream_loses_nothing_acknowledged() {
    let slice = Slice::new("redis");
    let dir = tempfile::tempdir().unwrap();
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let mut redis = OwnRedis::start(&redis_dir);
    let files = [csv(dir.path(), "a.csv", 30_000, 31)];
    let expected = distinct_samples(&files) as u64;
    let pg = test_postgres_url();
    let port = free_port();
    let _api = Role::start(&slice, "api", &redis.url(), &pg, Some(port), &dir.path().join("api"));
    let api = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(60), "api /health", || get(&format!("{api}/health")).is_some());
    let _collectors: Vec<Role> =
        (0..2).map(|i| Role::start(&slice, "collector", &redis.url(), &pg, None, &dir.path().join(format!("c{i}")))).collect();
    let stream = streamer(&slice, &redis.url(), &files[0], 3000);

    wait_until(Duration::from_secs(60), "a first part stored", || stored(&api).is_some_and(|n| n >= 6_000));
    let before_kill = stored(&api).unwrap();
    assert!(before_kill < expected, "Redis must die mid-stream");
    redis.kill9();
    redis.spawn();
    let summary = finish_streamer(stream);
    assert_eq!(summary["rejected"], 0);
    assert!(summary["retries"].as_u64().unwrap() > 0, "the streamer must have seen Redis go away: {summary}");
    assert_all_stored_once(&api, expected);
}
