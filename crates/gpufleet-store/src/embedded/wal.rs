//! The write-ahead log: numbered segment files `wal/<seq>.wal`, each the magic `GFW1` then
//! CRC-framed records. A record is one write: ingest wall time, the catalog definitions the
//! write introduced, then its stored points as `(series id varint, zigzag ts delta, f64 LE)`
//! (about 11 bytes a point).
//!
//! One dedicated thread owns the open segment. Writers enqueue records (under the store lock, so
//! log order is insert order) and await a reply; the thread drains everything queued, writes it
//! with one `write` and one `fsync` (when the config asks for fsync), then answers all of them
//! — group commit, without ever blocking the async runtime. After an I/O error the log refuses
//! every later record: the in-memory state may then hold samples that are not durable, and the
//! store must be reopened (the PostgreSQL "fsync failure is fatal" rule).
//!
//! A flush rotates to a new segment (queued like a record, so it is ordered with them) and,
//! once the flushed data is in partition files, deletes the older segments. Recovery replays
//! every segment in order; a torn or corrupt tail is cut off with a warning.

use super::bin::{begin_frame, end_frame, put_ivarint, put_varint, read_frames, Reader};
use super::catalog::Def;
use crate::StoreError;
use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{mpsc, Mutex},
    thread::JoinHandle,
};
use tokio::sync::oneshot;
use tracing::warn;

const MAGIC: &[u8; 4] = b"GFW1";

/// Why the log failed (cloneable so every waiting writer gets it).
#[derive(Clone, Debug)]
pub(crate) struct WalFailure {
    path: PathBuf,
    kind: std::io::ErrorKind,
    message: String,
}

impl From<WalFailure> for StoreError {
    fn from(f: WalFailure) -> Self {
        StoreError::Io {
            path: f.path,
            source: std::io::Error::new(f.kind, f.message),
        }
    }
}

fn failure(path: &Path, e: &std::io::Error) -> WalFailure {
    WalFailure {
        path: path.to_path_buf(),
        kind: e.kind(),
        message: e.to_string(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One decoded record.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct WalRecord {
    /// Wall-clock arrival of the write.
    pub(crate) ingest_ms: i64,
    /// Catalog definitions introduced by the write.
    pub(crate) defs: Vec<Def>,
    /// `(series, ts, value)`.
    pub(crate) points: Vec<(u32, i64, f64)>,
}

/// Builds one framed record while the write path inserts points.
pub(crate) struct RecordBuilder {
    buf: Vec<u8>,
    at: usize,
    prev_ts: i64,
    points: usize,
    defs: usize,
}

impl RecordBuilder {
    /// Starts a record for a write of about `points` points.
    pub(crate) fn new(ingest_ms: i64, defs: &[Def], points: usize) -> Self {
        let mut buf = Vec::with_capacity(32 + points * 12);
        let at = begin_frame(&mut buf);
        put_ivarint(&mut buf, ingest_ms);
        put_varint(&mut buf, defs.len() as u64);
        for d in defs {
            d.encode(&mut buf);
        }
        Self {
            buf,
            at,
            prev_ts: 0,
            points: 0,
            defs: defs.len(),
        }
    }

    /// Adds a stored point.
    pub(crate) fn push(&mut self, series: u32, ts: i64, v: f64) {
        put_varint(&mut self.buf, u64::from(series));
        put_ivarint(&mut self.buf, ts.wrapping_sub(self.prev_ts));
        self.prev_ts = ts;
        self.buf.extend_from_slice(&v.to_le_bytes());
        self.points += 1;
    }

    /// The framed record, or None when it holds nothing worth logging.
    pub(crate) fn finish(mut self) -> Option<Vec<u8>> {
        if self.points == 0 && self.defs == 0 {
            return None;
        }
        end_frame(&mut self.buf, self.at);
        Some(self.buf)
    }
}

/// Decodes a record payload.
pub(crate) fn decode_record(payload: &[u8]) -> Result<WalRecord, StoreError> {
    let mut r = Reader::new(payload, "wal record");
    let ingest_ms = r.ivarint()?;
    let n = r.count(3)?;
    let mut defs = Vec::with_capacity(n);
    for _ in 0..n {
        defs.push(Def::decode(&mut r)?);
    }
    let mut points = Vec::new();
    let mut prev = 0i64;
    while !r.is_empty() {
        let s = r.u32v()?;
        let ts = prev.wrapping_add(r.ivarint()?);
        prev = ts;
        points.push((s, ts, r.f64()?));
    }
    Ok(WalRecord {
        ingest_ms,
        defs,
        points,
    })
}

/// Path of segment `seq`.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// Segment numbers present, ascending.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(seq) = stem.parse::<u64>() {
            out.push(seq);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Replays one segment, cutting a torn tail. Calls `f` for each intact record in order.
pub(crate) fn replay_segment(
    dir: &Path,
    seq: u64,
    mut f: impl FnMut(WalRecord) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let path = segment_path(dir, seq);
    let buf = std::fs::read(&path).map_err(io(&path))?;
    if buf.len() < MAGIC.len() || &buf[..4] != MAGIC {
        warn!(path = %path.display(), len = buf.len(), "wal segment without a valid header; ignoring it");
        return Ok(());
    }
    let (frames, end) = read_frames(&buf[4..]);
    for payload in frames {
        f(decode_record(payload)?)?;
    }
    if 4 + end < buf.len() {
        warn!(path = %path.display(), kept = 4 + end, len = buf.len(), "wal segment has a torn tail; truncating it");
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        file.set_len((4 + end) as u64).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
    }
    Ok(())
}

/// Deletes segments numbered below `below`.
pub(crate) fn delete_segments_below(dir: &Path, below: u64) -> Result<(), StoreError> {
    for seq in list_segments(dir)? {
        if seq < below {
            let p = segment_path(dir, seq);
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    Ok(())
}

fn create_segment(dir: &Path, seq: u64) -> Result<(File, PathBuf), std::io::Error> {
    let path = segment_path(dir, seq);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    f.write_all(MAGIC)?;
    f.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok((f, path))
}

enum Cmd {
    Append(Vec<u8>, oneshot::Sender<Result<(), WalFailure>>),
    Rotate(oneshot::Sender<Result<u64, WalFailure>>),
    Stop,
}

/// Handle to the log thread.
pub(crate) struct Wal {
    tx: mpsc::Sender<Cmd>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Receives the outcome of an append.
pub(crate) type AppendReply = oneshot::Receiver<Result<(), WalFailure>>;

impl Wal {
    /// Starts the log thread writing to a new segment `seq`.
    pub(crate) fn start(dir: &Path, seq: u64, fsync: bool) -> Result<Wal, StoreError> {
        let (file, path) = create_segment(dir, seq).map_err(io(&segment_path(dir, seq)))?;
        let (tx, rx) = mpsc::channel();
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("gpufleet-wal".into())
            .spawn(move || {
                LogThread {
                    dir,
                    seq,
                    file,
                    path,
                    fsync,
                    failed: None,
                }
                .run(rx)
            })
            .map_err(io(Path::new("wal thread")))?;
        Ok(Wal {
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a framed record; the reply comes once it is durable.
    pub(crate) fn append(&self, record: Vec<u8>) -> AppendReply {
        let (tx, rx) = oneshot::channel();
        // A send error means the thread is gone; dropping `tx` makes the receiver report it.
        let _ = self.tx.send(Cmd::Append(record, tx));
        rx
    }

    /// Queues a switch to the next segment; the reply carries its number.
    pub(crate) fn rotate(&self) -> oneshot::Receiver<Result<u64, WalFailure>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Cmd::Rotate(tx));
        rx
    }

    /// Writes what is queued and stops the thread.
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Cmd::Stop);
        let handle = self.thread.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(h) = handle {
            if h.join().is_err() {
                warn!("wal thread panicked");
            }
        }
    }
}

struct LogThread {
    dir: PathBuf,
    seq: u64,
    file: File,
    path: PathBuf,
    fsync: bool,
    failed: Option<WalFailure>,
}

impl LogThread {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut buf = Vec::new();
        let mut waiting = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut stop = false;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Append(rec, reply) => match &self.failed {
                        Some(f) => {
                            let _ = reply.send(Err(f.clone()));
                        }
                        None => {
                            buf.extend_from_slice(&rec);
                            waiting.push(reply);
                        }
                    },
                    Cmd::Rotate(reply) => {
                        self.commit(&mut buf, &mut waiting);
                        let _ = reply.send(self.rotate());
                    }
                    Cmd::Stop => stop = true,
                }
                if buf.len() < 64 << 20 {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(&mut buf, &mut waiting);
            if stop {
                break;
            }
        }
    }

    fn rotate(&mut self) -> Result<u64, WalFailure> {
        if let Some(f) = &self.failed {
            return Err(f.clone());
        }
        let seq = self.seq + 1;
        match create_segment(&self.dir, seq) {
            Ok((file, path)) => {
                self.file = file;
                self.path = path;
                self.seq = seq;
                Ok(seq)
            }
            Err(e) => {
                let f = failure(&segment_path(&self.dir, seq), &e);
                self.failed = Some(f.clone());
                Err(f)
            }
        }
    }

    fn commit(
        &mut self,
        buf: &mut Vec<u8>,
        waiting: &mut Vec<oneshot::Sender<Result<(), WalFailure>>>,
    ) {
        if waiting.is_empty() {
            return;
        }
        let fsync = self.fsync;
        let res =
            self.file
                .write_all(buf)
                .and_then(|()| if fsync { self.file.sync_data() } else { Ok(()) });
        buf.clear();
        let res = res.map_err(|e| {
            let f = failure(&self.path, &e);
            self.failed = Some(f.clone());
            f
        });
        for w in waiting.drain(..) {
            let _ = w.send(res.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let defs = vec![Def::Metric {
            id: 0,
            name: "M".into(),
        }];
        let mut b = RecordBuilder::new(1234, &defs, 2);
        b.push(7, 1_000, 1.5);
        b.push(300, 999, -2.0);
        let rec = b.finish().unwrap();
        let (frames, _) = read_frames(&rec);
        let got = decode_record(frames[0]).unwrap();
        assert_eq!(
            got,
            WalRecord {
                ingest_ms: 1234,
                defs,
                points: vec![(7, 1_000, 1.5), (300, 999, -2.0)]
            }
        );
        assert!(RecordBuilder::new(1, &[], 0).finish().is_none());
    }

    #[tokio::test]
    async fn appends_are_replayed_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::start(dir.path(), 1, true).unwrap();
        for i in 0..3 {
            let mut b = RecordBuilder::new(i, &[], 1);
            b.push(0, i, i as f64);
            wal.append(b.finish().unwrap()).await.unwrap().unwrap();
        }
        assert_eq!(wal.rotate().await.unwrap().unwrap(), 2);
        wal.stop();
        let p = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 3).unwrap();
        let mut seen = Vec::new();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 2]);
        replay_segment(dir.path(), 1, |r| {
            seen.push(r.points[0].1);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![0, 1]);
        assert!(std::fs::metadata(&p).unwrap().len() < len - 3);
        delete_segments_below(dir.path(), 2).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![2]);
    }
}
