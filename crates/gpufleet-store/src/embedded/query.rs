//! Read paths: range queries (raw or bucketed, paged), fleet aggregates, series and GPU
//! listings, counters.
//!
//! A query copies what it needs from the head under the read lock (only the asked series and
//! range), takes the current [`Partitions`] snapshot, and reads files after releasing the lock.
//! Bucketed queries whose step is a multiple of one hour (or one minute) read whole buckets from
//! the 1-hour (1-minute) rollups, the partial buckets at the range edges from raw files, and
//! the head points directly; [`Acc`] merges exactly, so the answer equals a pass over raw points.
//! Aggregates take whole-chunk statistics from partition indexes for chunks inside the range
//! and decode only chunks that straddle an edge.

use super::agg::Acc;
use super::head::Head;
use super::layout::{MAX_TS, MIN_TS};
use super::rollup::{RES_1H, RES_1M};
use super::state::{Partitions, State};
use super::Inner;
use crate::{
    AggregateQuery, AggregateRow, Cursor, GpuInfo, RangeQuery, RangeResult, SeriesFilter,
    SeriesPoints, StoreError, StoreStats,
};
use gpufleet_core::{GpuDesc, MetricName, SeriesKey};
use std::{collections::BTreeMap, path::Path};

/// Head points of `series` in `[a, b)` from the live and the frozen head.
fn head_points(st: &State, series: u32, a: i64, b: i64) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    let heads: [Option<&Head>; 2] = [Some(&st.head), st.frozen.as_deref()];
    for h in heads.into_iter().flatten() {
        if let Some(hs) = h.get(series) {
            let r = hs.range(a, b);
            out.extend(
                hs.ts[r.clone()]
                    .iter()
                    .copied()
                    .zip(hs.vals[r].iter().copied()),
            );
        }
    }
    out.sort_unstable_by_key(|p| p.0);
    out
}

/// Points of `series` in `[a, b)` from the raw files, time-ordered.
fn file_points(
    parts: &Partitions,
    series: u32,
    a: i64,
    b: i64,
) -> Result<Vec<(i64, f64)>, StoreError> {
    let mut out = Vec::new();
    if a >= b {
        return Ok(out);
    }
    for f in parts.raw_in(a, b) {
        let Some(e) = f.entry(series) else { continue };
        if e.max_ts() < a || e.min_ts >= b {
            continue;
        }
        let (ts, vals) = f.read(e)?;
        let lo = ts.partition_point(|t| *t < a);
        let hi = ts.partition_point(|t| *t < b);
        out.extend(ts[lo..hi].iter().copied().zip(vals[lo..hi].iter().copied()));
    }
    if !out.windows(2).all(|w| w[0].0 < w[1].0) {
        out.sort_unstable_by_key(|p| p.0);
    }
    Ok(out)
}

fn merge_sorted(a: Vec<(i64, f64)>, b: Vec<(i64, f64)>) -> Vec<(i64, f64)> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].0 <= b[j].0 {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Buckets of `series` over `[a, b)`; `head` holds its head points in that range.
fn buckets(
    parts: &Partitions,
    series: u32,
    a: i64,
    b: i64,
    step: i64,
    head: &[(i64, f64)],
) -> Result<BTreeMap<i64, Acc>, StoreError> {
    let mut out: BTreeMap<i64, Acc> = BTreeMap::new();
    let mut push = |t: i64, v: f64| out.entry(t.div_euclid(step) * step).or_default().push(t, v);
    head.iter().for_each(|(t, v)| push(*t, *v));
    let res = if step % RES_1H == 0 {
        Some(RES_1H)
    } else if step % RES_1M == 0 {
        Some(RES_1M)
    } else {
        None
    };
    // Whole buckets inside the range come from rollups, the rest from raw points.
    let (ra, rb) = match res {
        Some(_) => (
            a.div_euclid(step) * step + if a.rem_euclid(step) == 0 { 0 } else { step },
            b.div_euclid(step) * step,
        ),
        None => (b, b),
    };
    if ra >= rb {
        file_points(parts, series, a, b)?
            .into_iter()
            .for_each(|(t, v)| push(t, v));
        return Ok(out);
    }
    file_points(parts, series, a, ra)?
        .into_iter()
        .chain(file_points(parts, series, rb, b)?)
        .for_each(|(t, v)| push(t, v));
    let res = res.unwrap_or(RES_1M);
    let (da, db) = (super::layout::day_of(ra), super::layout::day_of(rb - 1));
    for (_, d) in parts.days.range(da..=db) {
        let files = if res == RES_1H { &d.r1h } else { &d.r1m };
        for f in files {
            for row in f.rows(series, ra, rb)? {
                out.entry(row.bucket.div_euclid(step) * step)
                    .or_default()
                    .merge(&row.acc);
            }
        }
    }
    Ok(out)
}

struct Selected {
    key: SeriesKey,
    id: u32,
    start: i64,
    head: Vec<(i64, f64)>,
}

/// Answers a [`RangeQuery`].
pub(crate) fn range(inner: &Inner, q: &RangeQuery) -> Result<RangeResult, StoreError> {
    if q.limit == 0 {
        return Err(StoreError::InvalidQuery("limit must be at least 1".into()));
    }
    if let Some(step) = q.step_ms {
        if step <= 0 {
            return Err(StoreError::InvalidQuery(format!(
                "step must be positive, got {step} ms"
            )));
        }
    }
    let mut result = RangeResult::default();
    // No sample lies outside [MIN_TS, MAX_TS); clamping keeps bucket arithmetic from overflowing.
    let (q_start, q_end) = (q.start_ms.max(MIN_TS), q.end_ms.min(MAX_TS));
    let (selected, parts) = {
        let st = inner.state.read();
        let cat = &st.catalog;
        let mut sel: Vec<(MetricName, SeriesKey, u32)> = Vec::new();
        for g in cat
            .by_uuid
            .get(&q.uuid)
            .map(|v| v.as_slice())
            .unwrap_or_default()
        {
            let gpu = &cat.gpus[*g as usize];
            if q.host.as_ref().is_some_and(|h| *h != gpu.desc.host) {
                continue;
            }
            for (m, s) in &gpu.series {
                let name = &cat.metrics[*m as usize];
                if q.metrics.is_empty() || q.metrics.contains(name) {
                    sel.push((name.clone(), cat.key(*s), *s));
                }
            }
        }
        sel.sort_by(|a, b| (&a.0, &a.1.host).cmp(&(&b.0, &b.1.host)));
        let mut out = Vec::with_capacity(sel.len());
        for (metric, key, id) in sel {
            let mut start = q_start;
            if let Some(c) = &q.cursor {
                if metric < c.metric {
                    continue;
                }
                if metric == c.metric {
                    start = start.max(c.ts_ms.saturating_add(q.step_ms.unwrap_or(1)));
                }
            }
            if start >= q_end {
                continue;
            }
            let head = head_points(&st, id, start, q_end);
            out.push(Selected {
                key,
                id,
                start,
                head,
            });
        }
        (out, st.parts.clone())
    };
    let mut room = q.limit;
    for s in selected {
        let mut points: Vec<(i64, f64)> = match q.step_ms {
            None => merge_sorted(file_points(&parts, s.id, s.start, q_end)?, s.head),
            Some(step) => buckets(&parts, s.id, s.start, q_end, step, &s.head)?
                .into_iter()
                .map(|(b, acc)| (b, acc.value(q.agg)))
                .collect(),
        };
        if points.is_empty() {
            continue;
        }
        let full = points.len() >= room;
        points.truncate(room);
        room -= points.len();
        if full {
            let last = points.last().map_or(s.start, |p| p.0);
            result.next_cursor = Some(Cursor {
                metric: s.key.metric.clone(),
                ts_ms: last,
            });
            result.series.push(SeriesPoints { key: s.key, points });
            break;
        }
        result.series.push(SeriesPoints { key: s.key, points });
    }
    Ok(result)
}

/// Answers an [`AggregateQuery`].
pub(crate) fn aggregate(
    inner: &Inner,
    q: &AggregateQuery,
) -> Result<Vec<AggregateRow>, StoreError> {
    let (start, end) = (q.start_ms.max(MIN_TS), q.end_ms.min(MAX_TS));
    if start >= end {
        return Ok(Vec::new());
    }
    let (work, parts) = {
        let st = inner.state.read();
        let cat = &st.catalog;
        let Some(m) = cat.metric_id(&q.metric) else {
            return Ok(Vec::new());
        };
        let mut work = Vec::new();
        for g in &cat.gpus {
            if q.host.as_ref().is_some_and(|h| *h != g.desc.host) {
                continue;
            }
            let Some(&(_, s)) = g.series.iter().find(|(gm, _)| *gm == m) else {
                continue;
            };
            let mut acc = Acc::default();
            let heads: [Option<&Head>; 2] = [Some(&st.head), st.frozen.as_deref()];
            for h in heads.into_iter().flatten() {
                if let Some(hs) = h.get(s) {
                    let r = hs.range(start, end);
                    acc.merge(&Acc::of(&hs.ts[r.clone()], &hs.vals[r]));
                }
            }
            work.push((cat.key(s), s, acc));
        }
        (work, st.parts.clone())
    };
    let files: Vec<_> = parts.raw_in(start, end).collect();
    let mut rows = Vec::with_capacity(work.len());
    for (key, s, mut acc) in work {
        for f in &files {
            let Some(e) = f.entry(s) else { continue };
            if e.max_ts() < start || e.min_ts >= end {
                continue;
            }
            if e.min_ts >= start && e.max_ts() < end {
                acc.merge(&e.acc);
                continue;
            }
            let (ts, vals) = f.read(e)?;
            let lo = ts.partition_point(|t| *t < start);
            let hi = ts.partition_point(|t| *t < end);
            acc.merge(&Acc::of(&ts[lo..hi], &vals[lo..hi]));
        }
        if acc.count > 0 {
            rows.push(AggregateRow {
                key,
                value: acc.value(q.agg),
                count: acc.count,
            });
        }
    }
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(rows)
}

/// Series matching a filter, sorted by key.
pub(crate) fn series(inner: &Inner, f: &SeriesFilter) -> Vec<(SeriesKey, GpuDesc)> {
    let st = inner.state.read();
    let cat = &st.catalog;
    let mut out = Vec::new();
    for g in &cat.gpus {
        if f.host.as_ref().is_some_and(|h| *h != g.desc.host)
            || f.uuid.as_ref().is_some_and(|u| *u != g.desc.uuid)
        {
            continue;
        }
        for (m, s) in &g.series {
            if f.metric
                .as_ref()
                .is_some_and(|fm| *fm != cat.metrics[*m as usize])
                || cat.series[*s as usize].oldest_ts == i64::MAX
            {
                continue;
            }
            out.push((cat.key(*s), g.desc.clone()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every GPU with data, sorted by (host, uuid).
pub(crate) fn gpus(inner: &Inner) -> Vec<GpuInfo> {
    let st = inner.state.read();
    let cat = &st.catalog;
    let mut out: Vec<GpuInfo> = cat.gpus.iter().filter_map(|g| gpu_info(cat, g)).collect();
    out.sort_by(|a, b| (&a.desc.host, &a.desc.uuid).cmp(&(&b.desc.host, &b.desc.uuid)));
    out
}

/// One GPU by uuid (the first by host order when a uuid is reported by several hosts).
pub(crate) fn gpu(inner: &Inner, uuid: &str) -> Option<GpuInfo> {
    let st = inner.state.read();
    let cat = &st.catalog;
    cat.gpus
        .iter()
        .filter(|g| g.desc.uuid.as_str() == uuid)
        .filter_map(|g| gpu_info(cat, g))
        .min_by(|a, b| a.desc.host.cmp(&b.desc.host))
}

fn gpu_info(cat: &super::catalog::Catalog, g: &super::catalog::GpuEntry) -> Option<GpuInfo> {
    let mut info = GpuInfo {
        desc: g.desc.clone(),
        first_seen_ms: i64::MAX,
        last_seen_ms: i64::MIN,
        last_ingest_ms: g.last_ingest_ms,
        latest: BTreeMap::new(),
    };
    for (m, s) in &g.series {
        let se = &cat.series[*s as usize];
        if se.oldest_ts == i64::MAX {
            continue;
        }
        info.first_seen_ms = info.first_seen_ms.min(se.oldest_ts);
        info.last_seen_ms = info.last_seen_ms.max(se.newest_ts);
        info.latest.insert(cat.metrics[*m as usize].clone(), (se.newest_ts, se.newest_val));
    }
    (!info.latest.is_empty()).then_some(info)
}

fn dir_bytes(p: &Path) -> Result<u64, StoreError> {
    let mut total = 0;
    let rd = match std::fs::read_dir(p) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(super::layout::io(p)(e)),
    };
    for e in rd {
        let Ok(e) = e else { continue };
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            total += dir_bytes(&e.path())?;
        } else if let Ok(m) = e.metadata() {
            total += m.len();
        }
    }
    Ok(total)
}

/// Counters.
pub(crate) fn stats(inner: &Inner) -> Result<StoreStats, StoreError> {
    let mut s = {
        let st = inner.state.read();
        let cat = &st.catalog;
        let frozen = st.frozen.as_ref().map_or(0, |f| f.samples());
        let head = st.head.samples() + frozen;
        let file_samples: u64 = st
            .parts
            .days
            .values()
            .flat_map(|d| d.raw.iter())
            .map(|f| f.samples)
            .sum();
        let live = cat.series.iter().filter(|s| s.oldest_ts != i64::MAX);
        let oldest = live.clone().map(|s| s.oldest_ts).min();
        let newest = live.clone().map(|s| s.newest_ts).max();
        let gpus = cat
            .gpus
            .iter()
            .filter(|g| {
                g.series
                    .iter()
                    .any(|(_, s)| cat.series[*s as usize].oldest_ts != i64::MAX)
            })
            .count();
        StoreStats {
            series: live.count() as u64,
            gpus: gpus as u64,
            samples: file_samples + head as u64,
            duplicates: st.duplicates,
            head_samples: head as u64,
            bytes_on_disk: 0,
            partitions: st.parts.days.len() as u64,
            oldest_ms: oldest,
            newest_ms: newest,
        }
    };
    s.bytes_on_disk = dir_bytes(&inner.cfg.data_dir)?;
    Ok(s)
}
