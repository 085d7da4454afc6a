//! Month arithmetic and partition names of the host metrics tables: `host_metrics_2026_11` holds
//! the samples of `[2026-11-01, 2026-12-01)` UTC. A month is an index `year * 12 + month - 1`.

use gpufleet_core::time::days_from_civil;

/// Prefix of every monthly partition.
pub const PARTITION_PREFIX: &str = "host_metrics_";
const DAY_MS: i64 = 86_400_000;
/// 0000-01-01T00:00:00Z.
const MIN_TS: i64 = -62_167_219_200_000;
/// 10000-01-01T00:00:00Z.
const MAX_TS: i64 = 253_402_300_800_000;

/// `(year, month 1-12)` of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m)
}

/// The month of a timestamp (clamped to years 0000–9999).
pub fn month_of(ts_ms: i64) -> i32 {
    let (y, m) = civil_month(ts_ms.clamp(MIN_TS, MAX_TS - 1).div_euclid(DAY_MS));
    (y * 12 + m - 1) as i32
}

/// First millisecond of a month.
pub fn month_start(month: i32) -> i64 {
    let (y, m) = (month.div_euclid(12), month.rem_euclid(12) + 1);
    days_from_civil(i64::from(y), m as u32, 1) * DAY_MS
}

/// `host_metrics_YYYY_MM`.
pub fn partition_name(month: i32) -> String {
    format!("{PARTITION_PREFIX}{:04}_{:02}", month.div_euclid(12), month.rem_euclid(12) + 1)
}

/// The month of a partition name, if it is one.
pub fn parse_partition(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PARTITION_PREFIX)?;
    let (y, m) = rest.split_once('_')?;
    if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m): (i32, i32) = (y.parse().ok()?, m.parse().ok()?);
    (1..=12).contains(&m).then_some(y * 12 + m - 1)
}

/// The months from `now_ms`'s through `months_ahead` after it.
pub fn months_from(now_ms: i64, months_ahead: u32) -> Vec<i32> {
    let first = month_of(now_ms);
    (0..=months_ahead as i32).map(|k| first + k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_names_and_bounds() {
        let nov_2026 = 1_793_491_200_000; // 2026-11-01T00:00:00Z
        let m = month_of(nov_2026);
        assert_eq!(partition_name(m), "host_metrics_2026_11");
        assert_eq!(month_start(m), nov_2026);
        assert_eq!(month_of(nov_2026 - 1), m - 1);
        assert_eq!(partition_name(m + 2), "host_metrics_2027_01");
        assert_eq!(parse_partition("host_metrics_2027_01"), Some(m + 2));
        for bad in ["host_metrics_2027_13", "host_metrics_27_01", "host_metrics_2027_1", "samples_2027_01", "host_metrics_20a7_01"] {
            assert_eq!(parse_partition(bad), None, "{bad}");
        }
        assert_eq!(months_from(nov_2026, 1), vec![m, m + 1]);
        assert_eq!(month_of(i64::MIN), 0);
        assert_eq!(month_of(0), 1970 * 12);
    }
}
