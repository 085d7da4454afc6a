//! Timestamps: milliseconds since the Unix epoch (UTC) as `i64` everywhere.
//!
//! [`parse_timestamp`] reads what telemetry sources write: RFC 3339 (`2025-07-18T20:42:34Z`,
//! fractions, `+02:00` offsets), the same with a space and no zone (taken as UTC),
//! nvidia-smi's `2026/06/26 11:59:44.371` (taken as UTC) and Unix epoch seconds or milliseconds.
//! [`parse_query_time`] adds the relative forms the query API accepts (`now`, `-1h`, `-30m`).
//! The parsers are hand-written because they sit on the CSV hot path (2M rows/s target).

use thiserror::Error;

/// Why a time could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid timestamp {input:?}: {reason}")]
pub struct TimeError {
    /// What was given (shortened to 64 bytes).
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn err(input: &[u8], reason: &'static str) -> TimeError {
    let n = input.len().min(64);
    TimeError { input: String::from_utf8_lossy(&input[..n]).into_owned(), reason }
}

/// The wall clock now, in epoch milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian). Howard Hinnant's algorithm.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats milliseconds as RFC 3339 UTC (`2025-07-18T20:42:34Z`, or `.123Z` when sub-second).
pub fn format_rfc3339(ts_ms: i64) -> String {
    let secs = ts_ms.div_euclid(1000);
    let ms = ts_ms.rem_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (hh, mm, ss) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    if ms == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// Parses a source timestamp (see the module doc) into epoch milliseconds.
pub fn parse_timestamp(input: &[u8]) -> Result<i64, TimeError> {
    let b = trim(input);
    if b.is_empty() {
        return Err(err(input, "empty"));
    }
    if b.len() >= 19 && (b[4] == b'-' || b[4] == b'/') {
        return parse_datetime(input, b);
    }
    parse_epoch(input, b)
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let e = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(s, |e| e + 1);
    &b[s..e]
}

fn parse_datetime(input: &[u8], b: &[u8]) -> Result<i64, TimeError> {
    let sep = b[4];
    let y = digits(b, 0, 4).ok_or_else(|| err(input, "bad year"))?;
    if b[7] != sep || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
        return Err(err(input, "expected YYYY-MM-DDTHH:MM:SS"));
    }
    let mo = digits(b, 5, 2).ok_or_else(|| err(input, "bad month"))?;
    let d = digits(b, 8, 2).ok_or_else(|| err(input, "bad day"))?;
    let h = digits(b, 11, 2).ok_or_else(|| err(input, "bad hour"))?;
    let mi = digits(b, 14, 2).ok_or_else(|| err(input, "bad minute"))?;
    let s = digits(b, 17, 2).ok_or_else(|| err(input, "bad second"))?;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(i64::from(y), mo) || h > 23 || mi > 59 || s > 60 {
        return Err(err(input, "field out of range"));
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
        i += 1;
        let start = i;
        let mut scale = 100;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            ms += i64::from(c - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return Err(err(input, "empty fraction"));
        }
    }
    let offset_s: i64 = match b.get(i) {
        None => 0,
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(&c @ (b'+' | b'-')) => {
            let oh = digits(b, i + 1, 2).ok_or_else(|| err(input, "bad zone offset"))?;
            let om_at = if b.get(i + 3) == Some(&b':') { i + 4 } else { i + 3 };
            let om = digits(b, om_at, 2).ok_or_else(|| err(input, "bad zone offset"))?;
            if om_at + 2 != b.len() || oh > 23 || om > 59 {
                return Err(err(input, "bad zone offset"));
            }
            let off = i64::from(oh * 3600 + om * 60);
            if c == b'+' {
                off
            } else {
                -off
            }
        }
        Some(_) => return Err(err(input, "unexpected characters after the time")),
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s.min(59)) - offset_s;
    Ok(secs * 1000 + ms)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn parse_epoch(input: &[u8], b: &[u8]) -> Result<i64, TimeError> {
    let s = std::str::from_utf8(b).map_err(|_| err(input, "not utf-8"))?;
    let v: f64 = s.parse().map_err(|_| err(input, "not a date-time nor an epoch number"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(err(input, "epoch must be a finite positive number"));
    }
    // Heuristic documented for users: values above 1e11 are milliseconds (year 5138 in seconds).
    let ms = if v > 1e11 { v } else { v * 1000.0 };
    if ms > 253_402_300_799_000.0 {
        return Err(err(input, "epoch beyond year 9999"));
    }
    Ok(ms as i64)
}

/// Parses a query time: `now`, a relative offset from `now_ms` (`-1h`, `-30m`, `-2d`, `-15s`),
/// or anything [`parse_timestamp`] reads.
pub fn parse_query_time(s: &str, now_ms: i64) -> Result<i64, TimeError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    let rel = t.strip_prefix("now").unwrap_or(t);
    if let Some(d) = rel.strip_prefix('-') {
        return parse_duration_ms(d).map(|d| now_ms - d).map_err(|reason| err(s.as_bytes(), reason));
    }
    parse_timestamp(s.as_bytes())
}

/// Parses `90s`, `5m`, `1h`, `7d`, `2w`, `250ms` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, &'static str> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or("duration needs a unit (ms, s, m, h, d, w)")?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().map_err(|_| "duration needs a number before the unit")?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err("unknown duration unit (use ms, s, m, h, d, w)"),
    };
    n.checked_mul(mult).ok_or("duration too large")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc3339_forms() {
        assert_eq!(parse_timestamp(b"1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_timestamp(b"2025-07-18T20:42:34Z").unwrap(), 1_752_871_354_000);
        assert_eq!(parse_timestamp(b"2025-07-18T22:42:34.5+02:00").unwrap(), 1_752_871_354_500);
        assert_eq!(parse_timestamp(b"2024-01-01 12:00:01").unwrap(), 1_704_110_401_000);
        assert_eq!(parse_timestamp(b"2026/06/26 11:59:44.371").unwrap(), 1_782_475_184_371);
    }

    #[test]
    fn epoch_seconds_and_millis() {
        assert_eq!(parse_timestamp(b"1700000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_timestamp(b"1700000000123").unwrap(), 1_700_000_000_123);
    }

    #[test]
    fn bad_timestamps_say_why() {
        assert_eq!(parse_timestamp(b"2025-13-01T00:00:00Z").unwrap_err().reason, "field out of range");
        assert_eq!(parse_timestamp(b"2025-02-30T00:00:00Z").unwrap_err().reason, "field out of range");
        assert!(parse_timestamp(b"yesterday").is_err());
        assert!(parse_timestamp(b"").is_err());
        assert!(parse_timestamp(b"2025-07-18T20:42:34Zjunk").is_err());
    }

    #[test]
    fn relative_query_times() {
        assert_eq!(parse_query_time("-1h", 10_000_000).unwrap(), 10_000_000 - 3_600_000);
        assert_eq!(parse_query_time("now-30m", 10_000_000).unwrap(), 10_000_000 - 1_800_000);
        assert_eq!(parse_query_time("now", 5).unwrap(), 5);
        assert!(parse_query_time("-1y", 0).is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in 0i64..253_402_300_799_000) {
            prop_assert_eq!(parse_timestamp(format_rfc3339(ms).as_bytes()).unwrap(), ms);
        }
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_timestamp(s.as_bytes());
            let _ = parse_query_time(&s, 0);
        }
    }
}
