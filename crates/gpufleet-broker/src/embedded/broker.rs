//! [`EmbeddedBroker`]: opening the data directory and the async [`Broker`] API. Reads (fetch,
//! stats, dead letters) run on the caller's task; every write goes to the writer thread.

use super::{
    check_name,
    envelope::{self, Envelope},
    group::{DeadCandidate, Group, Limits, Nacked},
    topic::{self, LogSettings, Topic},
    valid_name,
    writer::{self, Op, Reply},
    Shared, MAX_SEGMENT_BYTES,
};
use crate::{
    dead_letter_topic, Broker, BrokerConfig, BrokerError, DeadLetter, FsyncPolicy, Message,
    MessageId, TopicStats,
};
use async_trait::async_trait;
use bytes::Bytes;
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use parking_lot::{Mutex, RwLock};
use std::{
    fs,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::{sync::oneshot, time::Instant};
use tracing::{info, warn};

/// Reads larger than this run on the blocking pool instead of the async worker.
const INLINE_READ_BYTES: u64 = 1 << 20;

/// The standalone broker backend: a durable segment log on local disk (see the module docs).
pub struct EmbeddedBroker {
    shared: Arc<Shared>,
    limits: Limits,
    ops: mpsc::Sender<Op>,
    closed: AtomicBool,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("data_dir", &self.shared.data_dir)
            .finish_non_exhaustive()
    }
}

impl EmbeddedBroker {
    /// Opens (creating if needed) the log in `config.data_dir`, recovering every topic found there,
    /// and starts the writer thread. Needs no async runtime. `max_attempts` 0 is taken as 1.
    pub fn open(config: BrokerConfig) -> Result<Self, BrokerError> {
        let data_dir = config.data_dir.clone();
        fs::create_dir_all(&data_dir).map_err(|source| BrokerError::Io {
            path: data_dir.clone(),
            source,
        })?;
        let settings = LogSettings {
            segment_bytes: config.segment_bytes.clamp(1, MAX_SEGMENT_BYTES),
            keep_unsynced: config.fsync != FsyncPolicy::Never,
        };
        let mut topics = rustc_hash::FxHashMap::default();
        let io_err = |source| BrokerError::Io {
            path: data_dir.clone(),
            source,
        };
        for entry in fs::read_dir(&data_dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name().into_string().unwrap_or_default();
            if !entry.file_type().map_err(io_err)?.is_dir() || !valid_name(&name) {
                continue;
            }
            let topic = Topic::recover(entry.path(), TopicName::new(&name), settings)?;
            topics.insert(topic.name.clone(), Arc::new(topic));
        }
        info!(data_dir = %data_dir.display(), topics = topics.len(), fsync = ?config.fsync, "embedded broker opened");
        let shared = Arc::new(Shared {
            data_dir,
            settings,
            fsync: config.fsync,
            topics: RwLock::new(topics),
        });
        let (ops, handle) = writer::spawn(shared.clone())?;
        Ok(Self {
            shared,
            limits: Limits {
                visibility: config.visibility_timeout,
                max_attempts: config.max_attempts.max(1),
            },
            ops,
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Sends an op to the writer thread and waits for its reply.
    async fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BrokerError::Closed);
        }
        let (tx, rx) = oneshot::channel();
        self.ops.send(op(tx)).map_err(|_| BrokerError::Closed)?;
        rx.await.map_err(|_| BrokerError::Closed)?
    }

    fn check_open(&self) -> Result<(), BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BrokerError::Closed);
        }
        Ok(())
    }

    /// The topic and group, or `UnknownGroup`.
    fn lookup(
        &self,
        topic: &TopicName,
        group: &GroupName,
    ) -> Result<(Arc<Topic>, Arc<Group>), BrokerError> {
        self.check_open()?;
        check_name(topic.as_str())?;
        check_name(group.as_str())?;
        let unknown = || BrokerError::UnknownGroup {
            topic: topic.clone(),
            group: group.clone(),
        };
        let t = self.shared.topic(topic).ok_or_else(unknown)?;
        let g = t.group(group).ok_or_else(unknown)?;
        Ok((t, g))
    }

    /// Reads the payloads of `offsets` (retained, visible), in order.
    async fn read(&self, topic: &Topic, offsets: &[u64]) -> Result<Vec<Bytes>, BrokerError> {
        let plans = topic.plan(offsets);
        let bytes: u64 = plans.iter().map(|p| p.bytes.1 - p.bytes.0).sum();
        let records = if bytes > INLINE_READ_BYTES {
            tokio::task::spawn_blocking(move || topic::read_plans(&plans))
                .await
                .map_err(|e| BrokerError::Io {
                    path: topic.name.as_str().into(),
                    source: std::io::Error::other(e),
                })??
        } else {
            topic::read_plans(&plans)?
        };
        if records.len() != offsets.len()
            || records
                .iter()
                .zip(offsets)
                .any(|((got, _), want)| got != want)
        {
            return Err(BrokerError::Corrupt(format!(
                "topic {}: log does not hold the requested offsets",
                topic.name
            )));
        }
        Ok(records.into_iter().map(|(_, payload)| payload).collect())
    }

    /// Moves out-of-attempts messages to `<topic>.dead` and acks them; on failure they go back in
    /// flight and are retried after a visibility timeout.
    async fn dead_letter(
        &self,
        topic: &Arc<Topic>,
        group: &Arc<Group>,
        dead: Vec<DeadCandidate>,
    ) -> Result<(), BrokerError> {
        let offsets: Vec<u64> = dead.iter().map(|d| d.offset).collect();
        let result = match self.read(topic, &offsets).await {
            Ok(payloads) => {
                let dead_at_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                let envelopes = dead
                    .iter()
                    .zip(&payloads)
                    .map(|(d, payload)| {
                        Envelope {
                            topic: &topic.name,
                            group: &group.name,
                            original_id: MessageId(u128::from(d.offset)),
                            reason: &d.reason,
                            attempts: d.attempts,
                            dead_at_ms,
                            payload,
                        }
                        .encode()
                    })
                    .collect();
                let (t, g, dead_topic) =
                    (topic.clone(), group.clone(), dead_letter_topic(&topic.name));
                self.call(|reply| Op::DeadLetter {
                    dead: dead_topic,
                    envelopes,
                    topic: t,
                    group: g,
                    offsets,
                    reply,
                })
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(error) = &result {
            warn!(topic = %topic.name, group = %group.name, %error, "cannot dead-letter messages; will retry");
            group.state.lock().restore(
                dead.into_iter().map(DeadCandidate::into_entry),
                Instant::now(),
                self.limits,
            );
        }
        result
    }
}

fn offset_of(id: MessageId) -> Option<u64> {
    u64::try_from(id.0).ok()
}

#[async_trait]
impl Broker for EmbeddedBroker {
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
        let (name, payloads) = (topic.clone(), payloads.to_vec());
        let range = self
            .call(|reply| Op::Publish {
                topic: name,
                payloads,
                reply,
            })
            .await?;
        Ok(range.map(|o| MessageId(u128::from(o))).collect())
    }

    async fn create_group(&self, topic: &TopicName, group: &GroupName) -> Result<(), BrokerError> {
        self.check_open()?;
        check_name(topic.as_str())?;
        check_name(group.as_str())?;
        if self
            .shared
            .topic(topic)
            .is_some_and(|t| t.group(group).is_some())
        {
            return Ok(());
        }
        let (topic, group) = (topic.clone(), group.clone());
        self.call(|reply| Op::CreateGroup {
            topic,
            group,
            reply,
        })
        .await
    }

    async fn fetch(
        &self,
        topic: &TopicName,
        group: &GroupName,
        consumer: &ConsumerName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, BrokerError> {
        let (topic, group) = self.lookup(topic, group)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so a publish in between is not missed.
            let notified = topic.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let (first, end) = topic.bounds();
            let claim = {
                let mut state = group.state.lock();
                state.touch(consumer, now, self.limits);
                let limit = topic.fetch_limit(state.next_new(first));
                state.claim(now, max, (first, end.min(limit)), self.limits)
            };
            if !claim.dead.is_empty() {
                self.dead_letter(&topic, &group, claim.dead).await?;
            }
            if !claim.deliver.is_empty() {
                let offsets: Vec<u64> = claim.deliver.iter().map(|&(o, _)| o).collect();
                let payloads = self.read(&topic, &offsets).await?;
                let messages = claim.deliver.iter().zip(payloads);
                return Ok(messages
                    .map(|(&(o, attempt), payload)| Message {
                        id: MessageId(u128::from(o)),
                        payload,
                        attempt,
                    })
                    .collect());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let wake = claim.wake.map_or(deadline, |w| w.min(deadline));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
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
        let (t, g) = self.lookup(topic, group)?;
        let taken = g
            .state
            .lock()
            .take(ids.iter().filter_map(|&id| offset_of(id)));
        if taken.is_empty() {
            return Ok(());
        }
        let offsets: Vec<u64> = taken.iter().map(|(o, _)| *o).collect();
        let (topic, group) = (t.clone(), g.clone());
        let result = self
            .call(|reply| Op::Ack {
                topic,
                group,
                offsets,
                reply,
            })
            .await;
        if result.is_err() {
            g.state
                .lock()
                .restore(taken.into_iter(), Instant::now(), self.limits);
        }
        result
    }

    async fn extend(
        &self,
        topic: &TopicName,
        group: &GroupName,
        consumer: &ConsumerName,
        ids: &[MessageId],
    ) -> Result<(), BrokerError> {
        let (_, g) = self.lookup(topic, group)?;
        let now = Instant::now();
        let mut state = g.state.lock();
        state.touch(consumer, now, self.limits);
        state.extend(ids.iter().filter_map(|&id| offset_of(id)), now, self.limits);
        Ok(())
    }

    async fn nack(
        &self,
        topic: &TopicName,
        group: &GroupName,
        id: MessageId,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let (topic, group) = self.lookup(topic, group)?;
        let Some(offset) = offset_of(id) else {
            return Ok(());
        };
        let outcome = group
            .state
            .lock()
            .nack(offset, reason, Instant::now(), self.limits);
        match outcome {
            Nacked::Unknown => Ok(()),
            Nacked::Requeued => {
                topic.notify.notify_waiters();
                Ok(())
            }
            Nacked::Dead(candidate) => self.dead_letter(&topic, &group, vec![candidate]).await,
        }
    }

    async fn dead_letters(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        self.check_open()?;
        check_name(topic.as_str())?;
        let Some(dead) = self.shared.topic(&dead_letter_topic(topic)) else {
            return Ok(Vec::new());
        };
        let (first, end) = dead.bounds();
        let offsets: Vec<u64> = (first..end.min(first.saturating_add(limit as u64))).collect();
        let payloads = self.read(&dead, &offsets).await?;
        let mut out = Vec::with_capacity(payloads.len());
        for (offset, payload) in offsets.into_iter().zip(payloads) {
            match envelope::decode(MessageId(u128::from(offset)), &payload) {
                Ok(letter) => out.push(letter),
                Err(error) => {
                    warn!(topic = %dead.name, offset, error, "skipping a message that is not a dead-letter envelope")
                }
            }
        }
        Ok(out)
    }

    async fn stats(&self) -> Result<Vec<TopicStats>, BrokerError> {
        self.check_open()?;
        let now = Instant::now();
        let mut topics: Vec<Arc<Topic>> = self.shared.topics.read().values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let dead_depth = |t: &Topic| {
            self.shared
                .topic(&dead_letter_topic(&t.name))
                .map_or(0, |d| {
                    let (first, end) = d.bounds();
                    end - first
                })
        };
        Ok(topics
            .iter()
            .map(|t| t.stats(now, self.limits, dead_depth(t)))
            .collect())
    }

    async fn close(&self) -> Result<(), BrokerError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Waiting fetches return `Closed` now rather than at the end of their wait.
        for topic in self.shared.topics.read().values() {
            topic.notify.notify_waiters();
        }
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Flush {
                close: true,
                reply: tx,
            })
            .map_err(|_| BrokerError::Closed)?;
        let flushed = rx.await.map_err(|_| BrokerError::Closed).and_then(|r| r);
        let handle = self.writer.lock().take();
        if let Some(handle) = handle {
            if tokio::task::spawn_blocking(move || handle.join())
                .await
                .is_err()
            {
                warn!("broker writer thread did not stop cleanly");
            }
        }
        info!(data_dir = %self.shared.data_dir.display(), "embedded broker closed");
        flushed
    }
}
