//! Compaction: merges the raw files of one day so many small flushes do not leave many small
//! files (each chunk's metadata and each file's index cost bytes, and queries open every file).
//!
//! Size-tiered: files are put in levels by sample count (×4 per level); when a level of a day
//! holds [`FAN_IN`] or more files, they are decoded, merged per series (time order; on equal
//! timestamps the older file wins, though dedup at write time means that never happens),
//! re-encoded into one file with fresh rollups, and the inputs deleted. The new file lists
//! the seqs it replaces, so a crash between writing it and deleting the inputs is finished by
//! recovery. A merge is capped at [`MAX_MERGE_SAMPLES`] decoded samples to bound memory.

use super::flush::write_files;
use super::layout::{file_path, FileKind};
use super::partition::{RawFile, SeriesSlice};
use super::state::Partitions;
use super::Inner;
use crate::StoreError;
use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
};
use tracing::{debug, warn};

/// Files of one level merged at once.
pub(crate) const FAN_IN: usize = 4;
/// Most samples decoded by one merge (16 bytes each in memory).
pub(crate) const MAX_MERGE_SAMPLES: u64 = 8_000_000;

fn level(samples: u64) -> u32 {
    let mut l = 0;
    let mut s = samples / 16_384;
    while s > 0 {
        s /= 4;
        l += 1;
    }
    l
}

/// Merges files of `day` while some level holds [`FAN_IN`] files.
pub(crate) fn maybe_compact(inner: &Inner, day: i64) -> Result<(), StoreError> {
    for _ in 0..16 {
        let files: Vec<Arc<RawFile>> = inner
            .state
            .read()
            .parts
            .days
            .get(&day)
            .map(|d| d.raw.clone())
            .unwrap_or_default();
        let mut levels: BTreeMap<u32, Vec<Arc<RawFile>>> = BTreeMap::new();
        for f in files {
            levels.entry(level(f.samples)).or_default().push(f);
        }
        let Some(mut pick) = levels.into_values().find(|fs| fs.len() >= FAN_IN) else {
            return Ok(());
        };
        pick.sort_by_key(|f| f.seq);
        let mut total = 0;
        pick.retain(|f| {
            total += f.samples;
            total <= MAX_MERGE_SAMPLES
        });
        if pick.len() < 2 {
            return Ok(());
        }
        merge(inner, day, &pick)?;
    }
    Ok(())
}

/// Merges `files` (ascending seq) of `day` into one.
pub(crate) fn merge(inner: &Inner, day: i64, files: &[Arc<RawFile>]) -> Result<(), StoreError> {
    let mut series: BTreeMap<u32, (Vec<i64>, Vec<f64>)> = BTreeMap::new();
    let mut ingest: BTreeMap<u32, i64> = BTreeMap::new();
    for f in files {
        for e in &f.entries {
            let (t, v) = f.read(e)?;
            let s = series.entry(e.series).or_default();
            s.0.extend_from_slice(&t);
            s.1.extend_from_slice(&v);
        }
        for (g, t) in &f.ingest {
            let m = ingest.entry(*g).or_insert(*t);
            *m = (*m).max(*t);
        }
    }
    for (ts, vals) in series.values_mut() {
        if ts.windows(2).all(|w| w[0] < w[1]) {
            continue;
        }
        let mut pts: Vec<(i64, f64)> = ts.iter().copied().zip(vals.iter().copied()).collect();
        pts.sort_by_key(|p| p.0);
        pts.dedup_by_key(|p| p.0);
        *ts = pts.iter().map(|p| p.0).collect();
        *vals = pts.iter().map(|p| p.1).collect();
    }
    let metric_of: Vec<u32> = inner
        .state
        .read()
        .catalog
        .series
        .iter()
        .map(|s| s.metric)
        .collect();
    let mut slices = Vec::with_capacity(series.len());
    for (s, (ts, vals)) in &series {
        let group = *metric_of.get(*s as usize).ok_or_else(|| {
            StoreError::Corrupt(format!("partition refers to unknown series {s}"))
        })?;
        slices.push(SeriesSlice {
            series: *s,
            group,
            ts,
            vals,
        });
    }
    let seqs: Vec<u64> = files.iter().map(|f| f.seq).collect();
    let ingest: Vec<(u32, i64)> = ingest.into_iter().collect();
    let seq = inner.next_seq.fetch_add(1, Ordering::AcqRel);
    let (raw, m, h) = write_files(inner, day, seq, &slices, &seqs, &ingest)?;
    {
        let mut st = inner.state.write();
        let mut parts: Partitions = (*st.parts).clone();
        let d = parts.days.entry(day).or_default();
        d.raw.retain(|f| !seqs.contains(&f.seq));
        d.r1m.retain(|f| !seqs.contains(&f.seq));
        d.r1h.retain(|f| !seqs.contains(&f.seq));
        d.raw.push(raw);
        d.r1m.push(m);
        d.r1h.push(h);
        st.parts = Arc::new(parts);
    }
    delete_files(&inner.cfg.data_dir, day, &seqs);
    debug!(day, inputs = seqs.len(), seq, "compacted partition files");
    Ok(())
}

/// Deletes the raw and rollup files of `seqs` (missing ones are fine).
pub(crate) fn delete_files(root: &std::path::Path, day: i64, seqs: &[u64]) {
    for kind in [FileKind::Raw, FileKind::Min, FileKind::Hour] {
        for s in seqs {
            let p = file_path(root, kind, day, *s);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    warn!(%error, path = %p.display(), "could not delete a compacted file")
                }
            }
        }
    }
}
