//! Helpers shared by the broker's integration tests (the Redis ones in `redis_support`).

#![allow(dead_code, unreachable_pub)]

pub mod redis_support;

use async_trait::async_trait;
use bytes::Bytes;
use gpufleet_broker::{
    Broker, BrokerConfig, BrokerError, DeadLetter, EmbeddedBroker, Message, MessageId, TopicStats,
};
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use std::{sync::Arc, time::Duration};
use tempfile::TempDir;

/// A broker config in `dir` with the given delivery limits.
pub fn config(dir: &std::path::Path, visibility: Duration, max_attempts: u32) -> BrokerConfig {
    let mut config = BrokerConfig::new(dir);
    config.visibility_timeout = visibility;
    config.max_attempts = max_attempts;
    config
}

/// An embedded broker that owns (and removes) its temporary data directory.
pub struct TempBroker {
    broker: EmbeddedBroker,
    _dir: TempDir,
}

/// The conformance-suite factory for the embedded backend.
pub async fn temp_broker(visibility: Duration, max_attempts: u32) -> Arc<dyn Broker> {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::open(config(dir.path(), visibility, max_attempts)).expect("open");
    Arc::new(TempBroker { broker, _dir: dir })
}

#[async_trait]
impl Broker for TempBroker {
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
