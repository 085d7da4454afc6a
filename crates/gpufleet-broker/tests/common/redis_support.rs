//! Helpers of the Redis broker's integration tests: the shared test server (with unique key
//! prefixes and cleanup), and `redis-server` child processes of a test's own (for restarts, auth
//! and TLS).

use async_trait::async_trait;
use bytes::Bytes;
use gpufleet_broker::{
    Broker, BrokerError, DeadLetter, Message, MessageId, RedisBroker, RedisBrokerConfig, TopicStats,
};
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// How long a started `redis-server` may take to accept connections.
const START_PATIENCE: Duration = Duration::from_secs(20);

/// The shared test server: `GPUFLEET_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn test_url() -> String {
    std::env::var("GPUFLEET_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or earlier run) uses.
pub fn unique_prefix(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "gftest-{what}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A config for `url` with the given prefix and delivery limits.
pub fn config(
    url: &str,
    prefix: &str,
    visibility: Duration,
    max_attempts: u32,
) -> RedisBrokerConfig {
    let mut cfg = RedisBrokerConfig::new(url);
    cfg.key_prefix = prefix.to_string();
    cfg.visibility_timeout = visibility;
    cfg.max_attempts = max_attempts;
    cfg
}

/// Connects to the shared test server, failing the test with how to start it when it is down.
pub async fn connect_shared(cfg: RedisBrokerConfig) -> RedisBroker {
    match RedisBroker::connect(cfg).await {
        Ok(broker) => broker,
        Err(error) => panic!(
            "the Redis tests need a Redis server ({error}). Start one with \
             `redis-server --port 6379 --save '' --daemonize yes` (or `docker run -d -p 6379:6379 \
             redis:7`), or point GPUFLEET_TEST_REDIS_URL at one"
        ),
    }
}

/// A raw connection to `url` for looking at keys directly.
pub fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("raw connection to the test Redis: {e}"))
}

/// Deletes every key under `prefix` (best effort).
pub fn delete_prefix(url: &str, prefix: &str) {
    let Ok(mut conn) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return;
    };
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    for _ in 0..10_000 {
        let Ok((next, keys)) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query::<(u64, Vec<String>)>(&mut conn)
        else {
            return;
        };
        if !keys.is_empty() {
            let _ = redis::cmd("DEL").arg(&keys).query::<u64>(&mut conn);
        }
        cursor = next;
        if cursor == 0 {
            return;
        }
    }
}

/// A broker on the shared server that deletes its keys when dropped.
pub struct CleanBroker {
    pub broker: RedisBroker,
    url: String,
    prefix: String,
}

impl CleanBroker {
    pub async fn connect(what: &str, visibility: Duration, max_attempts: u32) -> Self {
        let (url, prefix) = (test_url(), unique_prefix(what));
        let broker = connect_shared(config(&url, &prefix, visibility, max_attempts)).await;
        Self {
            broker,
            url,
            prefix,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for CleanBroker {
    fn drop(&mut self) {
        delete_prefix(&self.url, &self.prefix);
    }
}

/// The conformance-suite factory: a broker on the shared server with a prefix of its own.
pub async fn suite_broker(visibility: Duration, max_attempts: u32) -> Arc<dyn Broker> {
    Arc::new(CleanBroker::connect("suite", visibility, max_attempts).await)
}

#[async_trait]
impl Broker for CleanBroker {
    async fn publish(
        &self,
        topic: &TopicName,
        payloads: &[Bytes],
    ) -> Result<Vec<MessageId>, BrokerError> {
        self.broker.publish(topic, payloads).await
    }
    async fn create_group(&self, topic: &TopicName, group: &GroupName) -> Result<(), BrokerError> {
        self.broker.create_group(topic, group).await
    }
    async fn fetch(
        &self,
        topic: &TopicName,
        group: &GroupName,
        consumer: &ConsumerName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, BrokerError> {
        self.broker.fetch(topic, group, consumer, max, wait).await
    }
    async fn ack(
        &self,
        topic: &TopicName,
        group: &GroupName,
        ids: &[MessageId],
    ) -> Result<(), BrokerError> {
        self.broker.ack(topic, group, ids).await
    }
    async fn nack(
        &self,
        topic: &TopicName,
        group: &GroupName,
        id: MessageId,
        reason: &str,
    ) -> Result<(), BrokerError> {
        self.broker.nack(topic, group, id, reason).await
    }
    async fn extend(
        &self,
        topic: &TopicName,
        group: &GroupName,
        consumer: &ConsumerName,
        ids: &[MessageId],
    ) -> Result<(), BrokerError> {
        self.broker.extend(topic, group, consumer, ids).await
    }
    async fn dead_letters(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        self.broker.dead_letters(topic, limit).await
    }
    async fn stats(&self) -> Result<Vec<TopicStats>, BrokerError> {
        self.broker.stats().await
    }
    async fn close(&self) -> Result<(), BrokerError> {
        self.broker.close().await
    }
}

/// A free loopback port (bound and released; another process could take it in between, which
/// the start then reports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free loopback port")
}

/// A `redis-server` child process of one test, in a directory of its own, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    args: Vec<String>,
    starts: usize,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port in `dir` with `args` added (the port option
    /// given is `port_option`: `--port` for plain TCP, `--tls-port` for TLS, where `--port 0`
    /// is added), and waits until it accepts connections.
    pub async fn start(dir: &Path, port_option: &str, args: &[&str]) -> Self {
        let mut server = Self {
            child: None,
            dir: dir.to_path_buf(),
            port: free_port(),
            args: Vec::new(),
            starts: 0,
        };
        server.args = [port_option, &server.port.to_string()]
            .into_iter()
            .map(String::from)
            .collect();
        if port_option != "--port" {
            server.args.extend(["--port".to_string(), "0".to_string()]);
        }
        server.args.extend(
            [
                "--bind",
                "127.0.0.1",
                "--dir",
                &dir.display().to_string(),
                "--logfile",
                "redis.log",
                "--daemonize",
                "no",
            ]
            .into_iter()
            .chain(args.iter().copied())
            .map(String::from),
        );
        server.launch().await;
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>` with `userinfo@` if given (`rediss` when `tls`).
    pub fn url(&self, userinfo: &str, tls: bool) -> String {
        let scheme = if tls { "rediss" } else { "redis" };
        format!("{scheme}://{userinfo}127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting redis-server (is it on PATH? apt-get install redis-server): {e}")
            });
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if self.log().matches("Ready to accept connections").count() >= self.starts {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "redis-server exited ({status}) at start; log:\n{}",
                        self.log()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not get ready within {START_PATIENCE:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, directory and options.
    pub async fn restart(&mut self) {
        self.kill9();
        self.launch().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
