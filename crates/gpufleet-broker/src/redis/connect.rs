//! Opening the connections of a [`RedisBroker`](super::RedisBroker): the client (with the TLS
//! roots), a first direct connection that fails fast when the server is absent and checks its
//! version, the scripts, the shared multiplexed connections with their reconnect policy, and the
//! pool of blocking-read connections (seeded with the first connection).

use super::{blocking::BlockingPool, scripts::Scripts, RedisBrokerConfig};
use crate::BrokerError;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Client, RedisResult, TlsCertificates,
};
use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};
use tracing::debug;

/// Reply timeout of commands on the shared connection.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect attempts of the shared connection after the first one fails, and the longest pause
/// between them (the `redis` crate waits at least 1 s plus jitter before each). While Redis is down
/// a call therefore fails within about 2 s, and callers back off on their own.
const RECONNECT_TRIES: usize = 1;
const RECONNECT_MAX_DELAY_MS: u64 = 1000;
/// Shared multiplexed connections per broker.
const SHARED_CONNECTIONS: usize = 4;
/// Oldest Redis accepted (exclusive ranges in XPENDING, XTRIM MINID).
const MIN_VERSION: (u32, u32) = (6, 2);

/// The connections and scripts of a broker.
pub(super) struct Connected {
    pub(super) shared: Shared,
    pub(super) blocking: BlockingPool,
    pub(super) scripts: Scripts,
}

/// Connects to `cfg.url`; errors say `cannot reach Redis at <shown_url>: …`.
pub(super) async fn open(
    cfg: &RedisBrokerConfig,
    shown_url: &str,
) -> Result<Connected, BrokerError> {
    let unreachable = |error: &dyn std::fmt::Display| {
        BrokerError::Unavailable(format!("cannot reach Redis at {shown_url}: {error}"))
    };
    if cfg.url.starts_with("rediss:") {
        ensure_crypto_provider();
    }
    let client = match &cfg.tls_ca_pem {
        Some(pem) => Client::build_with_tls(
            cfg.url.as_str(),
            TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => Client::open(cfg.url.as_str()),
    }
    .map_err(|e| unreachable(&e))?;
    let blocking = BlockingPool::new(client.clone(), cfg.connect_timeout);
    // One direct attempt first, so an absent server fails fast instead of after the
    // connection manager's retries; the connection then seeds the blocking-read pool.
    let mut probe = tokio::time::timeout(cfg.connect_timeout, blocking.connect())
        .await
        .map_err(|_| unreachable(&"connect timeout"))?
        .map_err(|e| unreachable(&e))?;
    let info: RedisResult<String> = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut probe)
        .await;
    match info {
        Ok(info) => check_version(&info, shown_url)?,
        // An ACL user without @dangerous may not run INFO: go on without the check.
        Err(error) if error.code() == Some("NOPERM") => {
            debug!(%error, "cannot check the Redis version")
        }
        Err(error) => return Err(unreachable(&error)),
    }
    let scripts = Scripts::load(&mut probe)
        .await
        .map_err(|e| unreachable(&e))?;
    let manager_cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(cfg.connect_timeout)
        .set_response_timeout(COMMAND_TIMEOUT)
        .set_number_of_retries(RECONNECT_TRIES)
        .set_max_delay(RECONNECT_MAX_DELAY_MS);
    let mut managers = Vec::with_capacity(SHARED_CONNECTIONS);
    for _ in 0..SHARED_CONNECTIONS {
        let manager = tokio::time::timeout(
            cfg.connect_timeout,
            ConnectionManager::new_with_config(client.clone(), manager_cfg.clone()),
        )
        .await
        .map_err(|_| unreachable(&"connect timeout"))?
        .map_err(|e| unreachable(&e))?;
        managers.push(manager);
    }
    blocking.seed(probe).await.map_err(|e| unreachable(&e))?;
    Ok(Connected {
        shared: Shared {
            managers,
            next: AtomicUsize::new(0),
        },
        blocking,
        scripts,
    })
}

/// The shared connections for every non-blocking command, taken in turn. One multiplexed
/// connection would make every caller wait for the replies queued before its own (a fetch's
/// 1000 entries hold up a publish's ids), and one task parses all of its replies.
pub(super) struct Shared {
    managers: Vec<ConnectionManager>,
    next: AtomicUsize,
}

impl Shared {
    /// The next connection.
    pub(super) fn pick(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.managers.len();
        self.managers[i].clone()
    }
}

/// Installs rustls's ring provider as the process default unless one is installed already: the
/// `redis` crate's TLS needs a default provider, and with no (or more than one) provider feature
/// enabled rustls cannot pick one itself.
fn ensure_crypto_provider() {
    use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
    if CryptoProvider::get_default().is_none() {
        // Err means another thread installed one in between, which is just as good.
        let _ = ring::default_provider().install_default();
    }
}

/// Fails when `INFO server` shows a Redis older than [`MIN_VERSION`].
fn check_version(info: &str, shown_url: &str) -> Result<(), BrokerError> {
    match server_version(info) {
        Some(version) if version < MIN_VERSION => Err(BrokerError::Unavailable(format!(
            "Redis at {shown_url} is version {}.{}; the Redis broker needs {}.{} or newer",
            version.0, version.1, MIN_VERSION.0, MIN_VERSION.1
        ))),
        _ => Ok(()),
    }
}

/// `(major, minor)` from `INFO server`.
fn server_version(info: &str) -> Option<(u32, u32)> {
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?;
    let mut parts = line.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_checks_the_server_version() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n";
        assert_eq!(server_version(info), Some((7, 0)));
        assert_eq!(server_version("nothing"), None);
        assert!(check_version("redis_version:6.0.9\r\n", "redis://x").is_err());
        assert!(check_version("redis_version:6.2.0\r\n", "redis://x").is_ok());
    }
}
