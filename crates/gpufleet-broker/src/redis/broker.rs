//! [`RedisBroker`]: connecting, and the [`Broker`] API on Redis Streams (see the module docs for
//! the commands each call sends).

use super::{
    blocking::{BlockingPool, BlockingRead},
    connect::{self, Connected, Shared},
    error::{backend, connection_lost, for_group, redact_url},
    keys::{
        check_name, dead_letter_of, entries_of, format_id, parse_id, payload_of,
        read_reply_entries, Keys,
    },
    scripts::{parse_reclaimed, LuaScript, Scripts},
    stats, RedisBrokerConfig, MAX_FETCH,
};
use crate::{Broker, BrokerError, DeadLetter, Message, MessageId, TopicStats};
use async_trait::async_trait;
use bytes::Bytes;
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use parking_lot::Mutex;
use redis::{aio::ConnectionManager, Cmd, ErrorKind, RedisResult, Value};
use rustc_hash::FxHashMap;
use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{sync::Notify, time::Instant};
use tracing::{debug, info};

/// An entry out of attempts is dead-lettered on timeout only once idle for the visibility timeout
/// plus this. Redis counts idle time in whole milliseconds and a waiting fetch wakes with
/// millisecond resolution, so without it a nack sent just as the entry's timeout expires could
/// lose the race to another consumer's fetch and the dead letter would carry an older reason.
/// Redeliveries are not delayed by it.
const DEAD_LETTER_GRACE: Duration = Duration::from_millis(100);
/// How often `ack` trims fully acked entries of a topic (per broker).
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// Consumers idle this long with nothing pending are removed from their group.
const FORGET_CONSUMER_AFTER: Duration = Duration::from_secs(600);
/// Most `SCAN` round trips of one `purge`.
const PURGE_MAX_ROUNDS: usize = 100_000;

/// What this process keeps per (topic, group): the counters Redis does not keep, and the wake-up
/// of this process's waiting fetches when it nacks.
#[derive(Debug, Default)]
struct GroupLocal {
    wake: Arc<Notify>,
    acked: u64,
    redeliveries: u64,
    dead_lettered: u64,
}

/// What one look for messages found.
struct Found {
    /// Redelivered messages first, then new ones.
    messages: Vec<Message>,
    /// When to look again if there were none (zero: at once).
    next_due: Duration,
}

/// The broker backend on Redis Streams (see the module docs).
pub struct RedisBroker {
    shared: Shared,
    blocking: BlockingPool,
    keys: Keys,
    scripts: Scripts,
    visibility: Duration,
    max_attempts: u32,
    max_len: Option<u64>,
    shown_url: String,
    closed: AtomicBool,
    groups: Mutex<FxHashMap<(TopicName, GroupName), GroupLocal>>,
    last_trim: Mutex<FxHashMap<TopicName, Instant>>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &self.shown_url)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Connects (checking that the server is Redis 6.2 or newer). Fails with
    /// [`BrokerError::Unavailable`] when the server cannot be reached, refuses the credentials or
    /// the TLS handshake fails; the message shows the URL without its password.
    pub async fn connect(cfg: RedisBrokerConfig) -> Result<Self, BrokerError> {
        let shown_url = redact_url(&cfg.url);
        let Connected {
            shared,
            blocking,
            scripts,
        } = connect::open(&cfg, &shown_url).await?;
        info!(url = %shown_url, prefix = %cfg.key_prefix, "redis broker connected");
        Ok(Self {
            shared,
            blocking,
            keys: Keys::new(&cfg.key_prefix),
            scripts,
            visibility: cfg.visibility_timeout.max(Duration::from_millis(1)),
            max_attempts: cfg.max_attempts.max(1),
            max_len: cfg.max_len,
            shown_url,
            closed: AtomicBool::new(false),
            groups: Mutex::new(FxHashMap::default()),
            last_trim: Mutex::new(FxHashMap::default()),
        })
    }

    /// Deletes every key under this broker's prefix (all its topics, groups and dead letters) and
    /// returns how many there were. For benchmarks and tests that share a server.
    pub async fn purge(&self) -> Result<u64, BrokerError> {
        self.check_open()?;
        let pattern = format!("{}*", self.keys.prefix_pattern());
        let mut deleted = 0;
        let mut cursor: u64 = 0;
        for _ in 0..PURGE_MAX_ROUNDS {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let scan = &scan;
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .call(|mut conn| async move { scan.query_async(&mut conn).await })
                .await
                .map_err(backend)?;
            if !keys.is_empty() {
                let mut del = redis::cmd("UNLINK");
                del.arg(&keys);
                let del = &del;
                let n: u64 = self
                    .call(|mut conn| async move { del.query_async(&mut conn).await })
                    .await
                    .map_err(backend)?;
                deleted += n;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(deleted)
    }

    fn check_open(&self) -> Result<(), BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BrokerError::Closed);
        }
        Ok(())
    }

    /// Runs `op` on the shared connection, once more when the connection turned out to be dead
    /// (the manager is reconnecting by then, so the second try normally goes to a live one).
    async fn call<T, F, Fut>(&self, op: F) -> RedisResult<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match op(self.shared.pick()).await {
            Err(error) if connection_lost(&error) => {
                debug!(%error, "redis connection lost; retrying once");
                op(self.shared.pick()).await
            }
            result => result,
        }
    }

    /// Runs a script invocation, loading the script again when Redis lost it (restart).
    async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        let run = || self.call(|mut conn| async move { cmd.query_async(&mut conn).await });
        match run().await {
            Err(error) if error.kind() == ErrorKind::NoScriptError => {
                let reload = &script.reload_cmd();
                self.call(|mut conn| async move { reload.query_async::<String>(&mut conn).await })
                    .await?;
                run().await
            }
            result => result,
        }
    }

    fn visibility_ms(&self) -> u64 {
        u64::try_from(self.visibility.as_millis()).unwrap_or(u64::MAX)
    }

    fn with_group<T>(
        &self,
        topic: &TopicName,
        group: &GroupName,
        f: impl FnOnce(&mut GroupLocal) -> T,
    ) -> T {
        let mut groups = self.groups.lock();
        f(groups.entry((topic.clone(), group.clone())).or_default())
    }

    /// One look for messages: the reclaim script (redeliveries and dead letters of due entries),
    /// then, if that left room, a non-blocking `XREADGROUP … >` for new ones.
    async fn look(
        &self,
        topic: &TopicName,
        group: &GroupName,
        consumer: &ConsumerName,
        want: usize,
    ) -> Result<Found, BrokerError> {
        let (stream, dead, reasons) = (
            self.keys.stream(topic),
            self.keys.dead(topic),
            self.keys.reasons(topic, group),
        );
        let mut cmd = self.scripts.reclaim.invocation(&[&stream, &dead, &reasons]);
        cmd.arg(group.as_str())
            .arg(consumer.as_str())
            .arg(topic.as_str())
            .arg(self.visibility_ms())
            .arg(want)
            .arg(self.max_attempts)
            .arg(self.max_len.unwrap_or(0))
            .arg(DEAD_LETTER_GRACE.as_millis() as u64);
        let value: Value = self
            .eval(&self.scripts.reclaim, &cmd)
            .await
            .map_err(|e| for_group(e, topic, group))?;
        let reclaimed = parse_reclaimed(value)?;
        let mut messages = reclaimed.messages;
        self.with_group(topic, group, |g| {
            g.redeliveries += messages.len() as u64;
            g.dead_lettered += reclaimed.dead;
        });
        if messages.len() < want {
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(group.as_str())
                .arg(consumer.as_str())
                .arg("COUNT")
                .arg(want - messages.len())
                .arg("STREAMS")
                .arg(&stream)
                .arg(">");
            let read = &read;
            let value: Value = self
                .call(|mut conn| async move { read.query_async(&mut conn).await })
                .await
                .map_err(|e| for_group(e, topic, group))?;
            for (id, fields) in read_reply_entries(value)? {
                messages.push(Message {
                    id,
                    payload: payload_of(fields)?,
                    attempt: 1,
                });
            }
        }
        Ok(Found {
            messages,
            // More may be due when this look dead-lettered some.
            next_due: if reclaimed.dead > 0 {
                Duration::ZERO
            } else {
                reclaimed.next_due
            },
        })
    }

    /// Trims fully acked entries and forgets idle consumers of `topic`, at most every
    /// [`TRIM_EVERY`]. Best effort: a failure is only logged.
    async fn maybe_trim(&self, topic: &TopicName) {
        {
            let now = Instant::now();
            let mut last = self.last_trim.lock();
            if last
                .get(topic)
                .is_some_and(|at| now.saturating_duration_since(*at) < TRIM_EVERY)
            {
                return;
            }
            last.insert(topic.clone(), now);
        }
        let mut cmd = self.scripts.trim.invocation(&[&self.keys.stream(topic)]);
        cmd.arg(u64::try_from(FORGET_CONSUMER_AFTER.as_millis()).unwrap_or(u64::MAX));
        let result: RedisResult<(u64, u64)> = self.eval(&self.scripts.trim, &cmd).await;
        match result {
            Ok((trimmed, forgotten)) => {
                debug!(%topic, trimmed, forgotten, "trimmed acked entries")
            }
            Err(error) => debug!(%topic, %error, "trim failed; retried after the next ack"),
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(
        &self,
        topic: &TopicName,
        payloads: &[Bytes],
    ) -> Result<Vec<MessageId>, BrokerError> {
        self.check_open()?;
        check_name(topic.as_str())?;
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.stream(topic);
        let mut pipe = redis::pipe();
        for payload in payloads {
            let cmd = pipe.cmd("XADD").arg(&key);
            if let Some(max_len) = self.max_len {
                cmd.arg("MAXLEN").arg("~").arg(max_len);
            }
            cmd.arg("*").arg("payload").arg(payload.as_ref());
        }
        let pipe = &pipe;
        let ids: Vec<Vec<u8>> = self
            .call(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
            .map_err(backend)?;
        ids.iter().map(|id| parse_id(id)).collect()
    }

    async fn create_group(&self, topic: &TopicName, group: &GroupName) -> Result<(), BrokerError> {
        self.check_open()?;
        check_name(topic.as_str())?;
        check_name(group.as_str())?;
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(self.keys.stream(topic))
            .arg(group.as_str())
            .arg("0")
            .arg("MKSTREAM");
        let cmd = &cmd;
        let created: RedisResult<()> = self
            .call(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await;
        match created {
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            other => other.map_err(backend),
        }
    }

    async fn fetch(
        &self,
        topic: &TopicName,
        group: &GroupName,
        consumer: &ConsumerName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, BrokerError> {
        self.check_open()?;
        check_name(topic.as_str())?;
        check_name(group.as_str())?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let want = max.min(MAX_FETCH);
        let deadline = Instant::now() + wait;
        let key = self.keys.stream(topic);
        let wake = self.with_group(topic, group, |g| g.wake.clone());
        loop {
            // Registered before looking, so a nack in between is not missed.
            let nacked = wake.notified();
            tokio::pin!(nacked);
            nacked.as_mut().enable();
            let looked_at = Instant::now();
            let found = self.look(topic, group, consumer, want).await?;
            if !found.messages.is_empty() {
                return Ok(found.messages);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(1) {
                return Ok(Vec::new());
            }
            if found.next_due.is_zero() {
                continue;
            }
            // Idle times were measured after `looked_at`: waking relative to it is never late.
            let wake_at = looked_at + found.next_due.min(self.visibility);
            let block = left.min(wake_at.saturating_duration_since(Instant::now()));
            if block < Duration::from_millis(1) {
                continue;
            }
            let read = BlockingRead {
                key: &key,
                group: group.as_str(),
                consumer: consumer.as_str(),
                count: want,
                block,
            };
            let wake_up = async {
                tokio::select! {
                    () = tokio::time::sleep_until(wake_at.min(deadline)) => {}
                    () = nacked.as_mut() => {}
                }
            };
            let value = self
                .blocking
                .read(read, &self.shared.pick(), wake_up)
                .await
                .map_err(|e| for_group(e, topic, group))?;
            let entries = read_reply_entries(value)?;
            if !entries.is_empty() {
                return entries
                    .into_iter()
                    .map(|(id, fields)| {
                        Ok(Message {
                            id,
                            payload: payload_of(fields)?,
                            attempt: 1,
                        })
                    })
                    .collect();
            }
            self.check_open()?;
        }
    }

    async fn ack(
        &self,
        topic: &TopicName,
        group: &GroupName,
        ids: &[MessageId],
    ) -> Result<(), BrokerError> {
        self.check_open()?;
        check_name(topic.as_str())?;
        check_name(group.as_str())?;
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids.iter().map(|&id| format_id(id)).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("XACK")
            .arg(self.keys.stream(topic))
            .arg(group.as_str())
            .arg(&ids);
        pipe.cmd("HDEL")
            .arg(self.keys.reasons(topic, group))
            .arg(&ids)
            .ignore();
        let pipe = &pipe;
        let (acked,): (u64,) = self
            .call(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
            .map_err(backend)?;
        self.with_group(topic, group, |g| g.acked += acked);
        self.maybe_trim(topic).await;
        Ok(())
    }

    async fn extend(
        &self,
        topic: &TopicName,
        group: &GroupName,
        consumer: &ConsumerName,
        ids: &[MessageId],
    ) -> Result<(), BrokerError> {
        self.check_open()?;
        check_name(topic.as_str())?;
        check_name(group.as_str())?;
        if ids.is_empty() {
            return Ok(());
        }
        // XCLAIM … JUSTID resets the idle time and keeps the delivery count (JUSTID does not
        // increment it); ids no longer pending (acked, dead-lettered) are skipped by Redis.
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(self.keys.stream(topic))
            .arg(group.as_str())
            .arg(consumer.as_str())
            .arg(0)
            .arg(ids.iter().map(|&id| format_id(id)).collect::<Vec<_>>())
            .arg("JUSTID");
        let cmd = &cmd;
        let _: redis::Value = self
            .call(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
            .map_err(|e| for_group(e, topic, group))?;
        Ok(())
    }

    async fn nack(
        &self,
        topic: &TopicName,
        group: &GroupName,
        id: MessageId,
        reason: &str,
    ) -> Result<(), BrokerError> {
        self.check_open()?;
        check_name(topic.as_str())?;
        check_name(group.as_str())?;
        let (stream, dead, reasons) = (
            self.keys.stream(topic),
            self.keys.dead(topic),
            self.keys.reasons(topic, group),
        );
        let mut cmd = self.scripts.nack.invocation(&[&stream, &dead, &reasons]);
        cmd.arg(group.as_str())
            .arg(topic.as_str())
            .arg(format_id(id))
            .arg(reason)
            .arg(self.visibility_ms())
            .arg(self.max_attempts)
            .arg(self.max_len.unwrap_or(0));
        let outcome: i64 = self
            .eval(&self.scripts.nack, &cmd)
            .await
            .map_err(|e| for_group(e, topic, group))?;
        match outcome {
            1 => self.with_group(topic, group, |g| g.wake.notify_waiters()),
            2 => self.with_group(topic, group, |g| g.dead_lettered += 1),
            _ => {}
        }
        Ok(())
    }

    async fn dead_letters(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        self.check_open()?;
        check_name(topic.as_str())?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.keys.dead(topic))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit);
        let cmd = &cmd;
        let value: Value = self
            .call(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
            .map_err(backend)?;
        let mut out = Vec::new();
        for (id, fields) in entries_of(value)? {
            match dead_letter_of(topic, id, fields) {
                Ok(letter) => out.push(letter),
                Err(error) => {
                    tracing::warn!(%topic, %id, %error, "skipping a dead-letter entry it cannot read")
                }
            }
        }
        Ok(out)
    }

    async fn stats(&self) -> Result<Vec<TopicStats>, BrokerError> {
        self.check_open()?;
        let local = |t: &TopicName, g: &GroupName| {
            self.groups
                .lock()
                .get(&(t.clone(), g.clone()))
                .map_or((0, 0, 0), |l| (l.acked, l.redeliveries, l.dead_lettered))
        };
        let mut conn = self.shared.pick();
        match stats::collect(&mut conn, &self.keys, self.visibility, local).await {
            Err(BrokerError::Unavailable(_)) => {
                // Once more: the first call after a reconnect fails on the dead connection.
                let mut conn = self.shared.pick();
                stats::collect(&mut conn, &self.keys, self.visibility, local).await
            }
            result => result,
        }
    }

    async fn close(&self) -> Result<(), BrokerError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.blocking.clear();
        info!(url = %self.shown_url, "redis broker closed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_is_send_and_sync() {
        fn is<T: Send + Sync>() {}
        is::<RedisBroker>();
    }
}
