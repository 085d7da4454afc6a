//! Trends: an ordinary least-squares line through `(ts_ms, value)` points over 7 or 30 days, its
//! R², and the projection "disk reaches 90 % in 11 days".
//!
//! - **Fit** ([`fit`]): times are taken relative to their mean (in days) so sums stay exact for
//!   epoch-millisecond inputs. Fewer than [`MIN_POINTS`] finite points, or all at one instant, give
//!   no fit. R² is `1 − SS_res / SS_tot`; a perfectly flat series (SS_tot = 0) has R² = 1.
//! - **Projection** ([`project`]): where the fitted line crosses the threshold, in a
//!   [`Direction`]: rising metrics (disk used) reach it from below, falling ones (memory available)
//!   from above. `Reached` when the line at `now` or the last measured value is already at or past
//!   it; `NotRising` when the line does not move towards it (flat or going away: never reached on
//!   this trend); else the time from `now`.
//! - [`trend`] puts both together for one metric series with the target of [`default_target`]
//!   unless a threshold is given.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Fewest points a fit is made from.
pub const MIN_POINTS: usize = 3;
const DAY_MS: f64 = 86_400_000.0;

/// The window a trend covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrendRange {
    /// The last 7 days (`7d`).
    #[serde(rename = "7d")]
    Days7,
    /// The last 30 days (`30d`).
    #[serde(rename = "30d")]
    Days30,
}

impl TrendRange {
    /// Length in ms.
    pub fn ms(self) -> i64 {
        match self {
            TrendRange::Days7 => 7 * 86_400_000,
            TrendRange::Days30 => 30 * 86_400_000,
        }
    }
}

impl fmt::Display for TrendRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrendRange::Days7 => "7d",
            TrendRange::Days30 => "30d",
        })
    }
}

impl FromStr for TrendRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "7d" | "7" | "week" => Ok(TrendRange::Days7),
            "30d" | "30" | "month" => Ok(TrendRange::Days30),
            other => Err(format!("range must be 7d or 30d, not {other:?}")),
        }
    }
}

/// A least-squares line `value = intercept + slope_per_day · (t − t_mean) / day`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// Points fitted.
    pub n: usize,
    /// Change per day.
    pub slope_per_day: f64,
    /// Fitted value at `t_mean_ms`.
    pub intercept: f64,
    /// Mean of the point times, epoch ms.
    pub t_mean_ms: f64,
    /// Coefficient of determination, 0–1 (1: the line explains every point).
    pub r2: f64,
    /// First and last point time, epoch ms.
    pub first_ms: i64,
    /// Last point time, epoch ms.
    pub last_ms: i64,
    /// The value of the last point (by time).
    pub last_value: f64,
}

impl Fit {
    /// The fitted value at `t_ms`.
    pub fn at(&self, t_ms: i64) -> f64 {
        self.intercept + self.slope_per_day * (t_ms as f64 - self.t_mean_ms) / DAY_MS
    }
}

/// The least-squares fit of `points` (any order; non-finite values are skipped), or `None` with
/// fewer than [`MIN_POINTS`] usable points or no spread in time.
pub fn fit(points: &[(i64, f64)]) -> Option<Fit> {
    let usable = || points.iter().filter(|(_, v)| v.is_finite());
    let n = usable().count();
    if n < MIN_POINTS {
        return None;
    }
    let nf = n as f64;
    let t_mean = usable().map(|(t, _)| *t as f64).sum::<f64>() / nf;
    let y_mean = usable().map(|(_, v)| *v).sum::<f64>() / nf;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (t, v) in usable() {
        let x = (*t as f64 - t_mean) / DAY_MS;
        let y = v - y_mean;
        sxx += x * x;
        sxy += x * y;
        syy += y * y;
    }
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let ss_res = usable()
        .map(|(t, v)| {
            let e = v - (y_mean + slope * (*t as f64 - t_mean) / DAY_MS);
            e * e
        })
        .sum::<f64>();
    let r2 = if syy <= 0.0 { 1.0 } else { (1.0 - ss_res / syy).clamp(0.0, 1.0) };
    let (first_ms, _) = usable().min_by_key(|(t, _)| *t)?;
    let (last_ms, last_value) = usable().max_by_key(|(t, _)| *t)?;
    Some(Fit { n, slope_per_day: slope, intercept: y_mean, t_mean_ms: t_mean, r2, first_ms: *first_ms, last_ms: *last_ms, last_value: *last_value })
}

/// Which way a metric goes towards its threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Reaches the threshold from below (disk used).
    #[default]
    Rising,
    /// Reaches the threshold from above (memory available).
    Falling,
}

/// When a series reaches a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Projection {
    /// Already at or past the threshold.
    Reached,
    /// Reached in `in_ms` from now, at `at_ms`.
    In {
        /// Time from now, ms.
        in_ms: i64,
        /// When, epoch ms.
        at_ms: i64,
    },
    /// Flat or moving away: not reached on this trend.
    NotRising,
}

impl Projection {
    /// Days until the threshold (0 when reached, `None` when not rising).
    pub fn days(&self) -> Option<f64> {
        match self {
            Projection::Reached => Some(0.0),
            Projection::In { in_ms, .. } => Some(*in_ms as f64 / DAY_MS),
            Projection::NotRising => None,
        }
    }
}

/// When the line of `f` reaches `threshold` going in `direction`, seen from `now_ms`.
pub fn project(f: &Fit, threshold: f64, direction: Direction, now_ms: i64) -> Projection {
    match direction {
        Direction::Rising => project_rising(f, threshold, now_ms),
        Direction::Falling => {
            let mirrored = Fit { slope_per_day: -f.slope_per_day, intercept: -f.intercept, last_value: -f.last_value, ..*f };
            project_rising(&mirrored, -threshold, now_ms)
        }
    }
}

fn project_rising(f: &Fit, threshold: f64, now_ms: i64) -> Projection {
    if f.at(now_ms) >= threshold || f.last_value >= threshold {
        return Projection::Reached;
    }
    if f.slope_per_day.is_nan() || f.slope_per_day <= 0.0 {
        return Projection::NotRising;
    }
    let days_from_mean = (threshold - f.intercept) / f.slope_per_day;
    let at = f.t_mean_ms + days_from_mean * DAY_MS;
    if !at.is_finite() || at >= i64::MAX as f64 {
        return Projection::NotRising;
    }
    let at_ms = at.ceil() as i64;
    Projection::In { in_ms: at_ms.saturating_sub(now_ms).max(0), at_ms }
}

/// The threshold and direction a metric is projected to when no threshold is asked for.
pub fn default_target(metric: &str) -> Option<(f64, Direction)> {
    match metric {
        "disk_used_pct" => Some((90.0, Direction::Rising)),
        m if m.starts_with("disk_used_pct:") => Some((90.0, Direction::Rising)),
        "cpu_steal_pct" => Some((5.0, Direction::Rising)),
        "gpu_temp_max_c" => Some((85.0, Direction::Rising)),
        "mem_available_pct" => Some((5.0, Direction::Falling)),
        _ => None,
    }
}

/// The direction a metric moves towards trouble (falling for `mem_available_*`, `disk_free_*`,
/// `cpu_idle_pct`; rising otherwise).
pub fn default_direction(metric: &str) -> Direction {
    if metric.starts_with("mem_available") || metric.starts_with("disk_free") || metric == "cpu_idle_pct" {
        Direction::Falling
    } else {
        Direction::Rising
    }
}

/// A metric's trend over a range, as the API answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// Host id.
    pub host: String,
    /// Metric name.
    pub metric: String,
    /// Window.
    pub range: TrendRange,
    /// Points read.
    pub points: usize,
    /// The fit (`None` with too few points).
    pub fit: Option<Fit>,
    /// Threshold projected to, if any.
    pub threshold: Option<f64>,
    /// Which way the threshold is approached.
    pub direction: Direction,
    /// The projection (`None` without fit or threshold).
    pub projection: Option<Projection>,
    /// One line for a person.
    pub summary: String,
}

/// The trend of `points` for `metric` on `host`, projected to `threshold` (default:
/// [`default_target`]) in the metric's [`default_direction`].
pub fn trend(host: &str, metric: &str, range: TrendRange, points: &[(i64, f64)], threshold: Option<f64>, now_ms: i64) -> Trend {
    let f = fit(points);
    let (threshold, direction) = match threshold {
        Some(t) => (Some(t), default_direction(metric)),
        None => default_target(metric).map_or((None, default_direction(metric)), |(t, d)| (Some(t), d)),
    };
    let projection = f.as_ref().zip(threshold).map(|(f, t)| project(f, t, direction, now_ms));
    let summary = match (&f, threshold, projection) {
        (None, _, _) => format!("not enough data: {} point(s) in {range}, at least {MIN_POINTS} needed", points.len()),
        (Some(f), None, _) => format!("{metric} changes by {:+.3} per day (R² {:.2})", f.slope_per_day, f.r2),
        (Some(_), Some(t), Some(Projection::Reached)) => {
            let side = if direction == Direction::Rising { "above" } else { "below" };
            format!("{} is at or {side} {}", label(metric), with_unit(metric, t))
        }
        (Some(f), Some(t), Some(Projection::In { in_ms, .. })) => {
            format!("{} reaches {} in {} (R² {:.2})", label(metric), with_unit(metric, t), human_days(in_ms as f64 / DAY_MS), f.r2)
        }
        (Some(f), Some(t), _) => format!("{} is not moving towards {} ({:+.3} per day)", label(metric), with_unit(metric, t), f.slope_per_day),
    };
    Trend { host: host.to_owned(), metric: metric.to_owned(), range, points: points.len(), fit: f, threshold, direction, projection, summary }
}

fn with_unit(metric: &str, v: f64) -> String {
    if metric.contains("_pct") {
        format!("{v} %")
    } else {
        format!("{v}")
    }
}

fn label(metric: &str) -> String {
    if metric == "mem_available_pct" {
        return "memory available".to_owned();
    }
    match metric.strip_prefix("disk_used_pct") {
        Some("") => "disk".to_owned(),
        Some(mount) => format!("disk {}", mount.trim_start_matches(':')),
        None => metric.to_owned(),
    }
}

/// `11 days`, `1 day`, `5 hours`, `less than an hour`.
pub fn human_days(days: f64) -> String {
    if days >= 1.5 {
        format!("{:.0} days", days.round())
    } else if days >= 1.0 {
        "1 day".to_owned()
    } else if days * 24.0 >= 1.0 {
        format!("{:.0} hours", (days * 24.0).round())
    } else {
        "less than an hour".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;
    const DAY: i64 = 86_400_000;

    fn line(n: usize, start: f64, per_day: f64, step_ms: i64) -> Vec<(i64, f64)> {
        (0..n).map(|i| (T0 + i as i64 * step_ms, start + per_day * (i as i64 * step_ms) as f64 / DAY as f64)).collect()
    }

    #[test]
    fn exact_line_is_recovered_with_r2_one() {
        // 7 days of hourly points rising 2 % per day from 50 %.
        let pts = line(7 * 24 + 1, 50.0, 2.0, 3_600_000);
        let f = fit(&pts).unwrap();
        assert_eq!(f.n, 169);
        assert!((f.slope_per_day - 2.0).abs() < 1e-9, "{f:?}");
        assert!((f.at(T0) - 50.0).abs() < 1e-9);
        assert!((f.at(T0 + 7 * DAY) - 64.0).abs() < 1e-9);
        assert!((f.r2 - 1.0).abs() < 1e-12);
        assert_eq!((f.first_ms, f.last_ms), (T0, T0 + 7 * DAY));
        assert!((f.last_value - 64.0).abs() < 1e-9);
    }

    #[test]
    fn projection_of_an_exact_line() {
        // 64 % now, +2 %/day: 90 % in 13 days.
        let pts = line(8, 50.0, 2.0, DAY);
        let now = T0 + 7 * DAY;
        let f = fit(&pts).unwrap();
        match project(&f, 90.0, Direction::Rising, now) {
            Projection::In { in_ms, at_ms } => {
                assert!((in_ms - 13 * DAY).abs() <= 1, "{in_ms}");
                assert!((at_ms - (T0 + 20 * DAY)).abs() <= 1);
            }
            other => panic!("{other:?}"),
        }
        let t = trend("h1", "disk_used_pct", TrendRange::Days7, &pts, None, now);
        assert_eq!(t.threshold, Some(90.0));
        assert_eq!(t.summary, "disk reaches 90 % in 13 days (R² 1.00)");
        assert!((t.projection.unwrap().days().unwrap() - 13.0).abs() < 1e-6);
        let t = trend("h1", "disk_used_pct:/data", TrendRange::Days7, &pts, Some(66.0), now);
        assert_eq!(t.summary, "disk /data reaches 66 % in 1 day (R² 1.00)");
    }

    #[test]
    fn flat_and_falling_are_not_projected() {
        let flat = line(10, 40.0, 0.0, DAY);
        let f = fit(&flat).unwrap();
        assert_eq!(f.slope_per_day, 0.0);
        assert_eq!(f.r2, 1.0);
        assert_eq!(project(&f, 90.0, Direction::Rising, T0 + 9 * DAY), Projection::NotRising);
        let falling = line(10, 80.0, -1.5, DAY);
        let f = fit(&falling).unwrap();
        assert!((f.slope_per_day + 1.5).abs() < 1e-9);
        assert_eq!(project(&f, 90.0, Direction::Rising, T0 + 9 * DAY), Projection::NotRising);
        assert_eq!(Projection::NotRising.days(), None);
        let t = trend("h", "disk_used_pct", TrendRange::Days30, &falling, None, T0 + 9 * DAY);
        assert!(t.summary.contains("not moving towards"), "{}", t.summary);
    }

    #[test]
    fn falling_metrics_are_projected_down_to_their_threshold() {
        // Memory available 45 % falling 4 %/day: 5 % in 10 days from the start, 3 days after day 7.
        let pts = line(8, 45.0, -4.0, DAY);
        let now = T0 + 7 * DAY;
        let t = trend("h", "mem_available_pct", TrendRange::Days7, &pts, None, now);
        assert_eq!((t.threshold, t.direction), (Some(5.0), Direction::Falling));
        assert!((t.projection.unwrap().days().unwrap() - 3.0).abs() < 1e-6, "{t:?}");
        assert_eq!(t.summary, "memory available reaches 5 % in 3 days (R² 1.00)");
        // Rising memory is never "reached" going down.
        let up = line(8, 45.0, 1.0, DAY);
        assert_eq!(trend("h", "mem_available_pct", TrendRange::Days7, &up, None, now).projection, Some(Projection::NotRising));
        // Already below.
        let low = line(8, 4.0, -0.1, DAY);
        let t = trend("h", "mem_available_pct", TrendRange::Days7, &low, None, now);
        assert_eq!(t.projection, Some(Projection::Reached));
        assert_eq!(t.summary, "memory available is at or below 5 %");
        assert_eq!(default_direction("disk_free_bytes:/data"), Direction::Falling);
        assert_eq!(default_direction("gpu_temp_max_c"), Direction::Rising);
    }

    #[test]
    fn reached_when_the_line_or_the_last_value_is_past_the_threshold() {
        let pts = line(5, 88.0, 1.0, DAY); // 92 at the last point
        let f = fit(&pts).unwrap();
        assert_eq!(project(&f, 90.0, Direction::Rising, T0 + 4 * DAY), Projection::Reached);
        assert_eq!(Projection::Reached.days(), Some(0.0));
        // Falling but the last value is still above.
        let pts = vec![(T0, 99.0), (T0 + DAY, 98.0), (T0 + 2 * DAY, 97.0)];
        assert_eq!(project(&fit(&pts).unwrap(), 90.0, Direction::Rising, T0 + 2 * DAY), Projection::Reached);
    }

    #[test]
    fn too_few_points_or_no_time_spread_give_no_fit() {
        assert!(fit(&[]).is_none());
        assert!(fit(&[(T0, 1.0), (T0 + 1, 2.0)]).is_none());
        assert!(fit(&[(T0, 1.0), (T0, 2.0), (T0, 3.0)]).is_none());
        // NaN points do not count.
        assert!(fit(&[(T0, 1.0), (T0 + 1, f64::NAN), (T0 + 2, 2.0)]).is_none());
        let t = trend("h", "disk_used_pct", TrendRange::Days7, &[(T0, 1.0)], None, T0);
        assert!(t.fit.is_none() && t.projection.is_none());
        assert_eq!(t.summary, "not enough data: 1 point(s) in 7d, at least 3 needed");
    }

    #[test]
    fn noisy_line_has_lower_r2_and_the_right_slope() {
        // A line plus alternating ±1 noise: slope exact by symmetry, R² below 1.
        let pts: Vec<(i64, f64)> = (0..20).map(|i| (T0 + i * DAY, 10.0 + 0.5 * i as f64 + if i % 2 == 0 { 1.0 } else { -1.0 })).collect();
        let f = fit(&pts).unwrap();
        assert!((f.slope_per_day - 0.5).abs() < 0.02, "{f:?}");
        assert!(f.r2 > 0.8 && f.r2 < 1.0, "{}", f.r2);
        // Order does not matter.
        let mut rev = pts.clone();
        rev.reverse();
        assert_eq!(fit(&rev).unwrap().last_ms, T0 + 19 * DAY);
        assert!((fit(&rev).unwrap().slope_per_day - f.slope_per_day).abs() < 1e-12);
    }

    #[test]
    fn ranges_parse_and_print() {
        assert_eq!("7d".parse::<TrendRange>().unwrap(), TrendRange::Days7);
        assert_eq!("30d".parse::<TrendRange>().unwrap(), TrendRange::Days30);
        assert!("90d".parse::<TrendRange>().is_err());
        assert_eq!(TrendRange::Days30.to_string(), "30d");
        assert_eq!(TrendRange::Days7.ms(), 7 * DAY);
        assert_eq!(human_days(11.2), "11 days");
        assert_eq!(human_days(0.25), "6 hours");
        assert_eq!(human_days(0.01), "less than an hour");
    }
}
