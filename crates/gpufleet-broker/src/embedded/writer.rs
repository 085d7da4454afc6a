//! The writer thread: the only code that writes, fsyncs or deletes broker files after open.
//!
//! Callers send an [`Op`] and await its reply. The thread takes every op that is queued when it
//! wakes up and handles them as one *round*, which is what makes group commit work: concurrent
//! publishers and ackers share one fsync per file per round. A round:
//! 1. creates requested groups; appends ack records to the group ack files, fsyncs them, applies
//!    the acks in memory (deleting fully acked segments, compacting grown ack files) and answers
//!    the ackers. An acked message was visible, so its record is already durable;
//! 2. appends published messages and dead-letter envelopes to their topics' logs, fsyncs those
//!    logs, makes the records visible to fetch and answers the publishers;
//! 3. writes and fsyncs the source acks of the dead letters, now that their envelopes are
//!    durable. No ack is ever durable before the record it refers to.
//!
//! Under `Interval`/`Never` the fsyncs are skipped (done later by the timer or `close`).
//! fsync runs on this dedicated thread, never on the async runtime.

use super::{acks::to_ranges, group::Group, topic::Topic, Shared};
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
    Publish {
        topic: TopicName,
        payloads: Vec<Bytes>,
        reply: Reply<Range<u64>>,
    },
    /// Make acks durable, then apply them.
    Ack {
        topic: Arc<Topic>,
        group: Arc<Group>,
        offsets: Vec<u64>,
        reply: Reply<()>,
    },
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
    CreateGroup {
        topic: TopicName,
        group: GroupName,
        reply: Reply<()>,
    },
    /// fsync everything written so far; `close`: then stop the thread.
    Flush { close: bool, reply: Reply<()> },
}

/// Starts the writer thread.
pub(crate) fn spawn(
    shared: Arc<Shared>,
) -> Result<(mpsc::Sender<Op>, JoinHandle<()>), BrokerError> {
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
        .map_err(|source| BrokerError::Io {
            path: "<writer thread>".into(),
            source,
        })?;
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

/// A publish or dead-letter append of this round.
struct Append<R> {
    topic: TopicName,
    payloads: Vec<Bytes>,
    result: Result<(Arc<Topic>, Range<u64>), BrokerError>,
    reply: Reply<R>,
    /// For dead letters: the source acks to write once the envelopes are durable.
    source_acks: Option<(Arc<Topic>, Arc<Group>, Vec<u64>)>,
}

/// Ack records to write this round.
struct AckJob {
    topic: Arc<Topic>,
    group: Arc<Group>,
    ranges: Vec<(u64, u64)>,
    dead: bool,
    result: Result<(), BrokerError>,
    reply: Reply<()>,
}

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
            FsyncPolicy::Interval(every)
                if !self.dirty_topics.is_empty() || !self.dirty_groups.is_empty() =>
            {
                Some(every.saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    /// Handles one batch of ops; returns whether the thread must stop.
    fn round(&mut self, ops: Vec<Op>) -> bool {
        let (mut publishes, mut dead_letters, mut acks, mut flushes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut close = false;
        for op in ops {
            match op {
                Op::Publish {
                    topic,
                    payloads,
                    reply,
                } => {
                    publishes.push(Append {
                        topic,
                        payloads,
                        result: Err(BrokerError::Closed),
                        reply,
                        source_acks: None,
                    });
                }
                Op::DeadLetter {
                    dead,
                    envelopes,
                    topic,
                    group,
                    offsets,
                    reply,
                } => dead_letters.push(Append {
                    topic: dead,
                    payloads: envelopes,
                    result: Err(BrokerError::Closed),
                    reply,
                    source_acks: Some((topic, group, offsets)),
                }),
                Op::Ack {
                    topic,
                    group,
                    mut offsets,
                    reply,
                } => {
                    let ranges = to_ranges(&mut offsets);
                    acks.push(AckJob {
                        topic,
                        group,
                        ranges,
                        dead: false,
                        result: Ok(()),
                        reply,
                    });
                }
                Op::CreateGroup {
                    topic,
                    group,
                    reply,
                } => {
                    let _ = reply.send(
                        self.shared
                            .topic_or_create(&topic)
                            .and_then(|t| t.create_group(&group)),
                    );
                }
                Op::Flush { close: c, reply } => {
                    close |= c;
                    flushes.push(reply);
                }
            }
        }
        let sync_now = self.sync_due(!flushes.is_empty());
        // Step 1: plain acks. They refer to records that were visible, hence already durable, so
        // they need not wait for this round's log fsync.
        self.write_acks(&mut acks, sync_now);
        for job in acks {
            let _ = job.reply.send(job.result);
        }
        // Step 2: append, make durable, make visible; publishers are answered right away.
        self.append_all(&mut publishes, &mut dead_letters, sync_now);
        for p in publishes {
            let _ = p.reply.send(p.result.map(|(_, range)| range));
        }
        // Step 3: source acks of dead letters, after their envelopes are durable.
        let mut dead_acks = Vec::new();
        for d in dead_letters {
            match (d.result, d.source_acks) {
                (Ok(_), Some((topic, group, mut offsets))) => {
                    let ranges = to_ranges(&mut offsets);
                    let reply = d.reply;
                    dead_acks.push(AckJob {
                        topic,
                        group,
                        ranges,
                        dead: true,
                        result: Ok(()),
                        reply,
                    });
                }
                (result, _) => {
                    let _ = d.reply.send(result.map(|_| ()));
                }
            }
        }
        if !dead_acks.is_empty() {
            self.write_acks(&mut dead_acks, sync_now);
        }
        for job in dead_acks {
            let _ = job.reply.send(job.result);
        }
        if sync_now {
            self.sync_dirty();
        }
        for reply in flushes {
            let _ = reply.send(Ok(()));
        }
        close
    }

    /// Appends every publish and dead letter, fsyncs the touched logs (when `sync_now`) and makes
    /// what is durable visible to consumers.
    fn append_all(
        &mut self,
        publishes: &mut [Append<Range<u64>>],
        dead_letters: &mut [Append<()>],
        sync_now: bool,
    ) {
        let mut touched: Vec<Arc<Topic>> = Vec::new();
        let mut append = |topic: &TopicName, payloads: &[Bytes]| {
            let result = self.shared.topic_or_create(topic).and_then(|t| {
                let range = t.writer.lock().append(payloads)?;
                Ok((t, range))
            });
            if let Ok((t, _)) = &result {
                push_unique(&mut touched, t);
            }
            result
        };
        for p in publishes.iter_mut() {
            p.result = append(&p.topic, &p.payloads);
        }
        for d in dead_letters.iter_mut() {
            d.result = append(&d.topic, &d.payloads);
        }
        let mut failed: Vec<(Arc<Topic>, String)> = Vec::new();
        for topic in &touched {
            let mut writer = topic.writer.lock();
            if !sync_now {
                push_unique(&mut self.dirty_topics, topic);
            } else if let Err(e) = writer.sync() {
                warn!(topic = %topic.name, error = %e, "broker log fsync failed");
                failed.push((topic.clone(), e.to_string()));
                continue;
            }
            let visible = writer.publish_to(&mut topic.view.write());
            drop(writer);
            topic.published.fetch_add(visible, Ordering::Relaxed);
            topic.notify.notify_waiters();
        }
        let fail = |result: &mut Result<(Arc<Topic>, Range<u64>), BrokerError>| {
            let why = match result {
                Ok((t, _)) => failed
                    .iter()
                    .find(|(f, _)| Arc::ptr_eq(f, t))
                    .map(|(_, why)| (t.name.clone(), why.clone())),
                Err(_) => None,
            };
            if let Some((name, why)) = why {
                *result = Err(BrokerError::Io {
                    path: name.as_str().into(),
                    source: std::io::Error::other(why),
                });
            }
        };
        publishes.iter_mut().for_each(|p| fail(&mut p.result));
        dead_letters.iter_mut().for_each(|d| fail(&mut d.result));
    }

    /// Appends and (when `sync_now`) fsyncs ack records, then applies the acks in memory, deletes
    /// fully acked segments and compacts grown ack files.
    fn write_acks(&mut self, jobs: &mut [AckJob], sync_now: bool) {
        let mut groups: Vec<Arc<Group>> = Vec::new();
        for job in jobs.iter_mut() {
            job.result = job.group.file.lock().append(&job.ranges);
            if job.result.is_ok() {
                push_unique(&mut groups, &job.group);
            }
        }
        for group in &groups {
            if !sync_now {
                push_unique(&mut self.dirty_groups, group);
                continue;
            }
            if let Err(e) = group.file.lock().sync() {
                warn!(group = %group.name, error = %e, "broker ack file fsync failed");
                for job in jobs.iter_mut().filter(|j| Arc::ptr_eq(&j.group, group)) {
                    job.result = Err(BrokerError::Io {
                        path: group.name.as_str().into(),
                        source: std::io::Error::other(e.to_string()),
                    });
                }
            }
        }
        let mut reclaim: Vec<Arc<Topic>> = Vec::new();
        for job in jobs.iter().filter(|j| j.result.is_ok()) {
            job.group.state.lock().apply_acked(&job.ranges, job.dead);
            push_unique(&mut reclaim, &job.topic);
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
}

fn push_unique<T>(list: &mut Vec<Arc<T>>, item: &Arc<T>) {
    if !list.iter().any(|x| Arc::ptr_eq(x, item)) {
        list.push(item.clone());
    }
}
