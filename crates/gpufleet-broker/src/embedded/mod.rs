//! The embedded backend: a durable segment log per topic on local disk, with consumer groups kept
//! in memory and their acks persisted. It owns every file under `BrokerConfig::data_dir` and does
//! not depend on any other gpufleet crate than `gpufleet-core`.
//!
//! # Files
//! ```text
//! <data_dir>/<topic>/00000000000000000000.seg   segments, named by their first offset
//! <data_dir>/<topic>/groups/<group>.acks        durable ack state of each consumer group
//! ```
//! A topic directory is created on the first `publish` or `create_group`. Names may hold letters,
//! digits, '.', '-' and '_' (at most 200 bytes, not starting with '.').
//!
//! **Segment** (`segment`): 16-byte header (`GFSEG\0\0\x01`, base offset u64 LE), then records.
//! **Record** (`record`): `[len u32][crc32 u32][offset u64][payload]`, all little endian; `len`
//! counts offset + payload and the CRC32 (crc32fast) covers them. A new segment starts when the
//! next record would take the active one past `segment_bytes` (capped at 1 GiB). A message id is
//! its offset.
//! **Ack file** (`ackfile`): magic `GFACK\0\0\x01`, then records framed the same way holding a
//! snapshot (low watermark + acked ranges above it) or a batch of acked ranges. It is rewritten as a
//! single snapshot (temporary file, fsync, rename, directory fsync) on create, on every open, and
//! when it outgrows 1 MiB and four times its last snapshot.
//! **Dead letters** (`envelope`): `<topic>.dead` is an ordinary topic whose payloads are envelopes
//! (original topic, group, id, reason, attempts, time, payload).
//!
//! # Writes and the fsync policy
//! Every file write happens on one thread (`writer`), which handles all requests queued when it
//! wakes as one round (group commit):
//! - `PerBatch`: a round writes and fsyncs the queued ack records (answering the ackers), then
//!   appends all published messages, fsyncs each touched log once, makes the messages visible to
//!   consumers and answers the publishers. Concurrent publishers (and ackers) share the fsync.
//! - `Interval(d)`: messages and acks are visible/applied after the write; dirty files are fsynced
//!   at most every `d` (a crash may lose the last `d` of publishes and acks).
//! - `Never`: the OS decides; only `close` fsyncs.
//!
//! Messages become visible to `fetch` only once durable (under `PerBatch`), and an ack record is
//! written only after the record it acks is durable, so after a crash no durable ack can refer to a
//! lost message. Under the weaker policies it can; recovery then forgets such acks.
//!
//! # Recovery (`EmbeddedBroker::open`)
//! Per topic: replay the ack files, delete segments every group has acked (a crash may have left
//! them), scan the remaining segments verifying every CRC and offset, truncate a torn tail of the
//! last segment with a warning (a partial record, a bad record ending at end of file, or a
//! zero-filled tail), and fail with [`BrokerError::Corrupt`] naming file and byte position for a bad
//! record anywhere else. Then rewrite each ack file as a snapshot clamped to the recovered log.
//! In-flight state and attempt counts are not persisted: after a crash every unacked message is
//! delivered again, as attempt 1.
//!
//! # Memory
//! Payloads are not kept: fetch reads them back with `pread` (normally from the page cache).
//! Memory per topic is a sparse index (one entry per 8 KiB of log), per group the ack ranges and
//! the in-flight table (bounded by what consumers hold). One fetch hands out about 64 MiB of new
//! messages at most, whatever its `max`. Open reads every retained segment once (about 0.5 s per
//! GB from the page cache), so its time grows with the backlog.
//!
//! # Known limits
//! - After an I/O error (disk full, failed fsync) a topic or ack file refuses writes until the
//!   broker is reopened; recovery then cuts off the partial write.
//! - A power loss that persists a later part of an unsynced write but not an earlier part leaves a
//!   bad record followed by data, which open reports as corruption (a process crash cannot).
//! - Nothing stops two processes from opening the same directory.

mod ackfile;
mod acks;
mod broker;
mod envelope;
mod group;
mod log;
mod record;
mod segment;
mod topic;
mod writer;

pub use broker::EmbeddedBroker;

use crate::{BrokerError, FsyncPolicy};
use gpufleet_core::TopicName;
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::{path::PathBuf, sync::Arc};
use topic::{LogSettings, Topic};

/// Longest topic or group name accepted from callers.
const MAX_NAME: usize = 200;
/// Largest segment size honoured (keeps in-segment record numbers within u32).
const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// Whether `name` may name a topic or group directory/file. Dead-letter topics (`<topic>.dead`)
/// may exceed [`MAX_NAME`], so this only enforces the file-system limit.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Rejects a caller-supplied topic or group name that is not acceptable.
fn check_name(name: &str) -> Result<(), BrokerError> {
    if valid_name(name) && name.len() <= MAX_NAME {
        Ok(())
    } else {
        Err(BrokerError::InvalidName(name.to_string()))
    }
}

/// State shared by the async API and the writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    data_dir: PathBuf,
    settings: LogSettings,
    pub(crate) fsync: FsyncPolicy,
    topics: RwLock<FxHashMap<TopicName, Arc<Topic>>>,
}

impl Shared {
    fn topic(&self, name: &TopicName) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// The topic, created on disk if new (writer thread only, so creation never races).
    pub(crate) fn topic_or_create(&self, name: &TopicName) -> Result<Arc<Topic>, BrokerError> {
        if let Some(topic) = self.topic(name) {
            return Ok(topic);
        }
        let topic = Arc::new(Topic::create(&self.data_dir, name.clone(), self.settings)?);
        self.topics.write().insert(name.clone(), topic.clone());
        Ok(topic)
    }
}
