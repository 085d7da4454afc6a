//! Number parsing for CSV values: a fast exact path for plain decimals, unit stripping and the
//! "absent" markers nvidia-smi writes (`[N/A]`, `[Not Supported]`).

/// Powers of ten exactly representable as `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Parses a finite number (`12`, `-3.5`, `1e3`, `.5`). Plain decimals with at most 15 significant
/// digits take an exact fast path (an integer divided by a power of ten is correctly rounded);
/// everything else goes through the standard library. NaN and infinities are refused.
#[inline]
pub(crate) fn parse_f64(b: &[u8]) -> Option<f64> {
    if let Some(v) = parse_simple(b) {
        return Some(v);
    }
    let s = std::str::from_utf8(b).ok()?;
    let v: f64 = s.trim().parse().ok()?;
    v.is_finite().then_some(v)
}

#[inline]
fn parse_simple(b: &[u8]) -> Option<f64> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let mut mantissa: u64 = 0;
    let mut n_digits = 0usize;
    let mut frac_digits = 0usize;
    let mut seen_dot = false;
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                n_digits += 1;
                if seen_dot {
                    frac_digits += 1;
                }
                if n_digits > 15 {
                    return None;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => return None,
        }
    }
    if n_digits == 0 {
        return None;
    }
    // mantissa < 10^15 < 2^53 and frac_digits <= 15: both operands are exact.
    let v = mantissa as f64 / POW10[frac_digits];
    Some(if neg { -v } else { v })
}

/// A wide-CSV cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Cell {
    /// Empty, `N/A`, `Not Supported` or any `[bracketed note]` nvidia-smi writes instead of a value.
    Absent,
    /// A number, with any trailing unit (`25 MiB`, `45.67 W`, `100 %`) removed.
    Number(f64),
    /// Anything else (`Enabled`, `P0`, `0x0000`).
    Text,
}

/// Trims ASCII whitespace from both ends.
#[inline]
pub(crate) fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &b[s..e]
}

/// True for the markers that mean "no value here".
pub(crate) fn is_absent(t: &[u8]) -> bool {
    t.is_empty()
        || (t.first() == Some(&b'[') && t.last() == Some(&b']'))
        || t.eq_ignore_ascii_case(b"N/A")
        || t.eq_ignore_ascii_case(b"Not Supported")
}

/// Classifies one wide-CSV cell (already unescaped).
pub(crate) fn parse_cell(b: &[u8]) -> Cell {
    let t = trim(b);
    if is_absent(t) {
        return Cell::Absent;
    }
    if let Some(v) = parse_f64(t) {
        return Cell::Number(v);
    }
    // `25 MiB`, `45.67 W`, `100%`: a number followed by a short unit.
    let split = t.iter().position(|&c| {
        c == b' ' || c == b'%' || (c.is_ascii_alphabetic() && c != b'e' && c != b'E')
    });
    if let Some(i) = split.filter(|&i| i > 0) {
        let unit = trim(&t[i..]);
        if is_unit(unit) {
            if let Some(v) = parse_f64(trim(&t[..i])) {
                return Cell::Number(v);
            }
        }
    }
    Cell::Text
}

/// A short unit such as `MiB`, `W`, `%`, `MHz`, `KB/s`, `°C`, `us`.
fn is_unit(u: &[u8]) -> bool {
    !u.is_empty()
        && u.len() <= 8
        && u.iter()
            .all(|&c| c.is_ascii_alphabetic() || c == b'%' || c == b'/' || c >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_numbers() {
        assert_eq!(parse_f64(b"0"), Some(0.0));
        assert_eq!(parse_f64(b"631.95"), Some(631.95));
        assert_eq!(parse_f64(b"-3.5"), Some(-3.5));
        assert_eq!(parse_f64(b"1e3"), Some(1000.0));
        assert_eq!(parse_f64(b" 7 "), Some(7.0));
        assert_eq!(
            parse_f64(b"12345678901234567890"),
            Some(12345678901234567890.0)
        );
        assert_eq!(parse_f64(b"NaN"), None);
        assert_eq!(parse_f64(b"inf"), None);
        assert_eq!(parse_f64(b"abc"), None);
        assert_eq!(parse_f64(b""), None);
        assert_eq!(parse_f64(b"-"), None);
        assert_eq!(parse_f64(b"."), None);
    }

    #[test]
    fn nvidia_smi_cells() {
        assert_eq!(parse_cell(b" 25 MiB"), Cell::Number(25.0));
        assert_eq!(parse_cell(b" 45.67 W"), Cell::Number(45.67));
        assert_eq!(parse_cell(b"100 %"), Cell::Number(100.0));
        assert_eq!(parse_cell(b"100%"), Cell::Number(100.0));
        assert_eq!(parse_cell(b"0 us"), Cell::Number(0.0));
        assert_eq!(parse_cell(b"1e3 MHz"), Cell::Number(1000.0));
        assert_eq!(parse_cell(b" [N/A]"), Cell::Absent);
        assert_eq!(parse_cell(b"[Not Supported]"), Cell::Absent);
        assert_eq!(parse_cell(b"N/A"), Cell::Absent);
        assert_eq!(parse_cell(b"  "), Cell::Absent);
        assert_eq!(parse_cell(b"Enabled"), Cell::Text);
        assert_eq!(parse_cell(b"P0"), Cell::Text);
        assert_eq!(parse_cell(b"0x0000"), Cell::Text);
        assert_eq!(parse_cell(b"96.00.A5.00.01"), Cell::Text);
    }

    proptest! {
        #[test]
        fn fast_path_matches_std(int in 0u64..10_000_000, frac in 0u32..100_000, width in 1usize..6) {
            let s = format!("{int}.{frac:0width$}");
            prop_assert_eq!(parse_f64(s.as_bytes()), Some(s.parse::<f64>().unwrap()));
        }
        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse_cell(s.as_bytes());
            let _ = parse_f64(s.as_bytes());
        }
    }
}
