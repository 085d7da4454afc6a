//! Mergeable aggregation state ([`Acc`]): count, min, max, sum, last value and its timestamp.
//!
//! The same state is kept in partition indexes (whole-chunk statistics), in 1-minute and 1-hour
//! rollup rows, and is built on the fly from raw points, so every answer can be assembled from
//! any mix of those sources. Merging must give exactly what one pass over the raw points gives,
//! and a float sum depends on the order of additions. So sums are exact: values that are
//! decimals with at most 9 fractional digits (every integer, `512.347`, …) are summed as integer
//! mantissas ([`ExactSum::Dec`]), which is associative. Only when a value has no such form (or
//! the mantissa sum would overflow) does the sum fall back to compensated float addition
//! ([`ExactSum::Float`]), whose last bit may then depend on merge order.
//! The sum reported is `mantissa_sum / 10^k`, the average that divided by the count.

use crate::Agg;

/// Powers of ten as floats (all exact).
pub(crate) const POW10: [f64; 10] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
/// Powers of ten as integers.
pub(crate) const POW10_I: [i64; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];
/// Most fractional decimal digits a value may have to be summed exactly.
pub(crate) const MAX_DEC: u8 = 9;
/// Largest mantissa magnitude (2^53): integers up to here convert to f64 exactly.
const MAX_MANTISSA: f64 = 9_007_199_254_740_992.0;

/// Whether `m / 10^k` reproduces `v` bit for bit.
pub(crate) fn is_decimal_of(v: f64, m: i64, k: u8) -> bool {
    (m as f64 / POW10[k as usize]).to_bits() == v.to_bits()
}

/// The shortest decimal form of `v`: `(m, k)` with `v == m / 10^k` exactly, `k ≤ 9` and
/// `|m| < 2^53`. None for NaN, infinities, -0.0 and values with more digits.
pub(crate) fn decimal(v: f64) -> Option<(i64, u8)> {
    if !v.is_finite() {
        return None;
    }
    for k in 0..=MAX_DEC {
        let x = (v * POW10[k as usize]).round();
        if x.abs() >= MAX_MANTISSA {
            return None;
        }
        let m = x as i64;
        if is_decimal_of(v, m, k) {
            return Some((m, k));
        }
    }
    None
}

/// A sum that merges associatively (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum ExactSum {
    /// `m / 10^k`, exact.
    Dec {
        /// Sum of mantissas.
        m: i64,
        /// Decimal exponent.
        k: u8,
    },
    /// Compensated float sum `hi + lo`.
    Float {
        /// Running sum.
        hi: f64,
        /// Accumulated rounding error.
        lo: f64,
    },
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum::Dec { m: 0, k: 0 }
    }
}

fn dec_add(m1: i64, k1: u8, m2: i64, k2: u8) -> Option<ExactSum> {
    let k = k1.max(k2);
    let a = m1.checked_mul(POW10_I[(k - k1) as usize])?;
    let b = m2.checked_mul(POW10_I[(k - k2) as usize])?;
    Some(ExactSum::Dec {
        m: a.checked_add(b)?,
        k,
    })
}

fn neumaier(hi: f64, lo: f64, v: f64) -> (f64, f64) {
    let s = hi + v;
    let c = if hi.abs() >= v.abs() {
        (hi - s) + v
    } else {
        (v - s) + hi
    };
    (s, lo + c)
}

impl ExactSum {
    fn as_float(self) -> (f64, f64) {
        match self {
            ExactSum::Dec { .. } => (self.value(), 0.0),
            ExactSum::Float { hi, lo } => (hi, lo),
        }
    }

    /// Adds one value.
    pub(crate) fn add(&mut self, v: f64) {
        if let ExactSum::Dec { m, k } = *self {
            if let Some(s) = decimal(v).and_then(|(vm, vk)| dec_add(m, k, vm, vk)) {
                *self = s;
                return;
            }
        }
        let (hi, lo) = self.as_float();
        let (hi, lo) = neumaier(hi, lo, v);
        *self = ExactSum::Float { hi, lo };
    }

    /// Adds another sum.
    pub(crate) fn merge(&mut self, o: ExactSum) {
        if let (ExactSum::Dec { m, k }, ExactSum::Dec { m: m2, k: k2 }) = (*self, o) {
            if let Some(s) = dec_add(m, k, m2, k2) {
                *self = s;
                return;
            }
        }
        let (hi, lo) = self.as_float();
        let (ohi, olo) = o.as_float();
        let (hi, lo) = neumaier(hi, lo, ohi);
        let (hi, lo) = neumaier(hi, lo, olo);
        *self = ExactSum::Float { hi, lo };
    }

    /// The sum as a float.
    pub(crate) fn value(self) -> f64 {
        match self {
            ExactSum::Dec { m, k } => m as f64 / POW10[k as usize],
            ExactSum::Float { hi, lo } => hi + lo,
        }
    }

    /// Packs into `(tag, a, b)` for columnar storage: tag = k for Dec, 255 for Float.
    pub(crate) fn pack(self) -> (i64, i64, f64) {
        match self {
            ExactSum::Dec { m, k } => (i64::from(k), m, 0.0),
            ExactSum::Float { hi, lo } => (255, hi.to_bits() as i64, lo),
        }
    }

    /// Inverse of [`Self::pack`]; None for an unknown tag.
    pub(crate) fn unpack(tag: i64, a: i64, b: f64) -> Option<Self> {
        match tag {
            0..=9 => Some(ExactSum::Dec { m: a, k: tag as u8 }),
            255 => Some(ExactSum::Float {
                hi: f64::from_bits(a as u64),
                lo: b,
            }),
            _ => None,
        }
    }
}

/// Aggregation state of a set of points of one series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Acc {
    /// Points seen.
    pub(crate) count: u64,
    /// Smallest value.
    pub(crate) min: f64,
    /// Largest value.
    pub(crate) max: f64,
    /// Sum of values.
    pub(crate) sum: ExactSum,
    /// Timestamp of the latest point.
    pub(crate) last_ts: i64,
    /// Value of the latest point.
    pub(crate) last: f64,
}

impl Default for Acc {
    fn default() -> Self {
        Self {
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: ExactSum::default(),
            last_ts: i64::MIN,
            last: f64::NAN,
        }
    }
}

impl Acc {
    /// Adds one point.
    pub(crate) fn push(&mut self, ts: i64, v: f64) {
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum.add(v);
        if ts >= self.last_ts {
            self.last_ts = ts;
            self.last = v;
        }
    }

    /// State of a slice of points.
    pub(crate) fn of(ts: &[i64], vals: &[f64]) -> Self {
        let mut a = Acc::default();
        for (t, v) in ts.iter().zip(vals) {
            a.push(*t, *v);
        }
        a
    }

    /// Adds the points of another state.
    pub(crate) fn merge(&mut self, o: &Acc) {
        if o.count == 0 {
            return;
        }
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum.merge(o.sum);
        if o.last_ts >= self.last_ts {
            self.last_ts = o.last_ts;
            self.last = o.last;
        }
    }

    /// The aggregate asked for.
    pub(crate) fn value(&self, agg: Agg) -> f64 {
        match agg {
            Agg::Avg => self.sum.value() / self.count as f64,
            Agg::Min => self.min,
            Agg::Max => self.max,
            Agg::Last => self.last,
            Agg::Sum => self.sum.value(),
            Agg::Count => self.count as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_finds_the_shortest_exact_form() {
        assert_eq!(decimal(512.347), Some((512_347, 3)));
        assert_eq!(decimal(42.0), Some((42, 0)));
        assert_eq!(decimal(-0.5), Some((-5, 1)));
        assert_eq!(decimal(-0.0), None);
        assert_eq!(decimal(f64::NAN), None);
        assert_eq!(decimal(1e300), None);
        assert_eq!(decimal(0.1 + 0.2), None);
    }

    #[test]
    fn decimal_sums_are_order_independent() {
        let vals = [0.1, 0.2, 0.3, 512.347, 1e-9, 7.0];
        let mut fwd = ExactSum::default();
        vals.iter().for_each(|v| fwd.add(*v));
        let mut a = ExactSum::default();
        let mut b = ExactSum::default();
        vals[..3].iter().rev().for_each(|v| a.add(*v));
        vals[3..].iter().for_each(|v| b.add(*v));
        b.merge(a);
        assert_eq!(fwd, b);
        assert!(matches!(fwd, ExactSum::Dec { .. }));
        assert_eq!(fwd.value(), 519.947000001);
    }

    #[test]
    fn non_decimal_values_fall_back_to_float() {
        let mut s = ExactSum::default();
        s.add(1.0);
        s.add(std::f64::consts::PI);
        assert!(matches!(s, ExactSum::Float { .. }));
        assert!((s.value() - (1.0 + std::f64::consts::PI)).abs() < 1e-12);
        let (t, a, b) = s.pack();
        assert_eq!(ExactSum::unpack(t, a, b), Some(s));
    }

    #[test]
    fn acc_merge_equals_one_pass() {
        let ts = [1, 2, 3, 4, 5];
        let vs = [3.0, 1.5, 9.0, 2.0, 4.0];
        let whole = Acc::of(&ts, &vs);
        let mut m = Acc::of(&ts[3..], &vs[3..]);
        m.merge(&Acc::of(&ts[..3], &vs[..3]));
        assert_eq!(whole, m);
        assert_eq!(whole.value(Agg::Last), 4.0);
        assert_eq!(whole.value(Agg::Avg), 19.5 / 5.0);
        assert_eq!(whole.value(Agg::Min), 1.5);
        assert_eq!(whole.value(Agg::Count), 5.0);
    }
}
