//! The maintenance thread (flushes, compaction, retention — one at a time) and the flush
//! itself.
//!
//! Flush: under the lock, the head becomes the frozen head and a WAL rotation is queued (so
//! every record of the frozen samples is in older segments). Outside the lock: new catalog
//! definitions go to `catalog.log`, then each UTC day of the frozen samples becomes a raw file
//! and its two rollup files ([`write_files`]: raw first — the commit point — then rollups, which
//! recovery rebuilds if missing). Under the lock again the files are published and the frozen
//! head dropped; then the older WAL segments are deleted. A failed flush keeps the frozen head
//! (still queried, still in the WAL) and is retried first next time.

use super::layout::{day_of, file_path, write_atomic, FileKind, DAY_MS};
use super::partition::{self, RawFile, SeriesSlice};
use super::rollup::{self, RollupFile, RES_1H, RES_1M};
use super::state::Partitions;
use super::{compact, retention, Inner};
use crate::{RetentionReport, StoreError};
use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, mpsc, Arc},
    thread::JoinHandle,
    time::Duration,
};
use tokio::sync::oneshot;
use tracing::{debug, warn};

enum Job {
    Flush(oneshot::Sender<Result<(), StoreError>>),
    Retention(i64, oneshot::Sender<Result<RetentionReport, StoreError>>),
    Kick,
    Stop,
}

/// Handle to the maintenance thread.
pub(crate) struct Maintenance {
    tx: mpsc::Sender<Job>,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Maintenance {
    /// Starts the thread.
    pub(crate) fn start(inner: Arc<Inner>) -> Result<Maintenance, StoreError> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("gpufleet-store-maint".into())
            .spawn(move || run(&inner, &rx))
            .map_err(|source| StoreError::Io {
                path: "maintenance thread".into(),
                source,
            })?;
        Ok(Maintenance {
            tx,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    /// Asks for a flush check soon.
    pub(crate) fn kick(&self) {
        let _ = self.tx.send(Job::Kick);
    }

    /// Flushes everything in memory and waits for it.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Job::Flush(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Applies retention and waits for it.
    pub(crate) async fn retention(&self, now_ms: i64) -> Result<RetentionReport, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Retention(now_ms, tx))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Stops the thread after its current job.
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Job::Stop);
        if let Some(h) = self.thread.lock().take() {
            if h.join().is_err() {
                warn!("store maintenance thread panicked");
            }
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("store maintenance thread stopped".into())
}

fn run(inner: &Arc<Inner>, rx: &mpsc::Receiver<Job>) {
    let tick =
        (inner.cfg.head_max_age / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        match rx.recv_timeout(tick) {
            Ok(Job::Flush(reply)) => {
                let _ = reply.send(flush_all(inner));
            }
            Ok(Job::Retention(now, reply)) => {
                let _ = reply.send(retention::apply(inner, now));
            }
            Ok(Job::Kick) | Err(mpsc::RecvTimeoutError::Timeout) => {
                if flush_due(inner) {
                    if let Err(error) = flush_all(inner) {
                        warn!(%error, "background flush failed; will retry");
                    }
                }
            }
            Ok(Job::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn flush_due(inner: &Inner) -> bool {
    let st = inner.state.read();
    st.frozen.is_some()
        || st.head.samples() >= inner.cfg.head_max_samples
        || st
            .head
            .since()
            .is_some_and(|t| t.elapsed() >= inner.cfg.head_max_age)
}

/// Flushes a frozen head left by a failed flush, then the current head.
pub(crate) fn flush_all(inner: &Inner) -> Result<(), StoreError> {
    inner.flush_requested.store(false, Ordering::Release);
    for _ in 0..2 {
        let retry = inner.state.read().frozen.is_some();
        flush_once(inner)?;
        if !retry {
            break;
        }
    }
    Ok(())
}

fn flush_once(inner: &Inner) -> Result<(), StoreError> {
    let (frozen, rotation, defs, groups, ingest) = {
        let mut st = inner.state.write();
        let (frozen, rotation) = match st.frozen.clone() {
            Some(f) => (f, None),
            None if st.head.samples() == 0 => return Ok(()),
            None => {
                let f = Arc::new(std::mem::take(&mut st.head));
                st.frozen = Some(f.clone());
                (f, Some(inner.wal.rotate()))
            }
        };
        let groups: Vec<u32> = st.catalog.series.iter().map(|s| s.metric).collect();
        let ingest: Vec<i64> = st.catalog.gpus.iter().map(|g| g.last_ingest_ms).collect();
        let gpu_of: Vec<u32> = st.catalog.series.iter().map(|s| s.gpu).collect();
        (
            frozen,
            rotation,
            st.catalog.take_pending(),
            (groups, gpu_of),
            ingest,
        )
    };
    if let Err(e) = inner.catalog_file.lock().append(&defs) {
        inner.state.write().catalog.restore_pending(defs);
        return Err(e);
    }
    let delete_below = match rotation {
        Some(rx) => match rx.blocking_recv() {
            Ok(Ok(seq)) => Some(seq),
            Ok(Err(f)) => return Err(f.into()),
            Err(_) => return Err(StoreError::Unavailable("write-ahead log stopped".into())),
        },
        None => None,
    };
    let (metric_of, gpu_of) = groups;
    // Split the frozen head by day.
    let mut days: BTreeMap<i64, Vec<SeriesSlice<'_>>> = BTreeMap::new();
    for (s, hs) in frozen.iter() {
        let mut i = 0;
        while i < hs.len() {
            let day = day_of(hs.ts[i]);
            let j = hs.ts.partition_point(|t| *t < (day + 1) * DAY_MS);
            days.entry(day).or_default().push(SeriesSlice {
                series: s,
                group: metric_of[s as usize],
                ts: &hs.ts[i..j],
                vals: &hs.vals[i..j],
            });
            i = j;
        }
    }
    let mut written = Vec::new();
    for (day, slices) in &days {
        let mut gpus: Vec<u32> = slices.iter().map(|s| gpu_of[s.series as usize]).collect();
        gpus.dedup();
        gpus.sort_unstable();
        gpus.dedup();
        let ing: Vec<(u32, i64)> = gpus
            .iter()
            .map(|g| (*g, ingest[*g as usize]))
            .filter(|(_, t)| *t != i64::MIN)
            .collect();
        let seq = inner.next_seq.fetch_add(1, Ordering::AcqRel);
        match write_files(inner, *day, seq, slices, &[], &ing) {
            Ok(files) => written.push(files),
            Err(e) => {
                // Unpublished files of this attempt would duplicate the retry's after a restart.
                for (raw, _, _) in &written {
                    compact::delete_files(&inner.cfg.data_dir, raw.day, &[raw.seq]);
                }
                return Err(e);
            }
        }
    }
    {
        let mut st = inner.state.write();
        let mut parts: Partitions = (*st.parts).clone();
        for (raw, m, h) in &written {
            let d = parts.days.entry(raw.day).or_default();
            d.raw.push(raw.clone());
            d.r1m.push(m.clone());
            d.r1h.push(h.clone());
        }
        st.parts = Arc::new(parts);
        st.frozen = None;
    }
    debug!(
        samples = frozen.samples(),
        files = written.len(),
        "flushed head"
    );
    if let Some(below) = delete_below {
        super::wal::delete_segments_below(&inner.wal_dir, below)?;
    }
    for day in days.keys() {
        if let Err(error) = compact::maybe_compact(inner, *day) {
            warn!(%error, day, "compaction failed; the files stay as they are until the next flush");
        }
    }
    Ok(())
}

/// A raw file and its 1-minute and 1-hour rollup files.
pub(crate) type FileSet = (Arc<RawFile>, Arc<RollupFile>, Arc<RollupFile>);

/// Writes a raw file and its rollups for one day and opens them. On failure the files of
/// `seq` are deleted again, so a retry cannot leave two copies of the same samples.
pub(crate) fn write_files(
    inner: &Inner,
    day: i64,
    seq: u64,
    slices: &[SeriesSlice<'_>],
    supersedes: &[u64],
    ingest: &[(u32, i64)],
) -> Result<FileSet, StoreError> {
    let root = &inner.cfg.data_dir;
    let attempt = || -> Result<FileSet, StoreError> {
        let raw_path = file_path(root, FileKind::Raw, day, seq);
        write_atomic(&raw_path, &partition::encode(slices, supersedes, ingest)?)?;
        let raw = Arc::new(RawFile::open(&raw_path, seq, day)?);
        let (m, h) = write_rollups(root, day, seq, slices, supersedes)?;
        Ok((raw, m, h))
    };
    attempt().inspect_err(|_| compact::delete_files(root, day, &[seq]))
}

/// Writes the 1-minute and 1-hour rollup files of some series and opens them.
pub(crate) fn write_rollups(
    root: &std::path::Path,
    day: i64,
    seq: u64,
    slices: &[SeriesSlice<'_>],
    supersedes: &[u64],
) -> Result<(Arc<RollupFile>, Arc<RollupFile>), StoreError> {
    let mut out = Vec::with_capacity(2);
    for (kind, res) in [(FileKind::Min, RES_1M), (FileKind::Hour, RES_1H)] {
        let rows: Vec<rollup::RollSeries> = slices
            .iter()
            .map(|s| rollup::RollSeries {
                series: s.series,
                group: s.group,
                rows: rollup::rows_of(s.ts, s.vals, res),
            })
            .collect();
        let path = file_path(root, kind, day, seq);
        write_atomic(&path, &rollup::encode(res, &rows, supersedes)?)?;
        out.push(Arc::new(RollupFile::open(&path, seq, res)?));
    }
    let h = out.pop();
    let m = out.pop();
    match (m, h) {
        (Some(m), Some(h)) => Ok((m, h)),
        _ => Err(StoreError::Corrupt(
            "rollup files missing after write".into(),
        )),
    }
}
