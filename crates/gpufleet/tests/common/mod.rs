//! Helpers for system tests: run the real `gpufleet` binary as child processes on 127.0.0.1.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_gpufleet");

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The admin key every test server is started with (`GPUFLEET_ADMIN_KEY`).
pub fn admin_key() -> String {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| gpufleet_auth::ApiKey::generate().expose_secret().to_owned()).clone()
}

/// A client command with the server URL and admin key in its environment.
pub fn client(url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("GPUFLEET_URL", url).env("GPUFLEET_API_KEY", admin_key());
    c
}

/// A `gpufleet up` child process.
pub struct ServerProc {
    pub child: Child,
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
}

impl ServerProc {
    pub fn start(data_dir: &Path, port: u16) -> ServerProc {
        Self::start_with(data_dir, port, &[])
    }

    pub fn start_with(data_dir: &Path, port: u16, extra_args: &[&str]) -> ServerProc {
        let child = Command::new(BIN)
            .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data_dir)
            .args(extra_args)
            .env("GPUFLEET_ADMIN_KEY", admin_key())
            .env("GPUFLEET_STORE_RAW_RETENTION", "forever")
            .env("GPUFLEET_STORE_ROLLUP_1M_RETENTION", "forever")
            .env("GPUFLEET_STORE_ROLLUP_1H_RETENTION", "forever")
            .env("GPUFLEET_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gpufleet up");
        let s = ServerProc { child, url: format!("http://127.0.0.1:{port}"), port, data_dir: data_dir.to_path_buf() };
        s.wait_healthy();
        s
    }

    fn wait_healthy(&self) {
        wait_until(Duration::from_secs(30), "server /health", || get(&format!("{}/health", self.url)).is_some());
    }

    /// SIGKILL: no chance to flush.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "server did not exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Blocking GET (as admin) returning the JSON body on 2xx.
pub fn get(url: &str) -> Option<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new().get(url).bearer_auth(admin_key()).timeout(Duration::from_secs(5)).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    })
}

/// Polls `cond` until it holds, failing the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The PostgreSQL of the system tests (`GPUFLEET_TEST_POSTGRES_URL`, default the local `test` database).
pub fn test_postgres_url() -> String {
    std::env::var("GPUFLEET_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The Redis of the system tests (`GPUFLEET_TEST_REDIS_URL`, default the local server).
pub fn test_redis_url() -> String {
    std::env::var("GPUFLEET_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `host:port` of a URL like `scheme://[user@]host:port[/db]`.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Fails the test, naming the command `how` that starts it, when the server `what` at `url` is
/// not reachable (never skips).
pub fn require_server(url: &str, what: &str, how: &str) {
    let addr = host_port(url);
    let ok = addr.parse().ok().is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(ok, "{what} is not reachable at {addr}: these tests need a real server. Start it with: {how}");
}

/// [`require_server`] for PostgreSQL.
pub fn require_postgres() {
    require_server(&test_postgres_url(), "PostgreSQL", "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start");
}

/// [`require_server`] for Redis.
pub fn require_redis() {
    require_server(&test_redis_url(), "Redis", "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no");
}

/// A child process killed (SIGKILL) and reaped on drop, so a failing test leaves nothing behind.
pub struct KilledOnDrop(pub Child);

impl KilledOnDrop {
    /// SIGKILL now and reap.
    pub fn kill9(&mut self) {
        self.0.kill().expect("kill -9");
        self.0.wait().expect("reap");
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
