//! The in-memory head: samples not yet in partition files, per series sorted by time.
//!
//! A series is two parallel vectors (timestamps, values): 16 bytes a sample. Vectors grow by a
//! quarter (at least 16 slots) rather than doubling, so a head of millions of samples carries
//! at most ~25 % slack. Appending a sample newer than everything stored is O(1); an older one
//! is placed by binary search (the rare out-of-order case).

use std::time::Instant;

/// Points of one series.
#[derive(Default, Debug, Clone)]
pub(crate) struct HeadSeries {
    /// Timestamps, ascending, unique.
    pub(crate) ts: Vec<i64>,
    /// Values, parallel to `ts`.
    pub(crate) vals: Vec<f64>,
}

fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 4).max(16));
    }
}

impl HeadSeries {
    /// Index range of the points in `[start, end)`.
    pub(crate) fn range(&self, start: i64, end: i64) -> std::ops::Range<usize> {
        let a = self.ts.partition_point(|t| *t < start);
        let b = self.ts.partition_point(|t| *t < end);
        a..b.max(a)
    }

    /// Whether a point at `ts` exists.
    pub(crate) fn contains(&self, ts: i64) -> bool {
        self.ts.binary_search(&ts).is_ok()
    }

    /// Number of points.
    pub(crate) fn len(&self) -> usize {
        self.ts.len()
    }
}

/// All unflushed samples.
#[derive(Default, Debug)]
pub(crate) struct Head {
    series: Vec<HeadSeries>,
    samples: usize,
    since: Option<Instant>,
}

impl Head {
    fn slot(&mut self, series: u32) -> &mut HeadSeries {
        let i = series as usize;
        if i >= self.series.len() {
            self.series.resize_with(i + 1, HeadSeries::default);
        }
        &mut self.series[i]
    }

    fn touched(&mut self) {
        self.samples += 1;
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// Appends a point the caller knows is newer than any of the series.
    pub(crate) fn push(&mut self, series: u32, ts: i64, v: f64) {
        let s = self.slot(series);
        debug_assert!(s.ts.last().is_none_or(|l| *l < ts));
        grow(&mut s.ts);
        grow(&mut s.vals);
        s.ts.push(ts);
        s.vals.push(v);
        self.touched();
    }

    /// Inserts a point in time order; false (and nothing changes) when `ts` is present.
    pub(crate) fn insert(&mut self, series: u32, ts: i64, v: f64) -> bool {
        let s = self.slot(series);
        match s.ts.binary_search(&ts) {
            Ok(_) => false,
            Err(i) => {
                grow(&mut s.ts);
                grow(&mut s.vals);
                s.ts.insert(i, ts);
                s.vals.insert(i, v);
                self.touched();
                true
            }
        }
    }

    /// The points of a series, if any.
    pub(crate) fn get(&self, series: u32) -> Option<&HeadSeries> {
        self.series
            .get(series as usize)
            .filter(|s| !s.ts.is_empty())
    }

    /// Series ids with points, ascending, with their points.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &HeadSeries)> {
        self.series
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.ts.is_empty())
            .map(|(i, s)| (i as u32, s))
    }

    /// Samples held.
    pub(crate) fn samples(&self) -> usize {
        self.samples
    }

    /// When the oldest unflushed sample arrived.
    pub(crate) fn since(&self) -> Option<Instant> {
        self.since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_points_are_sorted_and_duplicates_refused() {
        let mut h = Head::default();
        h.push(2, 10, 1.0);
        h.push(2, 30, 3.0);
        assert!(h.insert(2, 20, 2.0));
        assert!(!h.insert(2, 20, 9.0));
        let s = h.get(2).unwrap();
        assert_eq!(s.ts, vec![10, 20, 30]);
        assert_eq!(s.vals, vec![1.0, 2.0, 3.0]);
        assert_eq!(s.range(15, 31), 1..3);
        assert_eq!(s.range(40, 50), 3..3);
        assert_eq!(h.samples(), 3);
        assert!(h.get(0).is_none());
        assert_eq!(h.iter().map(|(i, _)| i).collect::<Vec<_>>(), vec![2]);
    }
}
