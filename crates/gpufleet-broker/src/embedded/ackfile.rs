//! The durable ack state of one consumer group: `<topic>/groups/<group>.acks`.
//!
//! The file is an 8-byte magic (`GFACK\0\0\x01`) followed by frames (see `record`) whose body is
//! either a snapshot `[1][watermark u64][n u32][n × (start u64, end u64)]` or an ack batch
//! `[2][n u32][n × (start u64, end u64)]`. Replaying the frames in order rebuilds the [`AckSet`].
//! The file is rewritten as one snapshot (write a temporary file, fsync, rename, fsync the
//! directory) when the group is created, on every open, and when it has grown past
//! [`COMPACT_MIN_BYTES`] and four times its last snapshot.

use super::{
    acks::AckSet,
    record::{self, ScanEnd},
    segment::{io_err, sync_dir},
};
use crate::BrokerError;
use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};
use tracing::warn;

const MAGIC: &[u8; 8] = b"GFACK\0\0\x01";
const SNAPSHOT: u8 = 1;
const BATCH: u8 = 2;
/// An ack file is compacted once it is larger than this and four times its last snapshot.
pub(crate) const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// An open ack file, appended to by the writer thread only.
#[derive(Debug)]
pub(crate) struct AckFile {
    path: PathBuf,
    file: File,
    len: u64,
    snapshot_len: u64,
    dirty: bool,
    failed: Option<String>,
}

impl AckFile {
    /// Writes a new file holding `set` as a snapshot, replacing any existing one atomically.
    pub(crate) fn create(path: PathBuf, set: &AckSet) -> Result<Self, BrokerError> {
        let mut buf = MAGIC.to_vec();
        let mut body = vec![SNAPSHOT];
        body.extend_from_slice(&set.watermark().to_le_bytes());
        encode_ranges(&mut body, set.ranges());
        record::push_frame(&mut buf, &[&body]);
        let tmp = path.with_extension("acks.tmp");
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&buf)
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let len = buf.len() as u64;
        Ok(Self {
            path,
            file,
            len,
            snapshot_len: len,
            dirty: false,
            failed: None,
        })
    }

    /// Replays an existing file. A torn tail is ignored with a warning (the file is rewritten by
    /// the caller right after); a bad frame in the middle is an error.
    pub(crate) fn load(path: &Path) -> Result<AckSet, BrokerError> {
        let file = File::open(path).map_err(io_err(path))?;
        let mut magic = [0u8; 8];
        file.read_exact_at(&mut magic, 0)
            .map_err(|_| record::corrupt(path, 0, "bad ack file header"))?;
        if &magic != MAGIC {
            return Err(record::corrupt(path, 0, "bad ack file header"));
        }
        let mut set = AckSet::new(0);
        let end = record::scan_file(&file, path, MAGIC.len() as u64, |_, body| {
            apply(&mut set, body)
        })?;
        if let ScanEnd::Torn { at, why } = end {
            warn!(path = %path.display(), at, why, "ignoring torn tail of a broker ack file");
        }
        Ok(set)
    }

    /// Appends acked ranges (not yet durable: see [`AckFile::sync`]).
    pub(crate) fn append(&mut self, ranges: &[(u64, u64)]) -> Result<(), BrokerError> {
        if let Some(why) = &self.failed {
            return Err(self.failed_error(why));
        }
        let mut body = vec![BATCH];
        encode_ranges(&mut body, ranges.iter().copied());
        let mut buf = Vec::with_capacity(body.len() + 8);
        record::push_frame(&mut buf, &[&body]);
        if let Err(source) = self.file.write_all_at(&buf, self.len) {
            self.failed = Some(source.to_string());
            return Err(BrokerError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.len += buf.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// fsyncs what was appended since the last sync.
    pub(crate) fn sync(&mut self) -> Result<(), BrokerError> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(why) = &self.failed {
            return Err(self.failed_error(why));
        }
        // After a failed fsync the kernel may have dropped the dirty pages: never trust this file
        // handle again (the group keeps working from memory until the broker is reopened).
        if let Err(source) = self.file.sync_data() {
            self.failed = Some(source.to_string());
            return Err(BrokerError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.dirty = false;
        Ok(())
    }

    /// Whether the file has grown enough to be rewritten as a snapshot.
    pub(crate) fn needs_compaction(&self) -> bool {
        self.len > COMPACT_MIN_BYTES.max(4 * self.snapshot_len)
    }

    /// Replaces the file with one snapshot of `set`, which must include everything appended so far.
    pub(crate) fn compact(&mut self, set: &AckSet) -> Result<(), BrokerError> {
        *self = Self::create(self.path.clone(), set)?;
        Ok(())
    }

    fn failed_error(&self, why: &str) -> BrokerError {
        BrokerError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(format!(
                "an earlier write failed ({why}); reopen the broker"
            )),
        }
    }
}

fn encode_ranges(body: &mut Vec<u8>, ranges: impl Iterator<Item = (u64, u64)>) {
    let count_at = body.len();
    body.extend_from_slice(&[0; 4]);
    let mut n = 0u32;
    for (s, e) in ranges {
        body.extend_from_slice(&s.to_le_bytes());
        body.extend_from_slice(&e.to_le_bytes());
        n += 1;
    }
    body[count_at..count_at + 4].copy_from_slice(&n.to_le_bytes());
}

/// Applies one frame body to `set`.
fn apply(set: &mut AckSet, body: &[u8]) -> Result<(), String> {
    let (&kind, mut rest) = body.split_first().ok_or("empty ack record")?;
    if kind == SNAPSHOT {
        *set = AckSet::new(take_u64(&mut rest)?);
    } else if kind != BATCH {
        return Err(format!("unknown ack record kind {kind}"));
    }
    let n = u32::from_le_bytes(take::<4>(&mut rest)?);
    if rest.len() != n as usize * 16 {
        return Err("ack record length does not match its range count".into());
    }
    for _ in 0..n {
        let (s, e) = (take_u64(&mut rest)?, take_u64(&mut rest)?);
        set.insert(s, e);
    }
    Ok(())
}

fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], String> {
    let (head, tail) = rest.split_at_checked(N).ok_or("ack record cut short")?;
    *rest = tail;
    head.try_into()
        .map_err(|_| "ack record cut short".to_string())
}

fn take_u64(rest: &mut &[u8]) -> Result<u64, String> {
    take::<8>(rest).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_then_batches_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.acks");
        let mut file = AckFile::create(path.clone(), &AckSet::new(3)).unwrap();
        file.append(&[(3, 5), (8, 9)]).unwrap();
        file.sync().unwrap();
        let set = AckFile::load(&path).unwrap();
        assert_eq!(set.watermark(), 5);
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![(8, 9)]);
    }

    #[test]
    fn compaction_keeps_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.acks");
        let mut file = AckFile::create(path.clone(), &AckSet::new(0)).unwrap();
        let mut set = AckSet::new(0);
        for i in 0..100 {
            file.append(&[(i * 2, i * 2 + 1)]).unwrap();
            set.insert(i * 2, i * 2 + 1);
        }
        let before = fs::metadata(&path).unwrap().len();
        file.compact(&set).unwrap();
        assert!(fs::metadata(&path).unwrap().len() < before);
        assert_eq!(AckFile::load(&path).unwrap(), set);
    }

    #[test]
    fn torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.acks");
        let mut file = AckFile::create(path.clone(), &AckSet::new(0)).unwrap();
        file.append(&[(0, 4)]).unwrap();
        file.append(&[(4, 9)]).unwrap();
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert_eq!(AckFile::load(&path).unwrap().watermark(), 4);
    }
}
