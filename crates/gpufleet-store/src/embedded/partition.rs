//! Raw partition files: the compressed samples of one flush (or compaction) for one UTC day.
//!
//! Layout after the common header (see `layout`): one pco chunk of timestamps with one page per
//! *distinct* timestamp vector (all metrics of a GPU scraped together share one), then one pco
//! chunk of values per metric with one page per series. Chunks share their metadata (bins,
//! mode, delta order) across all pages, which is what makes a 326-point series cost well under
//! a byte a sample; a page still decodes alone, so reading one series is two small reads.
//!
//! The index holds, per series: its timestamp page, value page (offset, length), first and last
//! timestamp and the whole-chunk [`Acc`] (count, min, max, exact sum, last value), so
//! aggregates over whole chunks need no decompression. It also records the seqs of files this
//! one replaces (compaction) and the last ingest wall time per GPU.

use super::agg::{Acc, ExactSum};
use super::bin::{put_varint, Reader};
use super::layout::{begin_file, end_file, open_file, read_at};
use super::pcol::{get_f64s, get_i64s, put_f64s, put_i64s, write_chunk, ChunkReader, Data, Kind};
use crate::StoreError;
use rustc_hash::FxHashMap;
use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
};

const MAGIC: &[u8; 4] = b"GFP1";

/// Points of one series to write.
pub(crate) struct SeriesSlice<'a> {
    /// Series id.
    pub(crate) series: u32,
    /// Chunk group (the metric id): series of one group share a value chunk.
    pub(crate) group: u32,
    /// Timestamps, ascending, non-empty.
    pub(crate) ts: &'a [i64],
    /// Values.
    pub(crate) vals: &'a [f64],
}

/// One series in a file.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Series id.
    pub(crate) series: u32,
    ts_page: u32,
    group: u32,
    val_off: u64,
    val_len: u32,
    /// First timestamp.
    pub(crate) min_ts: i64,
    /// Whole-chunk statistics (`acc.last_ts` is the last timestamp).
    pub(crate) acc: Acc,
}

impl Entry {
    /// Last timestamp.
    pub(crate) fn max_ts(&self) -> i64 {
        self.acc.last_ts
    }
}

/// Encodes a raw file. `series` must be sorted by id.
pub(crate) fn encode(
    series: &[SeriesSlice<'_>],
    supersedes: &[u64],
    ingest: &[(u32, i64)],
) -> Result<Vec<u8>, StoreError> {
    let mut out = begin_file(MAGIC)?;
    // Distinct timestamp vectors.
    let mut ts_ids: FxHashMap<&[i64], u32> = FxHashMap::default();
    let mut ts_cols: Vec<&[i64]> = Vec::new();
    let ts_page: Vec<u32> = series
        .iter()
        .map(|s| {
            *ts_ids.entry(s.ts).or_insert_with(|| {
                ts_cols.push(s.ts);
                ts_cols.len() as u32 - 1
            })
        })
        .collect();
    let all_ts: Vec<i64> = ts_cols.iter().flat_map(|c| c.iter().copied()).collect();
    let ts_sizes: Vec<usize> = ts_cols.iter().map(|c| c.len()).collect();
    let ts_w = write_chunk(&mut out, Data::I64(&all_ts), &ts_sizes)?;
    drop(all_ts);
    // One value chunk per group.
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, s) in series.iter().enumerate() {
        groups.entry(s.group).or_default().push(i);
    }
    let mut val_loc = vec![(0u32, 0u64, 0u32); series.len()];
    let mut group_ws = Vec::with_capacity(groups.len());
    for (gi, members) in groups.values().enumerate() {
        let vals: Vec<f64> = members
            .iter()
            .flat_map(|&i| series[i].vals.iter().copied())
            .collect();
        let sizes: Vec<usize> = members.iter().map(|&i| series[i].vals.len()).collect();
        let w = write_chunk(&mut out, Data::F64(&vals), &sizes)?;
        let mut off = w.meta_off + u64::from(w.meta_len);
        for (&i, &len) in members.iter().zip(&w.page_lens) {
            val_loc[i] = (gi as u32, off, len);
            off += u64::from(len);
        }
        group_ws.push(w);
    }
    // Index.
    let mut ix = Vec::new();
    put_varint(&mut ix, supersedes.len() as u64);
    supersedes.iter().for_each(|s| put_varint(&mut ix, *s));
    put_varint(&mut ix, ingest.len() as u64);
    put_i64s(
        &mut ix,
        &ingest
            .iter()
            .map(|(g, _)| i64::from(*g))
            .collect::<Vec<_>>(),
    )?;
    put_i64s(&mut ix, &ingest.iter().map(|(_, t)| *t).collect::<Vec<_>>())?;
    ix.push(ts_w.kind.tag());
    put_varint(&mut ix, ts_w.meta_off);
    put_varint(&mut ix, u64::from(ts_w.meta_len));
    put_varint(&mut ix, ts_sizes.len() as u64);
    put_i64s(
        &mut ix,
        &ts_w
            .page_lens
            .iter()
            .map(|l| i64::from(*l))
            .collect::<Vec<_>>(),
    )?;
    put_i64s(
        &mut ix,
        &ts_sizes.iter().map(|n| *n as i64).collect::<Vec<_>>(),
    )?;
    put_varint(&mut ix, group_ws.len() as u64);
    for w in &group_ws {
        ix.push(w.kind.tag());
        put_varint(&mut ix, w.meta_off);
        put_varint(&mut ix, u64::from(w.meta_len));
    }
    // Entries in (group, series) order: statistics of one metric sit together and compress well.
    let order: Vec<usize> = groups.values().flatten().copied().collect();
    let accs: Vec<Acc> = series.iter().map(|s| Acc::of(s.ts, s.vals)).collect();
    let sums: Vec<(i64, i64, f64)> = accs.iter().map(|a| a.sum.pack()).collect();
    put_varint(&mut ix, series.len() as u64);
    let col = |f: &dyn Fn(usize) -> i64| order.iter().map(|&i| f(i)).collect::<Vec<i64>>();
    let fcol = |f: &dyn Fn(usize) -> f64| order.iter().map(|&i| f(i)).collect::<Vec<f64>>();
    put_i64s(&mut ix, &col(&|i| i64::from(series[i].series)))?;
    put_i64s(&mut ix, &col(&|i| i64::from(ts_page[i])))?;
    put_i64s(&mut ix, &col(&|i| i64::from(val_loc[i].0)))?;
    put_i64s(&mut ix, &col(&|i| i64::from(val_loc[i].2)))?;
    put_i64s(&mut ix, &col(&|i| series[i].ts[0]))?;
    put_i64s(&mut ix, &col(&|i| accs[i].last_ts))?;
    put_f64s(&mut ix, &fcol(&|i| accs[i].min))?;
    put_f64s(&mut ix, &fcol(&|i| accs[i].max))?;
    put_f64s(&mut ix, &fcol(&|i| accs[i].last))?;
    put_i64s(&mut ix, &col(&|i| sums[i].0))?;
    put_i64s(&mut ix, &col(&|i| sums[i].1))?;
    put_f64s(&mut ix, &fcol(&|i| sums[i].2))?;
    end_file(&mut out, &ix, MAGIC);
    Ok(out)
}

/// An open raw file with its index in memory.
pub(crate) struct RawFile {
    /// Sequence number (file name).
    pub(crate) seq: u64,
    /// Partition day.
    pub(crate) day: i64,
    /// Path.
    pub(crate) path: PathBuf,
    file: File,
    ts_chunk: ChunkReader,
    ts_pages: Vec<(u64, u32, u32)>,
    groups: Vec<ChunkReader>,
    /// Entries sorted by series id.
    pub(crate) entries: Vec<Entry>,
    /// Seqs of files this one replaces.
    pub(crate) supersedes: Vec<u64>,
    /// `(gpu id, last ingest ms)`.
    pub(crate) ingest: Vec<(u32, i64)>,
    /// Samples in the file.
    pub(crate) samples: u64,
}

fn to_u32(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} out of range: {v}")))
}

impl RawFile {
    /// Opens a raw file and loads its index.
    pub(crate) fn open(path: &Path, seq: u64, day: i64) -> Result<RawFile, StoreError> {
        let o = open_file(path, MAGIC)?;
        let mut r = Reader::new(&o.index, "partition index");
        let n = r.count(1)?;
        let supersedes = (0..n).map(|_| r.varint()).collect::<Result<Vec<_>, _>>()?;
        let n = r.n_items()?;
        let g = get_i64s(&mut r, n)?;
        let t = get_i64s(&mut r, n)?;
        let ingest = g
            .iter()
            .zip(&t)
            .map(|(g, t)| Ok((to_u32(*g, "gpu id")?, *t)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let ts_kind = Kind::from_tag(r.u8()?)?;
        let ts_meta_off = r.varint()?;
        let ts_meta_len = r.varint()?;
        let n_ts = r.n_items()?;
        let ts_lens = get_i64s(&mut r, n_ts)?;
        let ts_counts = get_i64s(&mut r, n_ts)?;
        let meta = |off: u64, len: u64| -> Result<Vec<u8>, StoreError> {
            if off.saturating_add(len) > o.len {
                return Err(StoreError::Corrupt(format!(
                    "{}: chunk out of bounds",
                    path.display()
                )));
            }
            read_at(&o.file, path, off, len as usize)
        };
        let ts_chunk = ChunkReader::open(&o.pco, ts_kind, &meta(ts_meta_off, ts_meta_len)?)?;
        let mut off = ts_meta_off + ts_meta_len;
        let mut ts_pages = Vec::with_capacity(n_ts);
        for (len, cnt) in ts_lens.iter().zip(&ts_counts) {
            ts_pages.push((
                off,
                to_u32(*len, "page length")?,
                to_u32(*cnt, "page count")?,
            ));
            off += *len as u64;
        }
        let n_groups = r.count(3)?;
        let mut groups = Vec::with_capacity(n_groups);
        let mut group_starts = Vec::with_capacity(n_groups);
        for _ in 0..n_groups {
            let kind = Kind::from_tag(r.u8()?)?;
            let (mo, ml) = (r.varint()?, r.varint()?);
            groups.push(ChunkReader::open(&o.pco, kind, &meta(mo, ml)?)?);
            group_starts.push(mo + ml);
        }
        let n = r.n_items()?;
        let series = get_i64s(&mut r, n)?;
        let tsp = get_i64s(&mut r, n)?;
        let grp = get_i64s(&mut r, n)?;
        let vlen = get_i64s(&mut r, n)?;
        let min_ts = get_i64s(&mut r, n)?;
        let max_ts = get_i64s(&mut r, n)?;
        let min = get_f64s(&mut r, n)?;
        let max = get_f64s(&mut r, n)?;
        let last = get_f64s(&mut r, n)?;
        let sum_t = get_i64s(&mut r, n)?;
        let sum_a = get_i64s(&mut r, n)?;
        let sum_b = get_f64s(&mut r, n)?;
        let mut entries = Vec::with_capacity(n);
        let mut samples = 0u64;
        for i in 0..n {
            let ts_page = to_u32(tsp[i], "timestamp page")?;
            let group = to_u32(grp[i], "group")?;
            let count = ts_pages
                .get(ts_page as usize)
                .ok_or_else(|| StoreError::Corrupt("timestamp page out of range".into()))?
                .2;
            let start = group_starts
                .get_mut(group as usize)
                .ok_or_else(|| StoreError::Corrupt("group out of range".into()))?;
            let val_len = to_u32(vlen[i], "page length")?;
            let val_off = *start;
            *start += u64::from(val_len);
            let sum = ExactSum::unpack(sum_t[i], sum_a[i], sum_b[i])
                .ok_or_else(|| StoreError::Corrupt("bad sum tag".into()))?;
            let acc = Acc {
                count: u64::from(count),
                min: min[i],
                max: max[i],
                sum,
                last_ts: max_ts[i],
                last: last[i],
            };
            samples += u64::from(count);
            entries.push(Entry {
                series: to_u32(series[i], "series id")?,
                ts_page,
                group,
                val_off,
                val_len,
                min_ts: min_ts[i],
                acc,
            });
        }
        entries.sort_unstable_by_key(|e| e.series);
        if entries.windows(2).any(|w| w[0].series >= w[1].series) {
            return Err(StoreError::Corrupt(format!(
                "{}: index not sorted",
                path.display()
            )));
        }
        Ok(RawFile {
            seq,
            day,
            path: path.to_path_buf(),
            file: o.file,
            ts_chunk,
            ts_pages,
            groups,
            entries,
            supersedes,
            ingest,
            samples,
        })
    }

    /// The entry of a series.
    pub(crate) fn entry(&self, series: u32) -> Option<&Entry> {
        self.entries
            .binary_search_by_key(&series, |e| e.series)
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Timestamps of an entry.
    pub(crate) fn read_ts(&self, e: &Entry) -> Result<Vec<i64>, StoreError> {
        let (off, len, n) = self.ts_pages[e.ts_page as usize];
        let page = read_at(&self.file, &self.path, off, len as usize)?;
        self.ts_chunk.read_i64(&page, n as usize)
    }

    /// Timestamps and values of an entry.
    pub(crate) fn read(&self, e: &Entry) -> Result<(Vec<i64>, Vec<f64>), StoreError> {
        let ts = self.read_ts(e)?;
        let page = read_at(&self.file, &self.path, e.val_off, e.val_len as usize)?;
        let vals = self.groups[e.group as usize].read_f64(&page, ts.len())?;
        Ok((ts, vals))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_with_shared_timestamps_and_stats() {
        let dir = tempfile::tempdir().unwrap();
        let ts: Vec<i64> = (0..300).map(|i| 1_000 * i).collect();
        let a: Vec<f64> = (0..300).map(|i| f64::from(i % 7)).collect();
        let b: Vec<f64> = (0..300).map(|i| 100.0 + f64::from(i) * 0.125).collect();
        let c_ts = vec![5, 6];
        let c = vec![f64::NAN, 1.0];
        let series = [
            SeriesSlice {
                series: 1,
                group: 0,
                ts: &ts,
                vals: &a,
            },
            SeriesSlice {
                series: 4,
                group: 1,
                ts: &ts,
                vals: &b,
            },
            SeriesSlice {
                series: 9,
                group: 0,
                ts: &c_ts,
                vals: &c,
            },
        ];
        let bytes = encode(&series, &[3, 4], &[(2, 77)]).unwrap();
        let path = dir.path().join("1.part");
        std::fs::write(&path, bytes).unwrap();
        let f = RawFile::open(&path, 1, 0).unwrap();
        assert_eq!(f.supersedes, vec![3, 4]);
        assert_eq!(f.ingest, vec![(2, 77)]);
        assert_eq!(f.samples, 602);
        assert_eq!(
            f.ts_pages.len(),
            2,
            "identical timestamp vectors are stored once"
        );
        for s in &series {
            let e = f.entry(s.series).unwrap();
            let (t, v) = f.read(e).unwrap();
            assert_eq!(t, s.ts);
            assert_eq!(
                v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                s.vals.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
            assert_eq!(e.acc.count, s.ts.len() as u64);
            assert_eq!(e.min_ts, s.ts[0]);
        }
        let e = f.entry(4).unwrap();
        assert_eq!(e.acc, Acc::of(&ts, &b));
        assert!(f.entry(2).is_none());
    }

    #[test]
    fn a_damaged_index_is_reported_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let ts = vec![1, 2];
        let v = vec![1.0, 2.0];
        let mut bytes = encode(
            &[SeriesSlice {
                series: 0,
                group: 0,
                ts: &ts,
                vals: &v,
            }],
            &[],
            &[],
        )
        .unwrap();
        let n = bytes.len();
        bytes[n - 30] ^= 0x55;
        let path = dir.path().join("1.part");
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            RawFile::open(&path, 1, 0),
            Err(StoreError::Corrupt(_))
        ));
    }
}
