//! Where things live under the data directory, and the framing shared by partition and rollup
//! files.
//!
//! ```text
//! data_dir/catalog.log                 series / GPU dictionary (append-only)
//! data_dir/wal/<seq>.wal               write-ahead log segments
//! data_dir/raw/YYYY-MM-DD/<seq>.part   compressed raw samples of one UTC day
//! data_dir/r1m/YYYY-MM-DD/<seq>.roll   1-minute rollups of the raw file with the same seq
//! data_dir/r1h/YYYY-MM-DD/<seq>.roll   1-hour rollups of the same
//! ```
//! A data file is `magic · pco header length (u8) · pco header · chunks · index · footer`, the
//! footer being `index offset (u64 LE) · index length (u32 LE) · CRC-32 of the index · magic`.
//! Files are written under a `.tmp` name, synced, then renamed; a leftover `.tmp` is deleted on
//! open.

use super::pcol;
use crate::StoreError;
use pco::wrapped::FileDecompressor;
use std::{
    fs::File,
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

/// One UTC day in milliseconds.
pub(crate) const DAY_MS: i64 = 86_400_000;
/// Timestamps accepted: 0000-01-01 up to (excluding) 10000-01-01, so day names stay `YYYY-MM-DD`.
pub(crate) const MIN_TS: i64 = -62_167_219_200_000;
/// See [`MIN_TS`].
pub(crate) const MAX_TS: i64 = 253_402_300_800_000;
const FOOTER: usize = 20;

/// The partition day of a timestamp (days since the epoch).
pub(crate) fn day_of(ts: i64) -> i64 {
    ts.div_euclid(DAY_MS)
}

/// `YYYY-MM-DD` of a day.
pub(crate) fn day_name(day: i64) -> String {
    let s = gpufleet_core::time::format_rfc3339(day * DAY_MS);
    s.split('T').next().unwrap_or_default().to_owned()
}

/// Inverse of [`day_name`].
pub(crate) fn parse_day(name: &str) -> Option<i64> {
    if name.len() != 10 {
        return None;
    }
    let ts = gpufleet_core::time::parse_timestamp(format!("{name}T00:00:00Z").as_bytes()).ok()?;
    Some(day_of(ts))
}

/// The three kinds of data directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// Raw samples.
    Raw,
    /// 1-minute rollups.
    Min,
    /// 1-hour rollups.
    Hour,
}

impl FileKind {
    /// Directory name under the data dir.
    pub(crate) fn dir(self) -> &'static str {
        match self {
            FileKind::Raw => "raw",
            FileKind::Min => "r1m",
            FileKind::Hour => "r1h",
        }
    }
    /// File extension.
    pub(crate) fn ext(self) -> &'static str {
        match self {
            FileKind::Raw => "part",
            FileKind::Min | FileKind::Hour => "roll",
        }
    }
}

/// Path of a data file.
pub(crate) fn file_path(root: &Path, kind: FileKind, day: i64, seq: u64) -> PathBuf {
    root.join(kind.dir())
        .join(day_name(day))
        .join(format!("{seq:012}.{}", kind.ext()))
}

/// Maps an I/O error to [`StoreError::Io`] for `path`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Starts a data file buffer: magic and pco header.
pub(crate) fn begin_file(magic: &[u8; 4]) -> Result<Vec<u8>, StoreError> {
    let hdr = pcol::file_header()?;
    let mut out = Vec::with_capacity(1 << 16);
    out.extend_from_slice(magic);
    out.push(hdr.len() as u8);
    out.extend_from_slice(&hdr);
    Ok(out)
}

/// Appends the index and footer.
pub(crate) fn end_file(out: &mut Vec<u8>, index: &[u8], magic: &[u8; 4]) {
    let off = out.len() as u64;
    out.extend_from_slice(index);
    out.extend_from_slice(&off.to_le_bytes());
    out.extend_from_slice(&(index.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(index).to_le_bytes());
    out.extend_from_slice(magic);
}

/// Writes `bytes` to `path` via a synced temporary file and a rename (the commit point).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::Corrupt(format!("{} has no parent", path.display())))?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Reads `len` bytes at `off`.
pub(crate) fn read_at(
    file: &File,
    path: &Path,
    off: u64,
    len: usize,
) -> Result<Vec<u8>, StoreError> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, off).map_err(io(path))?;
    Ok(buf)
}

/// An opened data file: handle, size, pco header and verified index bytes.
pub(crate) struct Opened {
    /// The file.
    pub(crate) file: File,
    /// Its size.
    pub(crate) len: u64,
    /// pco file header.
    pub(crate) pco: FileDecompressor,
    /// The index.
    pub(crate) index: Vec<u8>,
}

/// Opens a data file, checking magic, footer and index CRC.
pub(crate) fn open_file(path: &Path, magic: &[u8; 4]) -> Result<Opened, StoreError> {
    let file = File::open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    let bad = |why: &str| StoreError::Corrupt(format!("{}: {why}", path.display()));
    if len < (FOOTER + 6) as u64 {
        return Err(bad("too short"));
    }
    let foot = read_at(&file, path, len - FOOTER as u64, FOOTER)?;
    if &foot[16..20] != magic {
        return Err(bad("bad footer magic"));
    }
    let mut b8 = [0u8; 8];
    b8.copy_from_slice(&foot[0..8]);
    let off = u64::from_le_bytes(b8);
    let ilen = u64::from(u32::from_le_bytes([foot[8], foot[9], foot[10], foot[11]]));
    let crc = u32::from_le_bytes([foot[12], foot[13], foot[14], foot[15]]);
    if off
        .checked_add(ilen)
        .is_none_or(|e| e > len - FOOTER as u64)
    {
        return Err(bad("index out of bounds"));
    }
    let index = read_at(&file, path, off, ilen as usize)?;
    if crc32fast::hash(&index) != crc {
        return Err(bad("index checksum mismatch"));
    }
    let head = read_at(&file, path, 0, 5)?;
    if &head[..4] != magic {
        return Err(bad("bad magic"));
    }
    let hdr = read_at(&file, path, 5, head[4] as usize)?;
    let pco = pcol::read_file_header(&hdr)?;
    Ok(Opened {
        file,
        len,
        pco,
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_names_round_trip() {
        for ts in [0, 1_752_868_800_000, MIN_TS, MAX_TS - 1] {
            let d = day_of(ts);
            assert_eq!(parse_day(&day_name(d)), Some(d), "{}", day_name(d));
        }
        assert_eq!(day_name(day_of(1_752_868_800_000)), "2025-07-18");
        assert_eq!(parse_day("junk"), None);
    }
}
