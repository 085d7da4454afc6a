//! The Redis backend: [`RedisBroker`], the [`Broker`](crate::Broker) trait on Redis Streams (Redis
//! 6.2 or newer; 7.0+ for exact lag and `published` in stats). It owns every key under
//! `RedisBrokerConfig::key_prefix` and depends on no other gpufleet crate than `gpufleet-core`.
//!
//! # Keys
//! ```text
//! {prefix}:t:{topic}              the topic's stream; one field `payload` per entry
//! {prefix}:t:{topic}.dead         its dead-letter stream (fields below)
//! {prefix}:nack:{topic}:{group}   hash: message id -> last nack reason (removed on ack/dead letter)
//! ```
//! A message id is the stream entry id `ms-seq` as `(ms << 64) | seq`. Dead-letter entries hold the
//! fields `payload`, `topic`, `group`, `original_id` (`ms-seq`), `reason`, `attempts` and
//! `dead_at_ms` (the Redis server's clock). The keys of one topic live in different hash slots:
//! Redis Cluster is not supported.
//!
//! # Operations
//! - `publish`: one pipeline of `XADD key MAXLEN ~ max_len * payload <bytes>`. It returns once Redis
//!   has applied the entries; whether they survive a Redis crash is Redis's persistence setting
//!   (`appendonly yes` + `appendfsync always` for the embedded backend's `PerBatch` guarantee).
//! - `create_group`: `XGROUP CREATE key group 0 MKSTREAM`; `BUSYGROUP` means it exists already.
//! - `fetch`: a Lua script ([`scripts`]) that (1) asks Redis for pending entries idle for the
//!   visibility timeout (`XPENDING … IDLE`, filtered by Redis in C), (2) moves those whose
//!   delivery count reached `max_attempts` and that are idle for the visibility timeout plus 100 ms
//!   (Redis counts idle time in whole milliseconds; the grace lets a nack racing the timeout win)
//!   to the dead-letter stream, and (3) `XCLAIM`s the others for the caller (attempt = Redis's
//!   delivery count, which `XCLAIM` increments); then, if that left room, a plain `XREADGROUP … >`
//!   reads new entries. Only when both yield nothing does the fetch block, with `XREADGROUP …
//!   BLOCK` on a dedicated connection ([`blocking`]), for at most the rest of `wait`, the
//!   visibility timeout, or until the oldest pending entry comes due, whichever is first, and then
//!   looks again. A nack by this process ends its waiting fetches of that group at once (`CLIENT
//!   UNBLOCK`).
//! - `ack`: one pipeline `XACK key group ids…` + `HDEL` of their nack reasons. At most once a
//!   second per topic it also trims entries every group has acked (`XTRIM MINID ~` below the
//!   oldest pending or undelivered entry of all groups) and forgets consumers idle for 10 minutes
//!   with nothing pending.
//! - `nack`: a Lua script that stores the reason and sets the entry's idle time to the visibility
//!   timeout (`XCLAIM … IDLE <ms> JUSTID`, which keeps the delivery count), so the next fetch
//!   reclaims it; if the entry has used up its attempts it is dead-lettered at once.
//! - A dead letter is written by the same Lua script that acks the original entry (`XADD` to the
//!   dead stream, `XACK`, `HDEL`). Redis runs a script atomically and appends its effects to the
//!   AOF as one `MULTI`/`EXEC`, so a crash can neither lose the message nor write its dead letter
//!   twice.
//!
//! `RedisBroker::purge` deletes every key of the prefix (benchmarks and tests on a shared server).
//!
//! # Stats
//! Topics are found with `SCAN MATCH {prefix}:t:*` (dead streams count into `dead_letters` and are
//! not listed as topics). `published` is the stream's `entries-added`, `bytes` `MEMORY USAGE`,
//! `depth` the largest `lag + in_flight` among the groups (the stream length when there is no
//! group), `lag`/`in_flight` come from `XINFO GROUPS` and `consumers` counts `XINFO CONSUMERS`
//! entries idle less than the visibility timeout. Redis does not keep `acked`, `redeliveries` and
//! `dead_lettered`: they count what this process did since it connected.
//!
//! # Connections and failures
//! Non-blocking commands go over four shared multiplexed connections taken in turn (each a
//! `redis::aio::ConnectionManager`, which reconnects with backoff after its connection drops); with
//! one, a publish would wait behind a fetch's large reply. A blocking read would stall every
//! command queued behind it on its connection, so blocking reads use a pool of dedicated
//! connections, one per waiting fetch (at most [`blocking::MAX_BLOCKING`]); a pooled connection
//! that fails is dropped and the next read opens a new one. A call whose connection turned out to
//! be dead is retried once on a fresh connection; every other connection, timeout or server error
//! is returned as [`BrokerError::Unavailable`](crate::BrokerError::Unavailable) (retryable),
//! except `NOGROUP` (`UnknownGroup`) and replies of the wrong shape (`Corrupt`). Passwords in the
//! URL never appear in errors or logs.
//!
//! # Known limits
//! - A waiting fetch does not notice a `nack` made meanwhile by another process; it sees it at its
//!   next look (within the visibility timeout or the end of its wait).
//! - `max_len` trims the oldest entries even when a group has not read them yet; it is a memory
//!   cap, not retention.
//! - A fetch hands out at most [`MAX_FETCH`] messages whatever its `max`.
//! - Each fetch makes Redis walk the group's whole pending entries list once (in C, tens of
//!   nanoseconds per entry): fine for thousands of messages in flight, not for millions.

mod blocking;
mod broker;
mod connect;
mod error;
mod keys;
mod scripts;
mod stats;

pub use broker::RedisBroker;

use std::time::Duration;

/// Most messages one `fetch` returns.
pub const MAX_FETCH: usize = 1000;

/// Settings of a [`RedisBroker`].
#[derive(Clone)]
pub struct RedisBrokerConfig {
    /// `redis://[user][:password@]host:port[/db]`, or `rediss://…` for TLS.
    pub url: String,
    /// Every key is `{key_prefix}:…`. Default `gpufleet`.
    pub key_prefix: String,
    /// How long a delivered message stays invisible before redelivery. Default 5 s.
    pub visibility_timeout: Duration,
    /// Deliveries before a message is dead-lettered (0 is taken as 1). Default 5.
    pub max_attempts: u32,
    /// Approximate cap on entries per stream (`XADD MAXLEN ~`); `None` for no cap. Default
    /// 10 000 000.
    pub max_len: Option<u64>,
    /// Limit for establishing a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// PEM certificates of the CAs trusted for `rediss://` instead of the built-in web PKI roots
    /// (a private CA). Default `None`.
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl RedisBrokerConfig {
    /// The defaults above for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "gpufleet".to_string(),
            visibility_timeout: Duration::from_secs(5),
            max_attempts: 5,
            max_len: Some(10_000_000),
            connect_timeout: Duration::from_secs(5),
            tls_ca_pem: None,
        }
    }
}

impl std::fmt::Debug for RedisBrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBrokerConfig")
            .field("url", &error::redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("visibility_timeout", &self.visibility_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("max_len", &self.max_len)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls_ca_pem", &self.tls_ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password() {
        let cfg = RedisBrokerConfig::new("redis://alice:s3cret@127.0.0.1:6379/0");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
    }
}
