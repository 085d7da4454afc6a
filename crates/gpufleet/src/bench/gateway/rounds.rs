//! Repeated rounds of `bench gateway` (`--rounds N`): every target is loaded once per round, the
//! order rotated each round, so a slow moment of the shared box falls on different targets; the
//! report takes each figure's median over the rounds, and says in how many rounds each target
//! comparison held on its own.

use super::report::Row;
use super::wrk::WrkResult;

/// The median of `v` (mean of the middle two for an even count); `None` when empty.
pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// One row per target and connection count: the median of each figure over its rounds; error
/// counts summed.
pub(super) fn medians(rows: &[Row]) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for row in rows {
        if out.iter().any(|o| o.target == row.target && o.conns == row.conns) {
            continue;
        }
        let same: Vec<&WrkResult> = rows
            .iter()
            .filter(|r| r.target == row.target && r.conns == row.conns)
            .map(|r| &r.r)
            .collect();
        let med = |f: fn(&WrkResult) -> f64| median(same.iter().map(|r| f(r)).collect()).unwrap_or(0.0);
        let med_opt = |f: fn(&WrkResult) -> Option<f64>| median(same.iter().filter_map(|r| f(r)).collect());
        out.push(Row {
            target: row.target,
            conns: row.conns,
            round: 0,
            r: WrkResult {
                rps: med(|r| r.rps),
                p50_ms: med(|r| r.p50_ms),
                p99_ms: med(|r| r.p99_ms),
                non_2xx: same.iter().map(|r| r.non_2xx).sum(),
                socket_errors: same.iter().map(|r| r.socket_errors).sum(),
                cpu_cores: med_opt(|r| r.cpu_cores),
                cpu_us_per_req: med_opt(|r| r.cpu_us_per_req),
            },
        });
    }
    out
}

/// The rounds measured (1 + the highest round number).
pub(super) fn count(rows: &[Row]) -> u32 {
    rows.iter().map(|r| r.round + 1).max().unwrap_or(0)
}

fn in_round<'a>(rows: &'a [Row], target: &str, conns: u32, round: u32) -> Option<&'a WrkResult> {
    rows.iter().find(|r| r.target == target && r.conns == conns && r.round == round).map(|r| &r.r)
}

/// Per round: `target`'s requests/s ÷ `peer`'s, and `target`'s p99 added over direct minus
/// `peer`'s (ms), for the rounds where all three were measured.
pub(super) fn per_round(rows: &[Row], target: &str, peer: &str, conns: u32) -> Vec<(f64, f64)> {
    (0..count(rows))
        .filter_map(|k| {
            let (t, p, d) = (in_round(rows, target, conns, k)?, in_round(rows, peer, conns, k)?, in_round(rows, "direct", conns, k)?);
            Some((t.rps / p.rps.max(f64::MIN_POSITIVE), (t.p99_ms - d.p99_ms) - (p.p99_ms - d.p99_ms)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &'static str, conns: u32, round: u32, rps: f64, p99_ms: f64) -> Row {
        Row { target, conns, round, r: WrkResult { rps, p50_ms: p99_ms / 2.0, p99_ms, non_2xx: 1, cpu_us_per_req: Some(rps / 1000.0), ..WrkResult::default() } }
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn medians_take_each_figure_over_the_rounds_and_sum_errors() {
        let rows = [
            row("nginx", 16, 0, 100.0, 1.0),
            row("nginx", 16, 1, 300.0, 9.0),
            row("nginx", 16, 2, 200.0, 2.0),
            row("nginx", 64, 0, 50.0, 5.0),
        ];
        let m = medians(&rows);
        assert_eq!(m.len(), 2);
        let n16 = m.iter().find(|r| r.conns == 16).unwrap();
        assert_eq!((n16.r.rps, n16.r.p99_ms, n16.r.non_2xx), (200.0, 2.0, 3));
        assert_eq!(n16.r.cpu_us_per_req, Some(0.2));
        assert_eq!(m.iter().find(|r| r.conns == 64).unwrap().r.rps, 50.0);
        assert_eq!(count(&rows), 3);
    }

    #[test]
    fn per_round_ratios_pair_figures_of_the_same_round() {
        let rows = [
            row("direct", 16, 0, 1000.0, 0.2),
            row("nginx", 16, 0, 100.0, 1.0),
            row("gf", 16, 0, 110.0, 0.8),
            row("direct", 16, 1, 1000.0, 0.4),
            row("nginx", 16, 1, 100.0, 1.0),
            row("gf", 16, 1, 90.0, 1.5),
            row("nginx", 16, 2, 100.0, 1.0), // no direct, no gf in round 2
        ];
        let r = per_round(&rows, "gf", "nginx", 16);
        assert_eq!(r.len(), 2);
        assert!((r[0].0 - 1.1).abs() < 1e-9 && (r[0].1 - -0.2).abs() < 1e-9);
        assert!((r[1].0 - 0.9).abs() < 1e-9 && (r[1].1 - 0.5).abs() < 1e-9);
    }
}
