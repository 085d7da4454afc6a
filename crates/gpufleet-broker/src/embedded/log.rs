//! A topic's log: the writer side that appends records and rolls segments ([`LogWriter`], owned by
//! the writer thread) and the reader side that fetches see ([`LogView`]).
//!
//! The writer appends without making records visible; after the records are durable under the
//! fsync policy it calls [`LogWriter::publish_to`], which moves the new segments, index entries and
//! lengths into the view. Consumers therefore never see a record that a crash could take back
//! under `FsyncPolicy::PerBatch`.

use super::{
    record,
    segment::{self, IndexBuilder, SegmentFile, SegmentView, RECORD_OVERHEAD, SEGMENT_HEADER},
};
use crate::BrokerError;
use bytes::Bytes;
use std::{collections::VecDeque, ops::Range, os::unix::fs::FileExt, path::PathBuf, sync::Arc};

/// Records are gathered into a buffer of about this size before a write.
const WRITE_CHUNK: usize = 1 << 20;
/// Payloads at least this large are written from their own buffer instead of being copied.
const DIRECT_WRITE: usize = 32 << 10;
/// Largest payload: its frame length must fit in a u32.
pub(crate) const MAX_PAYLOAD: usize = u32::MAX as usize - 8;

/// The retained segments as readers see them. Never empty.
#[derive(Debug)]
pub(crate) struct LogView {
    pub(crate) segments: VecDeque<SegmentView>,
}

/// Where to read part of a run of offsets.
#[derive(Debug)]
pub(crate) struct ReadPlan {
    pub(crate) seg: Arc<SegmentFile>,
    pub(crate) bytes: (u64, u64),
    pub(crate) offsets: (u64, u64),
}

impl LogView {
    /// Oldest retained offset.
    pub(crate) fn first(&self) -> u64 {
        self.segments.front().map_or(0, |s| s.seg.base)
    }

    /// One past the newest visible offset.
    pub(crate) fn end(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.end_offset())
    }

    /// Bytes of the retained segments.
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// An offset `to` such that the records `[from, to)` take about `budget` bytes or less (but
    /// at least one record), capped at [`LogView::end`].
    pub(crate) fn read_limit(&self, from: u64, budget: u64) -> u64 {
        let end = self.end();
        let from = from.max(self.first());
        if from >= end {
            return end;
        }
        let mut i = self
            .segments
            .partition_point(|s| s.seg.base <= from)
            .saturating_sub(1);
        let mut left = budget;
        let mut at = from;
        while let Some(v) = self.segments.get(i) {
            let (start, _) = v.byte_range(at, at + 1);
            let rel_at = (at - v.seg.base) as u32;
            let j = v.index.partition_point(|&(rel, _)| rel <= rel_at);
            if let Some(&(rel, _)) = v.index[j..].iter().find(|&&(_, pos)| pos - start > left) {
                return (v.seg.base + u64::from(rel)).max(from + 1);
            }
            left = left.saturating_sub(v.len - start);
            at = v.end_offset();
            i += 1;
        }
        end
    }

    /// The reads that cover offsets `[from, to)`, which must be retained and visible.
    pub(crate) fn plan(&self, from: u64, to: u64, out: &mut Vec<ReadPlan>) {
        let mut i = self
            .segments
            .partition_point(|s| s.seg.base <= from)
            .saturating_sub(1);
        let mut from = from;
        while from < to {
            let Some(view) = self.segments.get(i) else {
                return;
            };
            let upto = to.min(view.end_offset());
            // Offsets below the first retained one yield no plan (the caller notices them missing).
            from = from.max(view.seg.base);
            if from < upto {
                out.push(ReadPlan {
                    seg: view.seg.clone(),
                    bytes: view.byte_range(from, upto),
                    offsets: (from, upto),
                });
            }
            from = from.max(upto);
            i += 1;
        }
    }
}

/// A segment written since the last [`LogWriter::publish_to`].
#[derive(Debug)]
struct Pending {
    seg: Arc<SegmentFile>,
    new: bool,
    count: u64,
    len: u64,
    index: Vec<(u32, u64)>,
}

/// The appending side of a topic's log.
#[derive(Debug)]
pub(crate) struct LogWriter {
    dir: PathBuf,
    segment_bytes: u64,
    keep_unsynced: bool,
    active: Arc<SegmentFile>,
    pos: u64,
    next: u64,
    index: IndexBuilder,
    /// Rolled segments with writes not yet fsynced.
    unsynced: Vec<Arc<SegmentFile>>,
    dirty: bool,
    dir_dirty: bool,
    pending: Vec<Pending>,
    buf: Vec<u8>,
    failed: Option<String>,
}

impl LogWriter {
    /// Continues the newest segment of `view`. `keep_unsynced`: remember rolled segments so that
    /// the next sync covers them (false under `FsyncPolicy::Never`).
    pub(crate) fn new(
        dir: PathBuf,
        segment_bytes: u64,
        keep_unsynced: bool,
        view: &LogView,
    ) -> Result<Self, BrokerError> {
        let last = view
            .segments
            .back()
            .ok_or_else(|| BrokerError::Corrupt(format!("{}: no segment", dir.display())))?;
        let mut index = IndexBuilder::default();
        if let Some(&(rel, pos)) = last.index.last() {
            index.observe(u64::from(rel), pos);
        }
        let (active, pos, next) = (last.seg.clone(), last.len, last.end_offset());
        Ok(Self {
            dir,
            segment_bytes,
            keep_unsynced,
            active,
            pos,
            next,
            index,
            unsynced: Vec::new(),
            dirty: false,
            dir_dirty: false,
            pending: Vec::new(),
            buf: Vec::with_capacity(WRITE_CHUNK + 64 * 1024),
            failed: None,
        })
    }

    /// Appends records (not yet durable nor visible) and returns their offsets.
    ///
    /// After an I/O error the log refuses further writes until the broker is reopened: what is on
    /// disk past the last good record is then cut off by recovery as a torn tail.
    pub(crate) fn append(&mut self, payloads: &[Bytes]) -> Result<Range<u64>, BrokerError> {
        if let Some(why) = &self.failed {
            return Err(failed_error(&self.active.path, why));
        }
        let first = self.next;
        match self.append_inner(payloads) {
            Ok(()) => Ok(first..self.next),
            Err(e) => {
                self.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn append_inner(&mut self, payloads: &[Bytes]) -> Result<(), BrokerError> {
        self.buf.clear();
        let mut buf_at = self.pos;
        if self
            .pending
            .last()
            .is_none_or(|p| !Arc::ptr_eq(&p.seg, &self.active))
        {
            self.pending.push(Pending {
                seg: self.active.clone(),
                new: false,
                count: 0,
                len: 0,
                index: Vec::new(),
            });
        }
        for payload in payloads {
            if payload.len() > MAX_PAYLOAD {
                let source = std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "payload larger than 4 GiB",
                );
                return Err(BrokerError::Io {
                    path: self.active.path.clone(),
                    source,
                });
            }
            let size = RECORD_OVERHEAD + payload.len() as u64;
            if self.pos > SEGMENT_HEADER && self.pos + size > self.segment_bytes {
                self.write_buf(buf_at)?;
                self.roll()?;
                buf_at = self.pos;
            }
            let rel = self.next - self.active.base;
            let entry = self.index.observe(rel, self.pos);
            let offset = self.next.to_le_bytes();
            let header = record::frame_header(8 + payload.len() as u32, &[&offset, payload]);
            self.buf.extend_from_slice(&header);
            self.buf.extend_from_slice(&offset);
            if payload.len() >= DIRECT_WRITE {
                self.write_buf(buf_at)?;
                let at = buf_at + (self.pos - buf_at) + RECORD_OVERHEAD;
                self.active
                    .file
                    .write_all_at(payload, at)
                    .map_err(segment::io_err(&self.active.path))?;
                buf_at = at + payload.len() as u64;
            } else {
                self.buf.extend_from_slice(payload);
            }
            self.pos += size;
            self.next += 1;
            if let Some(p) = self.pending.last_mut() {
                p.index.extend(entry);
                p.count = self.next - self.active.base;
                p.len = self.pos;
            }
            if self.buf.len() >= WRITE_CHUNK {
                self.write_buf(buf_at)?;
                buf_at = self.pos;
            }
        }
        self.write_buf(buf_at)
    }

    /// Writes the buffer at `at` and empties it.
    fn write_buf(&mut self, at: u64) -> Result<(), BrokerError> {
        if !self.buf.is_empty() {
            self.active
                .file
                .write_all_at(&self.buf, at)
                .map_err(segment::io_err(&self.active.path))?;
            self.buf.clear();
            self.dirty = true;
        }
        Ok(())
    }

    /// Starts a new segment at the next offset.
    fn roll(&mut self) -> Result<(), BrokerError> {
        let seg = Arc::new(SegmentFile::create(&self.dir, self.next)?);
        if self.dirty && self.keep_unsynced {
            self.unsynced.push(self.active.clone());
        }
        self.active = seg.clone();
        self.pos = SEGMENT_HEADER;
        self.index = IndexBuilder::default();
        self.dirty = true;
        self.dir_dirty = true;
        self.pending.push(Pending {
            seg,
            new: true,
            count: 0,
            len: SEGMENT_HEADER,
            index: Vec::new(),
        });
        Ok(())
    }

    /// Whether anything was written since the last sync.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty || self.dir_dirty || !self.unsynced.is_empty()
    }

    /// fsyncs every segment written since the last sync, and the directory if segments were created.
    pub(crate) fn sync(&mut self) -> Result<(), BrokerError> {
        if let Some(why) = &self.failed {
            return Err(failed_error(&self.active.path, why));
        }
        let result = self.sync_inner();
        if let Err(e) = &result {
            // After a failed fsync the kernel may have dropped the dirty pages: stop writing.
            self.failed = Some(e.to_string());
        }
        result
    }

    fn sync_inner(&mut self) -> Result<(), BrokerError> {
        for seg in self.unsynced.drain(..) {
            seg.sync()?;
        }
        if self.dirty {
            self.active.sync()?;
            self.dirty = false;
        }
        if self.dir_dirty {
            segment::sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Makes everything appended so far visible to readers; returns how many records that was.
    pub(crate) fn publish_to(&mut self, view: &mut LogView) -> u64 {
        let before = view.end();
        for p in self.pending.drain(..) {
            if p.new {
                view.segments.push_back(SegmentView::empty(p.seg.clone()));
            }
            let Some(v) = view
                .segments
                .iter_mut()
                .rev()
                .find(|v| Arc::ptr_eq(&v.seg, &p.seg))
            else {
                continue;
            };
            v.index.extend(p.index);
            v.count = v.count.max(p.count);
            v.len = v.len.max(p.len);
        }
        view.end() - before
    }
}

fn failed_error(path: &std::path::Path, why: &str) -> BrokerError {
    BrokerError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!(
            "an earlier write failed ({why}); reopen the broker"
        )),
    }
}
