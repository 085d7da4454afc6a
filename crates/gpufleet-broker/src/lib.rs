//! The message broker: topics, consumer groups, at-least-once delivery with visibility timeouts,
//! redelivery and dead letters.
//!
//! It depends only on `gpufleet-core`; it never reads the environment or config files — callers pass
//! a [`BrokerConfig`].
//!
//! # Layout
//! - [`Broker`] (this file): the trait every backend implements, and its value types.
//! - [`embedded`]: the standalone backend [`EmbeddedBroker`], a durable segment log on disk (see its
//!   module doc for the file format, fsync policy and crash recovery).
//! - [`redis`]: [`RedisBroker`] on Redis Streams (consumer groups, Lua scripts for reclaim and dead
//!   letters, dedicated connections for blocking reads; see its module doc).
//! - [`testsuite`]: the one conformance suite every backend must pass (`broker_test_suite!`).
//!
//! # Semantics every backend keeps
//! - `publish` returns only when the messages are durable under the configured [`FsyncPolicy`].
//! - A fetched message is *in flight* for its group until acked. If it is not acked within the
//!   visibility timeout it is delivered again (attempt + 1); `nack` makes it due at once.
//! - When a message is due for attempt `max_attempts + 1`, it is instead appended to the dead-letter
//!   topic `<topic>.dead` with the reason and attempt count, and acked on the original topic.
//! - Acked messages are never delivered again to that group, including after a crash.

use async_trait::async_trait;
use bytes::Bytes;
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use serde::Serialize;
use std::{path::PathBuf, time::Duration};
use thiserror::Error;

pub mod embedded;
pub mod redis;
pub mod testsuite;

pub use embedded::EmbeddedBroker;
pub use redis::{RedisBroker, RedisBrokerConfig};

/// Identifies a message within its topic. Embedded: the log offset. Redis: `(ms << 64) | seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct MessageId(pub u128);

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A delivered message.
#[derive(Clone, Debug)]
pub struct Message {
    /// Its id (pass it to `ack`/`nack`).
    pub id: MessageId,
    /// The bytes that were published.
    pub payload: Bytes,
    /// 1 on the first delivery, 2 on the first redelivery, …
    pub attempt: u32,
}

/// A message that was moved to the dead-letter topic.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    /// Id inside the dead-letter topic.
    pub id: MessageId,
    /// Topic it was published to.
    pub topic: TopicName,
    /// Group that gave up on it.
    pub group: GroupName,
    /// Id it had in the original topic.
    pub original_id: MessageId,
    /// Why it was dead-lettered (last nack reason, or the visibility timeout).
    pub reason: String,
    /// How many deliveries were attempted.
    pub attempts: u32,
    /// When it was dead-lettered (epoch ms).
    pub dead_at_ms: i64,
    /// The original payload.
    #[serde(skip)]
    pub payload: Bytes,
}

/// Per-group counters.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct GroupStats {
    /// Group name.
    pub group: GroupName,
    /// Delivered and not yet acked.
    pub in_flight: u64,
    /// Published but not yet delivered to this group (consumer lag).
    pub lag: u64,
    /// Acked since start.
    pub acked: u64,
    /// Deliveries beyond the first since start.
    pub redeliveries: u64,
    /// Messages this group moved to the dead-letter topic since start.
    pub dead_lettered: u64,
    /// Consumers that fetched within the last visibility timeout.
    pub consumers: u64,
}

/// Per-topic counters.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TopicStats {
    /// Topic name.
    pub topic: TopicName,
    /// Messages retained (not yet acked by every group).
    pub depth: u64,
    /// Messages published since start.
    pub published: u64,
    /// Bytes on disk (embedded) or memory used (Redis), when known.
    pub bytes: u64,
    /// Messages currently in `<topic>.dead`.
    pub dead_letters: u64,
    /// One entry per consumer group.
    pub groups: Vec<GroupStats>,
}

/// When the embedded log calls fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FsyncPolicy {
    /// Every `publish` call (one fsync per batch, shared by concurrent publishers: group commit).
    PerBatch,
    /// At most once per interval; a crash may lose what was published in the last interval.
    Interval(Duration),
    /// Never (the OS decides). Only for benchmarks and throwaway data.
    Never,
}

/// Settings of a broker backend.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Directory of the embedded log.
    pub data_dir: PathBuf,
    /// How long a delivered message stays invisible before redelivery.
    pub visibility_timeout: Duration,
    /// Deliveries before a message is dead-lettered.
    pub max_attempts: u32,
    /// fsync policy of the embedded log.
    pub fsync: FsyncPolicy,
    /// Size at which the embedded log starts a new segment file.
    pub segment_bytes: u64,
}

impl BrokerConfig {
    /// Defaults: 5 s visibility, 5 attempts, fsync per batch, 64 MiB segments.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            visibility_timeout: Duration::from_secs(5),
            max_attempts: 5,
            fsync: FsyncPolicy::PerBatch,
            segment_bytes: 64 << 20,
        }
    }
}

/// Broker failures.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// A file operation failed.
    #[error("broker i/o error on {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// On-disk data that cannot be read back.
    #[error("broker log corrupt: {0}")]
    Corrupt(String),
    /// A topic or group name that is not acceptable.
    #[error("invalid name {0:?}: use letters, digits, '.', '-' and '_'")]
    InvalidName(String),
    /// The group has not been created on this topic.
    #[error("unknown consumer group {group} on topic {topic}")]
    UnknownGroup {
        /// Topic.
        topic: TopicName,
        /// Group.
        group: GroupName,
    },
    /// The broker was shut down.
    #[error("broker closed")]
    Closed,
    /// The backend server (Redis) failed; retrying may help.
    #[error("broker backend unavailable: {0}")]
    Unavailable(String),
}

impl BrokerError {
    /// Whether the same call may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BrokerError::Unavailable(_) | BrokerError::Io { .. })
    }
}

/// A message broker backend.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Appends messages to a topic (created on first use) and returns their ids once durable.
    async fn publish(
        &self,
        topic: &TopicName,
        payloads: &[Bytes],
    ) -> Result<Vec<MessageId>, BrokerError>;

    /// Creates a consumer group (idempotent). A new group starts at the oldest retained message.
    async fn create_group(&self, topic: &TopicName, group: &GroupName) -> Result<(), BrokerError>;

    /// Fetches up to `max` messages for `consumer` in `group`: due redeliveries first, then new
    /// messages. Waits up to `wait` when none is available; returns an empty vec on timeout.
    async fn fetch(
        &self,
        topic: &TopicName,
        group: &GroupName,
        consumer: &ConsumerName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, BrokerError>;

    /// Acknowledges processed messages. Unknown or already-acked ids are ignored.
    async fn ack(
        &self,
        topic: &TopicName,
        group: &GroupName,
        ids: &[MessageId],
    ) -> Result<(), BrokerError>;

    /// Reports that processing failed: the message becomes due for redelivery at once (or is
    /// dead-lettered when out of attempts), and `reason` is kept for the dead letter.
    async fn nack(
        &self,
        topic: &TopicName,
        group: &GroupName,
        id: MessageId,
        reason: &str,
    ) -> Result<(), BrokerError>;

    /// Tells the broker that `consumer` is still working on these in-flight messages: each stays
    /// invisible for another visibility timeout from now, and no delivery is counted (a collector
    /// retrying a store write through an outage calls this so its batch is neither handed to
    /// another consumer nor pushed towards the dead-letter topic). Unknown or acked ids are ignored.
    async fn extend(
        &self,
        topic: &TopicName,
        group: &GroupName,
        consumer: &ConsumerName,
        ids: &[MessageId],
    ) -> Result<(), BrokerError>;

    /// Dead letters of a topic, oldest first, at most `limit`.
    async fn dead_letters(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError>;

    /// Stats for every topic.
    async fn stats(&self) -> Result<Vec<TopicStats>, BrokerError>;

    /// Flushes and fsyncs everything; called on graceful shutdown.
    async fn close(&self) -> Result<(), BrokerError>;
}

/// The dead-letter topic of a topic.
pub fn dead_letter_topic(topic: &TopicName) -> TopicName {
    TopicName::new(format!("{topic}.dead"))
}
