//! Opening a store: load the catalog, open every partition and rollup file (deleting leftover
//! `.tmp` files, finishing an interrupted compaction by deleting the files a newer file
//! supersedes, rebuilding rollups a crash left unwritten), seed the per-series and per-GPU
//! in-memory summaries from the file indexes, then replay the WAL through the normal dedup.

use super::catalog::CatalogFile;
use super::flush::write_rollups;
use super::layout::{io, parse_day, FileKind};
use super::partition::{RawFile, SeriesSlice};
use super::rollup::{RollupFile, RES_1H, RES_1M};
use super::state::{Partitions, State};
use super::wal::{self, Wal};
use super::Inner;
use crate::{StoreConfig, StoreError};
use parking_lot::{Mutex, RwLock};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64},
        Arc,
    },
};
use tracing::{info, warn};

/// `day → [(seq, path)]` of one kind, with `.tmp` files removed; also the largest seq seen.
fn list_kind(
    root: &Path,
    kind: FileKind,
    max_seq: &mut u64,
) -> Result<BTreeMap<i64, Vec<(u64, PathBuf)>>, StoreError> {
    let dir = root.join(kind.dir());
    let mut out: BTreeMap<i64, Vec<(u64, PathBuf)>> = BTreeMap::new();
    for d in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let d = d.map_err(io(&dir))?;
        let Some(day) = d.file_name().to_str().and_then(parse_day) else {
            continue;
        };
        let ddir = d.path();
        for f in std::fs::read_dir(&ddir).map_err(io(&ddir))? {
            let f = f.map_err(io(&ddir))?;
            let path = f.path();
            let name = f.file_name();
            let Some((stem, ext)) = name.to_str().and_then(|n| n.split_once('.')) else {
                continue;
            };
            let Ok(seq) = stem.parse::<u64>() else {
                continue;
            };
            *max_seq = (*max_seq).max(seq);
            if ext == "tmp" {
                std::fs::remove_file(&path).map_err(io(&path))?;
            } else if ext == kind.ext() {
                out.entry(day).or_default().push((seq, path));
            }
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    Ok(out)
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Keeps the files no other file supersedes, deleting the others.
fn drop_superseded<T>(
    files: Vec<Arc<T>>,
    seq: impl Fn(&T) -> u64,
    sup: impl Fn(&T) -> &[u64],
    path: impl Fn(&T) -> &Path,
) -> Result<Vec<Arc<T>>, StoreError> {
    let gone: BTreeSet<u64> = files.iter().flat_map(|f| sup(f).iter().copied()).collect();
    let mut keep = Vec::with_capacity(files.len());
    for f in files {
        if gone.contains(&seq(&f)) {
            info!(path = %path(&f).display(), "deleting a file superseded by compaction");
            remove(path(&f))?;
        } else {
            keep.push(f);
        }
    }
    Ok(keep)
}

/// Opens every data file under `root`; returns them and the largest seq seen.
/// `metric_of` maps series ids to metric ids (for rebuilding rollups).
pub(crate) fn load_partitions(
    root: &Path,
    metric_of: &[u32],
) -> Result<(Partitions, u64), StoreError> {
    let mut max_seq = 0;
    let raw = list_kind(root, FileKind::Raw, &mut max_seq)?;
    let mins = list_kind(root, FileKind::Min, &mut max_seq)?;
    let hours = list_kind(root, FileKind::Hour, &mut max_seq)?;
    let mut parts = Partitions::default();
    for (day, files) in raw {
        let opened = files
            .iter()
            .map(|(s, p)| RawFile::open(p, *s, day).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        parts.days.entry(day).or_default().raw =
            drop_superseded(opened, |f| f.seq, |f| &f.supersedes, |f| &f.path)?;
    }
    for (list, res) in [(mins, RES_1M), (hours, RES_1H)] {
        for (day, files) in list {
            let opened = files
                .iter()
                .map(|(s, p)| RollupFile::open(p, *s, res).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?;
            let d = parts.days.entry(day).or_default();
            if res == RES_1M {
                d.r1m = opened;
            } else {
                d.r1h = opened;
            }
        }
    }
    for (day, d) in parts.days.iter_mut() {
        for raw in d.raw.clone() {
            let has = |v: &[Arc<RollupFile>]| v.iter().any(|f| f.seq == raw.seq);
            if has(&d.r1m) && has(&d.r1h) {
                continue;
            }
            warn!(path = %raw.path.display(), "rollups of a partition file are missing; rebuilding them");
            let data = raw
                .entries
                .iter()
                .map(|e| raw.read(e).map(|tv| (e.series, tv)))
                .collect::<Result<Vec<_>, _>>()?;
            let slices: Vec<SeriesSlice<'_>> = data
                .iter()
                .map(|(s, (t, v))| SeriesSlice {
                    series: *s,
                    group: metric_of.get(*s as usize).copied().unwrap_or(u32::MAX),
                    ts: t,
                    vals: v,
                })
                .collect();
            let (m, h) = write_rollups(root, *day, raw.seq, &slices, &raw.supersedes)?;
            d.r1m.retain(|f| f.seq != raw.seq);
            d.r1h.retain(|f| f.seq != raw.seq);
            d.r1m.push(m);
            d.r1h.push(h);
        }
        d.r1m = drop_superseded(
            std::mem::take(&mut d.r1m),
            |f| f.seq,
            |f| &f.supersedes,
            |f| &f.path,
        )?;
        d.r1h = drop_superseded(
            std::mem::take(&mut d.r1h),
            |f| f.seq,
            |f| &f.supersedes,
            |f| &f.path,
        )?;
        d.r1m.sort_by_key(|f| f.seq);
        d.r1h.sort_by_key(|f| f.seq);
    }
    parts.days.retain(|_, d| !d.is_empty());
    Ok((parts, max_seq))
}

/// Opens the store state; the bool says whether the replayed head is already due a flush.
pub(crate) fn open(cfg: StoreConfig) -> Result<(Inner, bool), StoreError> {
    let root = cfg.data_dir.clone();
    let wal_dir = root.join("wal");
    for d in [
        root.clone(),
        wal_dir.clone(),
        root.join("raw"),
        root.join("r1m"),
        root.join("r1h"),
    ] {
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    let (catalog_file, catalog) = CatalogFile::open(&root.join("catalog.log"))?;
    let metric_of: Vec<u32> = catalog.series.iter().map(|s| s.metric).collect();
    let (parts, max_seq) = load_partitions(&root, &metric_of)?;
    let mut st = State {
        catalog,
        parts: Arc::new(parts),
        ..State::default()
    };
    seed_from_files(&mut st)?;
    let segments = wal::list_segments(&wal_dir)?;
    let mut replayed = 0u64;
    for seq in &segments {
        wal::replay_segment(&wal_dir, *seq, |rec| {
            for d in rec.defs {
                if st.catalog.apply(d.clone())? {
                    st.catalog.mark_pending(d);
                }
            }
            for (s, ts, v) in rec.points {
                if st.insert_point(s, ts, v)? {
                    replayed += 1;
                    let g = st.catalog.series[s as usize].gpu as usize;
                    let gpu = &mut st.catalog.gpus[g];
                    gpu.last_ingest_ms = gpu.last_ingest_ms.max(rec.ingest_ms);
                }
            }
            Ok(())
        })?;
    }
    if replayed > 0 {
        info!(
            samples = replayed,
            segments = segments.len(),
            "replayed the write-ahead log"
        );
    }
    let due = st.head.samples() >= cfg.head_max_samples;
    let wal = Wal::start(&wal_dir, segments.last().map_or(1, |s| s + 1), cfg.fsync)?;
    let inner = Inner {
        cfg,
        state: RwLock::new(st),
        wal,
        wal_dir,
        catalog_file: Mutex::new(catalog_file),
        next_seq: AtomicU64::new(max_seq + 1),
        flush_requested: AtomicBool::new(false),
    };
    Ok((inner, due))
}

/// Fills per-series oldest/newest/latest and per-GPU last ingest from the file indexes.
fn seed_from_files(st: &mut State) -> Result<(), StoreError> {
    let parts = st.parts.clone();
    for d in parts.days.values() {
        for f in &d.raw {
            for e in &f.entries {
                let s = st
                    .catalog
                    .series
                    .get_mut(e.series as usize)
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "{} refers to unknown series {}",
                            f.path.display(),
                            e.series
                        ))
                    })?;
                s.oldest_ts = s.oldest_ts.min(e.min_ts);
                s.saw(e.max_ts(), e.acc.last);
            }
            for (g, t) in &f.ingest {
                if let Some(gpu) = st.catalog.gpus.get_mut(*g as usize) {
                    gpu.last_ingest_ms = gpu.last_ingest_ms.max(*t);
                }
            }
        }
    }
    Ok(())
}
