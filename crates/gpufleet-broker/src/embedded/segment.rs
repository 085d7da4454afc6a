//! One segment file: its name and header, the sparse index of record positions, recovery on open
//! and reading records back with `pread`.
//!
//! A segment is `{base offset:020}.seg`: a 16-byte header (`GFSEG\0\0\x01` + base offset u64 LE)
//! followed by frames (see `record`) whose body is `[offset u64 LE][payload]`. Offsets inside a
//! segment are consecutive from the base.

use super::record::{self, Frame, ScanEnd, FRAME_HEADER};
use crate::BrokerError;
use bytes::Bytes;
use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};
use tracing::warn;

const MAGIC: &[u8; 8] = b"GFSEG\0\0\x01";
/// Bytes before the first record of a segment.
pub(crate) const SEGMENT_HEADER: u64 = 16;
/// Bytes a record adds to its payload (frame header + offset).
pub(crate) const RECORD_OVERHEAD: u64 = FRAME_HEADER + 8;
/// The sparse index keeps one entry per this many bytes of records (and one per record larger).
const INDEX_INTERVAL: u64 = 8 << 10;

/// An open segment file.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    /// Offset of its first record.
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    /// Read and written with positional I/O only, so readers and the writer share it.
    pub(crate) file: File,
}

/// The file name of the segment starting at `base`.
pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The base offset named by a segment file name, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BrokerError + '_ {
    move |source| BrokerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BrokerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl SegmentFile {
    /// Creates an empty segment (header only), atomically via a temporary file and a rename. The
    /// caller makes the directory entry durable (fsync of the directory).
    pub(crate) fn create(dir: &Path, base: u64) -> Result<Self, BrokerError> {
        let path = segment_path(dir, base);
        let tmp = path.with_extension("seg.tmp");
        let mut header = Vec::with_capacity(SEGMENT_HEADER as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&base.to_le_bytes());
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        // The header is durable before the name is, so a power loss cannot leave a named segment
        // without its header.
        f.write_all(&header)
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Self { base, path, file })
    }

    /// Opens an existing segment and checks its header.
    pub(crate) fn open(path: PathBuf, base: u64) -> Result<Self, BrokerError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut header = [0u8; SEGMENT_HEADER as usize];
        file.read_exact_at(&mut header, 0)
            .map_err(|_| record::corrupt(&path, 0, "bad segment header"))?;
        let named = u64::from_le_bytes(header[8..].try_into().unwrap_or_default());
        if &header[..8] != MAGIC || named != base {
            return Err(record::corrupt(
                &path,
                0,
                "segment header does not match its name",
            ));
        }
        Ok(Self { base, path, file })
    }

    /// Flushes written records to disk (`fdatasync`).
    pub(crate) fn sync(&self) -> Result<(), BrokerError> {
        self.file.sync_data().map_err(io_err(&self.path))
    }
}

/// Decides which records get a sparse-index entry.
#[derive(Debug, Default)]
pub(crate) struct IndexBuilder {
    last: Option<u64>,
}

impl IndexBuilder {
    /// The entry for the record at `rel` (offset minus base) and byte position `pos`, if it gets one.
    pub(crate) fn observe(&mut self, rel: u64, pos: u64) -> Option<(u32, u64)> {
        if self.last.is_some_and(|last| pos - last < INDEX_INTERVAL) {
            return None;
        }
        self.last = Some(pos);
        // A segment holds fewer than 2^32 records: every record takes at least 16 bytes and
        // `segment_bytes` is capped at 1 GiB (`MAX_SEGMENT_BYTES`), so `rel` < 2^26 + 1.
        Some((rel as u32, pos))
    }
}

/// What readers see of one segment: records `[base, base + count)`, bytes `[0, len)`.
#[derive(Debug)]
pub(crate) struct SegmentView {
    pub(crate) seg: Arc<SegmentFile>,
    pub(crate) count: u64,
    pub(crate) len: u64,
    /// `(offset - base, byte position)`, ascending.
    pub(crate) index: Vec<(u32, u64)>,
}

impl SegmentView {
    /// A view of a segment with no records yet.
    pub(crate) fn empty(seg: Arc<SegmentFile>) -> Self {
        Self {
            seg,
            count: 0,
            len: SEGMENT_HEADER,
            index: Vec::new(),
        }
    }

    /// One past the last offset.
    pub(crate) fn end_offset(&self) -> u64 {
        self.seg.base + self.count
    }

    /// Byte range that holds (at least) the records `[from, to)`, which must lie in this segment.
    pub(crate) fn byte_range(&self, from: u64, to: u64) -> (u64, u64) {
        let (rel_from, rel_to) = ((from - self.seg.base) as u32, (to - self.seg.base) as u32);
        let i = self.index.partition_point(|&(rel, _)| rel <= rel_from);
        let start = if i == 0 {
            SEGMENT_HEADER
        } else {
            self.index[i - 1].1
        };
        let j = self.index.partition_point(|&(rel, _)| rel < rel_to);
        let end = self.index.get(j).map_or(self.len, |&(_, pos)| pos);
        (start, end)
    }
}

/// Scans a segment, verifies every record and builds its view. In the last segment a torn tail is
/// truncated (with a warning); anywhere else any bad record is an error.
pub(crate) fn recover(seg: SegmentFile, last: bool) -> Result<SegmentView, BrokerError> {
    let mut index = IndexBuilder::default();
    let mut entries = Vec::new();
    let mut count = 0u64;
    let end = record::scan_file(&seg.file, &seg.path, SEGMENT_HEADER, |pos, body| {
        let offset = record_offset(body).ok_or("record shorter than its offset")?;
        if offset != seg.base + count {
            return Err(format!(
                "record has offset {offset}, expected {}",
                seg.base + count
            ));
        }
        entries.extend(index.observe(count, pos));
        count += 1;
        Ok(())
    })?;
    let len = match end {
        ScanEnd::Clean { end } => end,
        ScanEnd::Torn { at, why } if last => {
            warn!(path = %seg.path.display(), at, why, "truncating torn tail of the broker log");
            seg.file.set_len(at).map_err(io_err(&seg.path))?;
            seg.file.sync_all().map_err(io_err(&seg.path))?;
            at
        }
        ScanEnd::Torn { at, why } => return Err(record::corrupt(&seg.path, at, why)),
    };
    Ok(SegmentView {
        seg: Arc::new(seg),
        count,
        len,
        index: entries,
    })
}

fn record_offset(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(..8)?.try_into().ok()?))
}

/// Reads the records `[from, to)` found in bytes `[start, end)` of `seg`, verifying checksums.
/// Payloads are slices of one shared buffer.
pub(crate) fn read_records(
    seg: &SegmentFile,
    (start, end): (u64, u64),
    (from, to): (u64, u64),
    out: &mut Vec<(u64, Bytes)>,
) -> Result<(), BrokerError> {
    let mut buf = vec![0u8; (end - start) as usize];
    seg.file
        .read_exact_at(&mut buf, start)
        .map_err(io_err(&seg.path))?;
    let buf = Bytes::from(buf);
    let mut at = 0usize;
    let mut next = from;
    while next < to {
        let pos = start + at as u64;
        let (body, size) = match record::parse_frame(&buf[at..]) {
            Frame::Valid { body, size } => (body, size as usize),
            Frame::Incomplete => return Err(record::corrupt(&seg.path, pos, "record cut short")),
            Frame::Bad(why) => return Err(record::corrupt(&seg.path, pos, why)),
        };
        let offset =
            record_offset(body).ok_or_else(|| record::corrupt(&seg.path, pos, "short record"))?;
        if offset > next {
            return Err(record::corrupt(
                &seg.path,
                pos,
                "record offsets out of sequence",
            ));
        }
        if offset == next {
            let payload_at = at + RECORD_OVERHEAD as usize;
            out.push((offset, buf.slice(payload_at..at + size)));
            next += 1;
        }
        at += size;
    }
    Ok(())
}
