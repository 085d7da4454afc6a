//! 1-minute and 1-hour rollups: per series and bucket an [`Acc`] (count, min, max, exact sum,
//! last value and its timestamp), written at flush time next to each raw file (same seq) and
//! kept after the raw data expires.
//!
//! A rollup file stores its rows column by column (bucket, count, min, max, last, last ts, and
//! the three parts of the exact sum); each metric has its own set of column chunks (a narrow
//! value range per chunk compresses well), split into pages of consecutive series of about
//! 4096 rows, so reading one series decodes one page per column. Because [`Acc`]
//! merges exactly, rows from several files and several buckets combine into any coarser step
//! with the same answer a pass over the raw points gives.

use super::agg::{Acc, ExactSum};
use super::bin::{put_varint, Reader};
use super::layout::{begin_file, end_file, open_file, read_at};
use super::pcol::{get_i64s, put_i64s, write_chunk, ChunkReader, Data, Kind};
use crate::StoreError;
use std::{
    fs::File,
    path::{Path, PathBuf},
};

/// 1-minute resolution.
pub(crate) const RES_1M: i64 = 60_000;
/// 1-hour resolution.
pub(crate) const RES_1H: i64 = 3_600_000;
const MAGIC: &[u8; 4] = b"GFU1";
const PAGE_ROWS: usize = 4096;
const N_COLS: usize = 9;

/// One bucket of one series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Row {
    /// Bucket start (a multiple of the resolution).
    pub(crate) bucket: i64,
    /// The bucket's points.
    pub(crate) acc: Acc,
}

/// Buckets of sorted points.
pub(crate) fn rows_of(ts: &[i64], vals: &[f64], res: i64) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for (t, v) in ts.iter().zip(vals) {
        let b = t.div_euclid(res) * res;
        match out.last_mut() {
            Some(r) if r.bucket == b => r.acc.push(*t, *v),
            _ => {
                let mut acc = Acc::default();
                acc.push(*t, *v);
                out.push(Row { bucket: b, acc });
            }
        }
    }
    out
}

/// Rows of one series to write.
pub(crate) struct RollSeries {
    /// Series id.
    pub(crate) series: u32,
    /// Chunk group (the metric id): rows of one group share column chunks.
    pub(crate) group: u32,
    /// Rows, ascending bucket, non-empty.
    pub(crate) rows: Vec<Row>,
}

fn put_lens(ix: &mut Vec<u8>, v: impl Iterator<Item = i64>) -> Result<(), StoreError> {
    put_i64s(ix, &v.collect::<Vec<_>>())
}

/// Encodes a rollup file. Rows are laid out by (group, series): one set of column chunks per
/// metric keeps each chunk's value distribution narrow.
pub(crate) fn encode(
    res: i64,
    series: &[RollSeries],
    supersedes: &[u64],
) -> Result<Vec<u8>, StoreError> {
    let mut out = begin_file(MAGIC)?;
    let mut order: Vec<usize> = (0..series.len()).collect();
    order.sort_by_key(|&i| (series[i].group, series[i].series));
    let mut ix = Vec::new();
    put_varint(&mut ix, res as u64);
    put_varint(&mut ix, supersedes.len() as u64);
    supersedes.iter().for_each(|s| put_varint(&mut ix, *s));
    let mut groups: Vec<&[usize]> = order
        .chunk_by(|a, b| series[*a].group == series[*b].group)
        .collect();
    groups.retain(|g| !g.is_empty());
    put_varint(&mut ix, groups.len() as u64);
    let mut entries: Vec<[i64; 5]> = Vec::with_capacity(series.len());
    for (gi, members) in groups.iter().enumerate() {
        let mut pages: Vec<usize> = Vec::new();
        let mut open_rows = 0usize;
        for &i in *members {
            if open_rows >= PAGE_ROWS {
                pages.push(open_rows);
                open_rows = 0;
            }
            let s = &series[i];
            entries.push([
                i64::from(s.series),
                gi as i64,
                pages.len() as i64,
                open_rows as i64,
                s.rows.len() as i64,
            ]);
            open_rows += s.rows.len();
        }
        if open_rows > 0 {
            pages.push(open_rows);
        }
        let mut ints: [Vec<i64>; 5] = Default::default();
        let mut floats: [Vec<f64>; 4] = Default::default();
        for r in members.iter().flat_map(|&i| series[i].rows.iter()) {
            let (t, a, b) = r.acc.sum.pack();
            ints[0].push(r.bucket);
            ints[1].push(r.acc.count as i64);
            ints[2].push(r.acc.last_ts - r.bucket);
            ints[3].push(t);
            ints[4].push(a);
            floats[0].push(r.acc.min);
            floats[1].push(r.acc.max);
            floats[2].push(r.acc.last);
            floats[3].push(b);
        }
        put_varint(&mut ix, pages.len() as u64);
        put_lens(&mut ix, pages.iter().map(|p| *p as i64))?;
        let mut ws = Vec::with_capacity(N_COLS);
        for c in &ints {
            ws.push(write_chunk(&mut out, Data::I64(c), &pages)?);
        }
        for c in &floats {
            ws.push(write_chunk(&mut out, Data::F64(c), &pages)?);
        }
        for w in &ws {
            ix.push(w.kind.tag());
            put_varint(&mut ix, w.meta_off);
            put_varint(&mut ix, u64::from(w.meta_len));
            put_lens(&mut ix, w.page_lens.iter().map(|l| i64::from(*l)))?;
        }
    }
    put_varint(&mut ix, entries.len() as u64);
    for c in 0..5 {
        put_lens(&mut ix, entries.iter().map(|e| e[c]))?;
    }
    end_file(&mut out, &ix, MAGIC);
    Ok(out)
}

struct Column {
    reader: ChunkReader,
    pages: Vec<(u64, u32)>,
}

struct Group {
    page_rows: Vec<u32>,
    cols: Vec<Column>,
}

/// Where a series' rows are.
#[derive(Clone, Copy, Debug)]
struct RollEntry {
    series: u32,
    group: u32,
    page: u32,
    row_off: u32,
    rows: u32,
}

/// An open rollup file.
pub(crate) struct RollupFile {
    /// Sequence number (same as the raw file it summarises).
    pub(crate) seq: u64,
    /// Path.
    pub(crate) path: PathBuf,
    file: File,
    groups: Vec<Group>,
    entries: Vec<RollEntry>,
    /// Seqs of files this one replaces.
    pub(crate) supersedes: Vec<u64>,
}

fn to_u32(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v)
        .map_err(|_| StoreError::Corrupt(format!("rollup index value out of range: {v}")))
}

impl RollupFile {
    /// Opens a rollup file of resolution `res`.
    pub(crate) fn open(path: &Path, seq: u64, res: i64) -> Result<RollupFile, StoreError> {
        let o = open_file(path, MAGIC)?;
        let mut r = Reader::new(&o.index, "rollup index");
        if r.varint()? != res as u64 {
            return Err(StoreError::Corrupt(format!(
                "{}: unexpected rollup resolution",
                path.display()
            )));
        }
        let n = r.count(1)?;
        let supersedes = (0..n).map(|_| r.varint()).collect::<Result<Vec<_>, _>>()?;
        let n_groups = r.count(1)?;
        let mut groups = Vec::with_capacity(n_groups);
        for _ in 0..n_groups {
            let n_pages = r.n_items()?;
            let page_rows = get_i64s(&mut r, n_pages)?
                .into_iter()
                .map(to_u32)
                .collect::<Result<Vec<_>, _>>()?;
            let mut cols = Vec::with_capacity(N_COLS);
            for _ in 0..N_COLS {
                let kind = Kind::from_tag(r.u8()?)?;
                let (mo, ml) = (r.varint()?, r.varint()?);
                if mo.saturating_add(ml) > o.len {
                    return Err(StoreError::Corrupt(format!(
                        "{}: chunk out of bounds",
                        path.display()
                    )));
                }
                let reader =
                    ChunkReader::open(&o.pco, kind, &read_at(&o.file, path, mo, ml as usize)?)?;
                let mut off = mo + ml;
                let mut pages = Vec::with_capacity(n_pages);
                for l in get_i64s(&mut r, n_pages)? {
                    let l = to_u32(l)?;
                    pages.push((off, l));
                    off += u64::from(l);
                }
                cols.push(Column { reader, pages });
            }
            groups.push(Group { page_rows, cols });
        }
        let n = r.n_items()?;
        let c: Vec<Vec<i64>> = (0..5)
            .map(|_| get_i64s(&mut r, n))
            .collect::<Result<_, _>>()?;
        let mut entries = Vec::with_capacity(n);
        for (i, &series) in c[0].iter().enumerate() {
            let e = RollEntry {
                series: to_u32(series)?,
                group: to_u32(c[1][i])?,
                page: to_u32(c[2][i])?,
                row_off: to_u32(c[3][i])?,
                rows: to_u32(c[4][i])?,
            };
            let ok = groups
                .get(e.group as usize)
                .and_then(|g| g.page_rows.get(e.page as usize))
                .is_some_and(|n| e.row_off + e.rows <= *n);
            if !ok {
                return Err(StoreError::Corrupt(format!(
                    "{}: rollup entry out of range",
                    path.display()
                )));
            }
            entries.push(e);
        }
        entries.sort_unstable_by_key(|e| e.series);
        Ok(RollupFile {
            seq,
            path: path.to_path_buf(),
            file: o.file,
            groups,
            entries,
            supersedes,
        })
    }

    /// Rows of a series with bucket start in `[start, end)`.
    pub(crate) fn rows(&self, series: u32, start: i64, end: i64) -> Result<Vec<Row>, StoreError> {
        let Ok(i) = self.entries.binary_search_by_key(&series, |e| e.series) else {
            return Ok(Vec::new());
        };
        let e = self.entries[i];
        let g = &self.groups[e.group as usize];
        let n = g.page_rows[e.page as usize] as usize;
        let (a, b) = (e.row_off as usize, (e.row_off + e.rows) as usize);
        let mut ints: Vec<Vec<i64>> = Vec::with_capacity(5);
        let mut floats: Vec<Vec<f64>> = Vec::with_capacity(4);
        for (ci, col) in g.cols.iter().enumerate() {
            let (off, len) = col.pages[e.page as usize];
            let page = read_at(&self.file, &self.path, off, len as usize)?;
            if ci < 5 {
                ints.push(col.reader.read_i64(&page, n)?);
            } else {
                floats.push(col.reader.read_f64(&page, n)?);
            }
        }
        let mut out = Vec::new();
        for j in a..b {
            let bucket = ints[0][j];
            if bucket < start || bucket >= end {
                continue;
            }
            let sum = ExactSum::unpack(ints[3][j], ints[4][j], floats[3][j])
                .ok_or_else(|| StoreError::Corrupt("bad rollup sum tag".into()))?;
            let acc = Acc {
                count: ints[1][j] as u64,
                min: floats[0][j],
                max: floats[1][j],
                sum,
                last_ts: bucket + ints[2][j],
                last: floats[2][j],
            };
            out.push(Row { bucket, acc });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_across_pages() {
        let dir = tempfile::tempdir().unwrap();
        let mut series = Vec::new();
        for s in 0..40u32 {
            let ts: Vec<i64> = (0..300).map(|i| i64::from(i) * 1_000).collect();
            let vs: Vec<f64> = (0..300)
                .map(|i| f64::from((i * (s + 1)) % 101) / 4.0)
                .collect();
            series.push((s * 2, rows_of(&ts, &vs, RES_1M), ts, vs));
        }
        let input: Vec<RollSeries> = series
            .iter()
            .map(|(s, r, _, _)| RollSeries {
                series: *s,
                group: s % 3,
                rows: r.clone(),
            })
            .collect();
        let bytes = encode(RES_1M, &input, &[7]).unwrap();
        let path = dir.path().join("1.roll");
        std::fs::write(&path, bytes).unwrap();
        let f = RollupFile::open(&path, 1, RES_1M).unwrap();
        assert_eq!(f.supersedes, vec![7]);
        assert!(RollupFile::open(&path, 1, RES_1H).is_err());
        for (s, rows, ts, vs) in &series {
            assert_eq!(&f.rows(*s, i64::MIN, i64::MAX).unwrap(), rows);
            let got = f.rows(*s, 60_000, 120_000).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].acc, Acc::of(&ts[60..120], &vs[60..120]));
        }
        assert!(f.rows(1, i64::MIN, i64::MAX).unwrap().is_empty());
    }
}
