//! Retention: deletes whole day directories. A day's raw files go once the day ends at or
//! before `now − raw_retention`; its 1-minute and 1-hour rollups likewise with their own
//! retention (None keeps them forever). The new file set is published before anything is
//! deleted, so queries running on the old snapshot keep reading their open files.

use super::layout::{day_name, io, FileKind, DAY_MS};
use super::state::Partitions;
use super::Inner;
use crate::{RetentionReport, StoreError};
use std::{sync::Arc, time::Duration};

fn cutoff(now_ms: i64, keep: Option<Duration>) -> Option<i64> {
    keep.map(|d| now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

/// Applies the configured retention relative to `now_ms`.
pub(crate) fn apply(inner: &Inner, now_ms: i64) -> Result<RetentionReport, StoreError> {
    let cfg = &inner.cfg;
    let cuts = [
        (FileKind::Raw, cutoff(now_ms, cfg.raw_retention)),
        (FileKind::Min, cutoff(now_ms, cfg.rollup_1m_retention)),
        (FileKind::Hour, cutoff(now_ms, cfg.rollup_1h_retention)),
    ];
    let mut report = RetentionReport::default();
    let mut doomed = Vec::new();
    {
        let mut st = inner.state.write();
        let mut parts: Partitions = (*st.parts).clone();
        for (day, d) in parts.days.iter_mut() {
            let end = (day + 1) * DAY_MS;
            for (kind, cut) in cuts {
                if cut.is_none_or(|c| end > c) {
                    continue;
                }
                let files_present = match kind {
                    FileKind::Raw => !std::mem::take(&mut d.raw).is_empty(),
                    FileKind::Min => !std::mem::take(&mut d.r1m).is_empty(),
                    FileKind::Hour => !std::mem::take(&mut d.r1h).is_empty(),
                };
                let dir = cfg.data_dir.join(kind.dir()).join(day_name(*day));
                if files_present || dir.exists() {
                    match kind {
                        FileKind::Raw => report.raw_partitions_dropped += 1,
                        FileKind::Min | FileKind::Hour => report.rollup_partitions_dropped += 1,
                    }
                    doomed.push(dir);
                }
            }
        }
        parts.days.retain(|_, d| !d.is_empty());
        st.parts = Arc::new(parts);
        recompute_oldest(&mut st);
    }
    for dir in doomed {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&dir)(e)),
        }
    }
    Ok(report)
}

/// Oldest stored timestamp per series after files were dropped.
fn recompute_oldest(st: &mut super::state::State) {
    let mut oldest = vec![i64::MAX; st.catalog.series.len()];
    for d in st.parts.days.values() {
        for f in &d.raw {
            for e in &f.entries {
                if let Some(o) = oldest.get_mut(e.series as usize) {
                    *o = (*o).min(e.min_ts);
                }
            }
        }
    }
    let heads = std::iter::once(&st.head).chain(st.frozen.as_deref());
    for h in heads {
        for (s, hs) in h.iter() {
            if let (Some(o), Some(t)) = (oldest.get_mut(s as usize), hs.ts.first()) {
                *o = (*o).min(*t);
            }
        }
    }
    for (s, o) in st.catalog.series.iter_mut().zip(oldest) {
        s.oldest_ts = o;
    }
}
