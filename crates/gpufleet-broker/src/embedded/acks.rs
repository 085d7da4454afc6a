//! The acknowledged offsets of one consumer group, kept compact: a low watermark (every offset
//! below it is acked) plus disjoint, non-adjacent ranges of acked offsets above it.
//!
//! Acks mostly arrive in order, so the watermark advances and the range map stays small; a stuck
//! message costs one range, not one entry per later offset.

use std::collections::BTreeMap;

/// Acked offsets: everything below `watermark`, plus `ranges` (`start -> end`, end exclusive).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AckSet {
    watermark: u64,
    /// Disjoint, non-adjacent, every start > watermark.
    ranges: BTreeMap<u64, u64>,
}

impl AckSet {
    /// Everything below `watermark` acked, nothing above.
    pub(crate) fn new(watermark: u64) -> Self {
        Self {
            watermark,
            ranges: BTreeMap::new(),
        }
    }

    /// Every offset below this is acked.
    pub(crate) fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Acked ranges above the watermark, ascending.
    pub(crate) fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// Whether `offset` is acked.
    #[cfg(test)]
    pub(crate) fn contains(&self, offset: u64) -> bool {
        offset < self.watermark
            || self
                .ranges
                .range(..=offset)
                .next_back()
                .is_some_and(|(_, &end)| offset < end)
    }

    /// The first offset at or after `offset` that is not acked.
    pub(crate) fn first_unacked_from(&self, offset: u64) -> u64 {
        let offset = offset.max(self.watermark);
        match self.ranges.range(..=offset).next_back() {
            Some((_, &end)) if offset < end => end,
            _ => offset,
        }
    }

    /// Marks `[start, end)` acked.
    pub(crate) fn insert(&mut self, start: u64, end: u64) {
        let mut start = start.max(self.watermark);
        let mut end = end;
        if start >= end {
            return;
        }
        // Merge with a range that overlaps or touches on the left.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.ranges.remove(&s);
            }
        }
        // Absorb ranges that start inside or right after [start, end].
        while let Some((&s, &e)) = self.ranges.range(start..).next() {
            if s > end {
                break;
            }
            end = end.max(e);
            self.ranges.remove(&s);
        }
        if start <= self.watermark {
            self.watermark = end;
        } else {
            self.ranges.insert(start, end);
        }
    }

    /// Marks every offset below `offset` acked (used when older segments no longer exist).
    pub(crate) fn raise_watermark(&mut self, offset: u64) {
        if offset > self.watermark {
            self.insert(self.watermark, offset);
        }
    }

    /// Forgets acks of offsets at or above `end` (acks of messages a crash lost from the log).
    /// Returns whether anything was forgotten.
    pub(crate) fn truncate(&mut self, end: u64) -> bool {
        let mut changed = false;
        if self.watermark > end {
            self.watermark = end;
            changed = true;
        }
        let above: Vec<(u64, u64)> = self
            .ranges
            .range(..)
            .filter(|(_, &e)| e > end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, _) in above {
            self.ranges.remove(&s);
            if s < end {
                self.ranges.insert(s, end);
            }
            changed = true;
        }
        changed
    }

    /// How many offsets in `[from, to)` are acked.
    pub(crate) fn count_in(&self, from: u64, to: u64) -> u64 {
        if from >= to {
            return 0;
        }
        let mut n = self.watermark.clamp(from, to) - from;
        let first = self
            .ranges
            .range(..=from)
            .next_back()
            .map_or(from, |(&s, _)| s);
        for (&s, &e) in self.ranges.range(first..to) {
            let (s, e) = (s.max(from), e.min(to));
            n += e.saturating_sub(s);
        }
        n
    }

    /// The parts of `intervals` (ascending, disjoint, `[start, end)`) that are acked.
    pub(crate) fn intersect(&self, intervals: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for &(from, to) in intervals {
            if from < self.watermark {
                out.push((from, to.min(self.watermark)));
            }
            let from = from.max(self.watermark);
            if from >= to {
                continue;
            }
            let first = self
                .ranges
                .range(..=from)
                .next_back()
                .map_or(from, |(&s, _)| s);
            for (&s, &e) in self.ranges.range(first..to) {
                let (s, e) = (s.max(from), e.min(to));
                if s < e {
                    out.push((s, e));
                }
            }
        }
        out
    }
}

/// Sorts offsets and collapses them into `[start, end)` ranges.
pub(crate) fn to_ranges(offsets: &mut [u64]) -> Vec<(u64, u64)> {
    offsets.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &o in offsets.iter() {
        match out.last_mut() {
            Some((_, end)) if *end >= o => *end = (*end).max(o + 1),
            _ => out.push((o, o + 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn in_order_acks_move_the_watermark() {
        let mut set = AckSet::new(10);
        set.insert(10, 20);
        set.insert(20, 21);
        assert_eq!(set.watermark(), 21);
        assert_eq!(set.ranges().count(), 0);
    }

    #[test]
    fn gap_is_filled_later() {
        let mut set = AckSet::new(0);
        set.insert(5, 10);
        set.insert(1, 3);
        assert_eq!(set.watermark(), 0);
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![(1, 3), (5, 10)]);
        set.insert(0, 1);
        set.insert(3, 5);
        assert_eq!(set.watermark(), 10);
        assert!(set.contains(9) && !set.contains(10));
    }

    #[test]
    fn truncate_forgets_acks_past_the_end() {
        let mut set = AckSet::new(0);
        set.insert(0, 5);
        set.insert(7, 12);
        assert!(set.truncate(9));
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![(7, 9)]);
        assert!(set.truncate(3));
        assert_eq!((set.watermark(), set.ranges().count()), (3, 0));
        assert!(!set.truncate(3));
    }

    #[test]
    fn to_ranges_merges_runs() {
        assert_eq!(
            to_ranges(&mut [5, 3, 4, 9, 9, 1]),
            vec![(1, 2), (3, 6), (9, 10)]
        );
    }

    proptest! {
        #[test]
        fn matches_a_plain_set(base in 0u64..5, ops in prop::collection::vec((0u64..60, 1u64..6), 0..40), cut in 0u64..70) {
            let mut set = AckSet::new(base);
            let mut model: BTreeSet<u64> = (0..base).collect();
            for (s, len) in ops {
                set.insert(s, s + len);
                model.extend(s..s + len);
            }
            for o in 0..70 {
                prop_assert_eq!(set.contains(o), model.contains(&o), "offset {}", o);
            }
            for from in 0..70 {
                let expect = (from..).find(|o| !model.contains(o)).unwrap();
                prop_assert_eq!(set.first_unacked_from(from), expect);
                prop_assert_eq!(set.count_in(from, from + 13), model.range(from..from + 13).count() as u64);
            }
            // Invariants: ranges disjoint, non-adjacent, above the watermark.
            let mut prev_end = set.watermark();
            for (s, e) in set.ranges() {
                prop_assert!(s > prev_end && e > s);
                prev_end = e;
            }
            let acked: u64 = set.intersect(&[(0, 20), (30, 50)]).iter().map(|(s, e)| e - s).sum();
            prop_assert_eq!(acked, model.iter().filter(|&&o| o < 20 || (30..50).contains(&o)).count() as u64);
            set.truncate(cut);
            for o in 0..70 {
                prop_assert_eq!(set.contains(o), o < cut && model.contains(&o));
            }
        }
    }
}
