//! The writer thread: the only code that writes, fsyncs or deletes broker files after open.
//!
//! Callers send an [`Op`] and await its reply. The thread takes every op that is queued when it
//! wakes up and handles them as one *round*, which is what makes group commit work: concurrent
//! publishers and ackers share one fsync per file per round. A round:
//! 1. appends published messages and dead-letter envelopes to their topics' logs;
//! 2. fsyncs those logs (per the [`FsyncPolicy`]) and only then makes the records visible to fetch;
//! 3. appends ack records (including the source acks of dead letters) to the group ack files and
//!    fsyncs them, so an ack is never durable before the message or dead letter it refers to;
//! 4. applies the acks in memory, deletes fully acked segments, compacts large ack files, replies.
//!
//! fsync runs on this dedicated thread, never on the async runtime.

use super::{
    acks::to_ranges,
    group::Group,
    topic::Topic,
    Shared,
};
use crate::{BrokerError, FsyncPolicy};
use bytes::Bytes;
use gpufleet_core::{GroupName, TopicName};
use std::{
    ops::Range,
    sync::{
        atomic::Ordering,
        mpsc::{self, RecvTimeoutError},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};
use tokio::sync::oneshot;
use tracing::warn;

/// Where the writer thread sends a result.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, BrokerError>>;

/// At most this many ops are handled in one round.
const MAX_OPS_PER_ROUND: usize = 1024;

/// A request to the writer thread.
#[derive(Debug)]
pub(crate) enum Op {
    /// Append messages (creating the topic on first use); replies with their offsets.
    Publish { topic: TopicName, payloads: Vec<Bytes>, reply: Reply<Range<u64>> },
    /// Make acks durable, then apply them.
    Ack { topic: Arc<Topic>, group: Arc<Group>, offsets: Vec<u64>, reply: Reply<()> },
    /// Append envelopes to the dead-letter topic, then ack `offsets` on the source group.
    DeadLetter {
        dead: TopicName,
        envelopes: Vec<Bytes>,
        topic: Arc<Topic>,
        group: Arc<Group>,
        offsets: Vec<u64>,
        reply: Reply<()>,
    },
    /// Create a consumer group (and the topic on first use).
    CreateGroup { topic: TopicName, group: GroupName, reply: Reply<()> },
    /// fsync everything written so far; `close`: then stop the thread.
    Flush { close: bool, reply: Reply<()> },
}

/// Starts the writer thread.
pub(crate) fn spawn(shared: Arc<Shared>) -> Result<(mpsc::Sender<Op>, JoinHandle<()>), BrokerError> {
    let (tx, rx) = mpsc::channel();
    let writer = Writer {
        fsync: shared.fsync,
        shared,
        last_sync: Instant::now(),
        dirty_topics: Vec::new(),
        dirty_groups: Vec::new(),
    };
    let handle = std::thread::Builder::new()
        .name("gpufleet-broker-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|source| BrokerError::Io { path: "<writer thread>".into(), source })?;
    Ok((tx, handle))
}

struct Writer {
    shared: Arc<Shared>,
    fsync: FsyncPolicy,
    last_sync: Instant,
    /// Written but not fsynced (`Interval` and `Never`).
    dirty_topics: Vec<Arc<Topic>>,
    dirty_groups: Vec<Arc<Group>>,
}

/// The outcome of step 1 for one op.
type Appended = Option<Result<(Arc<Topic>, Range<u64>), BrokerError>>;

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        loop {
            let first = match self.interval_wait() {
                None => match rx.recv() {
                    Ok(op) => op,
                    Err(_) => return,
                },
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(op) => op,
                    Err(RecvTimeoutError::Timeout) => {
                        self.sync_dirty();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                },
            };
            let mut ops = vec![first];
            while ops.len() < MAX_OPS_PER_ROUND {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            if self.round(ops) {
                return;
            }
        }
    }

    /// Under `Interval`, how long until dirty files must be synced.
    fn interval_wait(&self) -> Option<Duration> {
        match self.fsync {
            FsyncPolicy::Interval(every) if !self.dirty_topics.is_empty() || !self.dirty_groups.is_empty() => {
                Some(every.saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    /// Handles one batch of ops; returns whether the thread must stop.
    fn round(&mut self, ops: Vec<Op>) -> bool {
        let mut close = false;
        let mut flush = false;
        // Step 1: appends.
        let mut appended: Vec<Appended> = Vec::with_capacity(ops.len());
        let mut touched: Vec<Arc<Topic>> = Vec::new();
        for op in &ops {
            let result = match op {
                Op::Publish { topic, payloads, .. } => Some(self.append(topic, payloads)),
                Op::DeadLetter { dead, envelopes, .. } => Some(self.append(dead, envelopes)),
                Op::Flush { close: c, .. } => {
                    flush = true;
                    close |= c;
                    None
                }
                Op::Ack { .. } | Op::CreateGroup { .. } => None,
            };
            if let Some(Ok((topic, _))) = &result {
                push_unique(&mut touched, topic);
            }
            appended.push(result);
        }
        // Step 2: make the logs durable, then visible.
        let sync_now = self.sync_due(flush);
        let mut failed: Vec<(Arc<Topic>, String)> = Vec::new();
        for topic in &touched {
            let mut writer = topic.writer.lock();
            if sync_now {
                if let Err(e) = writer.sync() {
                    warn!(topic = %topic.name, error = %e, "broker log fsync failed");
                    failed.push((topic.clone(), e.to_string()));
                    continue;
                }
            } else {
                push_unique(&mut self.dirty_topics, topic);
            }
            let visible = writer.publish_to(&mut topic.view.write());
            drop(writer);
            topic.published.fetch_add(visible, Ordering::Relaxed);
            topic.notify.notify_waiters();
        }
        for (result, _) in appended.iter_mut().zip(&ops) {
            if let Some(Ok((topic, _))) = result {
                if let Some((_, why)) = failed.iter().find(|(t, _)| Arc::ptr_eq(t, topic)) {
                    *result = Some(Err(BrokerError::Io { path: topic.name.as_str().into(), source: std::io::Error::other(why.clone()) }));
                }
            }
        }
        // Step 3: ack records, durable after the messages they refer to.
        let mut acks: Vec<Option<Result<Vec<(u64, u64)>, BrokerError>>> = Vec::with_capacity(ops.len());
        let mut groups: Vec<Arc<Group>> = Vec::new();
        for (op, result) in ops.iter().zip(&appended) {
            let ack = match op {
                Op::Ack { group, offsets, .. } => Some(append_acks(group, offsets)),
                Op::DeadLetter { group, offsets, .. } if matches!(result, Some(Ok(_))) => Some(append_acks(group, offsets)),
                _ => None,
            };
            if let (Some(Ok(_)), Op::Ack { group, .. } | Op::DeadLetter { group, .. }) = (&ack, op) {
                push_unique(&mut groups, group);
            }
            acks.push(ack);
        }
        let mut failed_groups: Vec<(Arc<Group>, String)> = Vec::new();
        for group in &groups {
            if sync_now {
                if let Err(e) = group.file.lock().sync() {
                    warn!(group = %group.name, error = %e, "broker ack file fsync failed");
                    failed_groups.push((group.clone(), e.to_string()));
                }
            } else {
                push_unique(&mut self.dirty_groups, group);
            }
        }
        if sync_now {
            self.sync_dirty();
        }
        // Step 4: apply, reclaim, compact, reply.
        let mut reclaim: Vec<Arc<Topic>> = Vec::new();
        for (op, ack) in ops.iter().zip(acks.iter_mut()) {
            let (Op::Ack { topic, group, .. } | Op::DeadLetter { topic, group, .. }) = op else { continue };
            if let Some(Ok(_)) = ack {
                if let Some((_, why)) = failed_groups.iter().find(|(g, _)| Arc::ptr_eq(g, group)) {
                    *ack = Some(Err(BrokerError::Io { path: group.name.as_str().into(), source: std::io::Error::other(why.clone()) }));
                }
            }
            if let Some(Ok(ranges)) = ack {
                group.state.lock().apply_acked(ranges, matches!(op, Op::DeadLetter { .. }));
                push_unique(&mut reclaim, topic);
            }
        }
        for topic in &reclaim {
            topic.reclaim();
        }
        for group in &groups {
            let mut file = group.file.lock();
            if file.needs_compaction() {
                let snapshot = group.state.lock().acks.clone();
                if let Err(error) = file.compact(&snapshot) {
                    warn!(group = %group.name, %error, "cannot compact a broker ack file");
                }
            }
        }
        for ((op, appended), ack) in ops.into_iter().zip(appended).zip(acks) {
            reply(op, appended, ack, &self.shared);
        }
        close
    }

    /// Whether this round fsyncs.
    fn sync_due(&self, flush: bool) -> bool {
        flush
            || match self.fsync {
                FsyncPolicy::PerBatch => true,
                FsyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
                FsyncPolicy::Never => false,
            }
    }

    /// fsyncs everything written under `Interval`/`Never` since the last sync.
    fn sync_dirty(&mut self) {
        for topic in self.dirty_topics.drain(..) {
            let mut writer = topic.writer.lock();
            if writer.is_dirty() {
                if let Err(error) = writer.sync() {
                    warn!(topic = %topic.name, %error, "broker log fsync failed");
                }
            }
        }
        for group in self.dirty_groups.drain(..) {
            if let Err(error) = group.file.lock().sync() {
                warn!(group = %group.name, %error, "broker ack file fsync failed");
            }
        }
        self.last_sync = Instant::now();
    }

    /// Appends to a topic, creating it on first use.
    fn append(&self, name: &TopicName, payloads: &[Bytes]) -> Result<(Arc<Topic>, Range<u64>), BrokerError> {
        let topic = self.shared.topic_or_create(name)?;
        let range = topic.writer.lock().append(payloads)?;
        Ok((topic, range))
    }
}

fn append_acks(group: &Group, offsets: &[u64]) -> Result<Vec<(u64, u64)>, BrokerError> {
    let ranges = to_ranges(&mut offsets.to_vec());
    group.file.lock().append(&ranges)?;
    Ok(ranges)
}

fn reply(op: Op, appended: Appended, ack: Option<Result<Vec<(u64, u64)>, BrokerError>>, shared: &Shared) {
    // A dropped receiver means the caller stopped waiting (its future was cancelled): the work is
    // done regardless, so the send result is ignored.
    match op {
        Op::Publish { reply, .. } => {
            let result = appended.unwrap_or(Err(BrokerError::Closed)).map(|(_, range)| range);
            let _ = reply.send(result);
        }
        Op::Ack { reply, .. } | Op::DeadLetter { reply, .. } => {
            let result = match (appended, ack) {
                (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e),
                _ => Ok(()),
            };
            let _ = reply.send(result);
        }
        Op::CreateGroup { topic, group, reply } => {
            let _ = reply.send(shared.topic_or_create(&topic).and_then(|t| t.create_group(&group)));
        }
        Op::Flush { reply, .. } => {
            let _ = reply.send(Ok(()));
        }
    }
}

fn push_unique<T>(list: &mut Vec<Arc<T>>, item: &Arc<T>) {
    if !list.iter().any(|x| Arc::ptr_eq(x, item)) {
        list.push(item.clone());
    }
}
