//! The report of `bench gateway`: per target (`direct`, `nginx`, the gpufleet variants and
//! `gpufleet` — the variant the targets are checked on —, `litellm`) and connection count,
//! requests/s, p50/p99, p99 added over the direct backend and the server's CPU; peak RSS; the
//! issue's targets checked. One JSON object with `--json`, else a table.

use super::rounds;
use super::wrk::WrkResult;
use super::GatewayBenchArgs;
use anyhow::Result;
use serde_json::{json, Map, Value};

/// Target RSS of the gateway at 64 connections, MB.
const RSS_TARGET_MB: f64 = 50.0;

/// One measured row.
pub(super) struct Row {
    pub(super) target: &'static str,
    pub(super) conns: u32,
    /// Which round of `--rounds` (from 0).
    pub(super) round: u32,
    pub(super) r: WrkResult,
}

/// `v` rounded to `digits` decimals (JSON without float noise).
fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn find<'a>(rows: &'a [Row], target: &str, conns: u32) -> Option<&'a WrkResult> {
    rows.iter()
        .find(|r| r.target == target && r.conns == conns)
        .map(|r| &r.r)
}

fn added_p99(rows: &[Row], target: &str, conns: u32) -> Option<f64> {
    Some(find(rows, target, conns)?.p99_ms - find(rows, "direct", conns)?.p99_ms)
}

/// The figures of a run: the JSON object `--json` prints, and the targets checked.
struct Summary {
    /// One row per target and connection count (medians over the rounds).
    rows: Vec<Row>,
    rounds: u32,
    json: Value,
    gf: &'static str,
    auth_added: Map<String, Value>,
    litellm_ratio: Map<String, Value>,
    checks: Vec<(String, bool)>,
}

fn summarize(
    args: &GatewayBenchArgs,
    all: &[Row],
    rss: &Map<String, Value>,
    peers: &Map<String, Value>,
) -> Summary {
    let medians = rounds::medians(all);
    let rows = &medians[..];
    let n_rounds = rounds::count(all);
    let gf = if rows.iter().any(|r| r.target == "gpufleet_auth_on") {
        "gpufleet_auth_on"
    } else {
        "gpufleet_auth_off"
    };
    let rss_mb = rss.values().filter_map(Value::as_f64).fold(0.0, f64::max);
    let mut targets = Map::new();
    for row in rows {
        let entry = targets.entry(row.target).or_insert_with(|| json!({}));
        let added = (row.target != "direct")
            .then(|| added_p99(rows, row.target, row.conns))
            .flatten();
        entry[row.conns.to_string()] = json!({
            "rps": round(row.r.rps, 0), "p50_ms": round(row.r.p50_ms, 3), "p99_ms": round(row.r.p99_ms, 3),
            "added_p99_ms": added.map(|a| round(a, 3)),
            "non_2xx": row.r.non_2xx, "socket_errors": row.r.socket_errors,
            "cpu_cores": row.r.cpu_cores.map(|c| round(c, 2)),
            "cpu_us_per_req": row.r.cpu_us_per_req.map(|c| round(c, 1)),
        });
    }
    // `gpufleet` is the variant the targets are checked on (API keys on when measured).
    if let Some(v) = targets.get(gf).cloned() {
        targets.insert("gpufleet".to_owned(), v);
    }
    let mut auth_added = Map::new();
    let mut litellm_ratio = Map::new();
    let mut checks = Vec::new();
    let mut per_round = Map::new();
    for &c in &args.connections {
        if let (Some(on), Some(off)) = (
            find(rows, "gpufleet_auth_on", c),
            find(rows, "gpufleet_auth_off", c),
        ) {
            auth_added.insert(c.to_string(), (on.p99_ms - off.p99_ms).into());
        }
        if let (Some(g), Some(l)) = (find(rows, gf, c), find(rows, "litellm", c)) {
            litellm_ratio.insert(c.to_string(), (g.rps / l.rps.max(f64::MIN_POSITIVE)).into());
        }
        // With several rounds: the medians are checked; how many rounds held on their own is
        // said beside them.
        let each = rounds::per_round(all, gf, "nginx", c);
        let held = |ok: fn(&(f64, f64)) -> bool| {
            if n_rounds > 1 {
                format!("; held in {} of {} rounds", each.iter().filter(|x| ok(x)).count(), each.len())
            } else {
                String::new()
            }
        };
        let med = if n_rounds > 1 { format!("medians of {n_rounds} rounds: ") } else { String::new() };
        if let (Some(g), Some(n)) = (find(rows, gf, c), find(rows, "nginx", c)) {
            checks.push((
                format!(
                    "{gf} req/s >= nginx req/s at {c} conns ({med}{:.0} vs {:.0}{})",
                    g.rps, n.rps, held(|x| x.0 >= 1.0)
                ),
                g.rps >= n.rps,
            ));
        }
        if let (Some(g), Some(n)) = (added_p99(rows, gf, c), added_p99(rows, "nginx", c)) {
            checks.push((
                format!("{gf} added p99 <= nginx added p99 at {c} conns ({med}{g:.3} vs {n:.3} ms{})", held(|x| x.1 <= 0.0)),
                g <= n,
            ));
        }
        if n_rounds > 1 {
            per_round.insert(
                c.to_string(),
                json!({
                    "rps_ratio_over_nginx": each.iter().map(|x| round(x.0, 3)).collect::<Vec<_>>(),
                    "added_p99_minus_nginx_ms": each.iter().map(|x| round(x.1, 3)).collect::<Vec<_>>(),
                }),
            );
        }
    }
    if args.connections.contains(&64) {
        checks.push((
            format!("gpufleet peak RSS <= {RSS_TARGET_MB} MB after 64 conns ({rss_mb:.1} MB)"),
            rss_mb <= RSS_TARGET_MB,
        ));
    }
    let json = json!({
        "seconds": args.seconds, "warmup_seconds": args.warmup, "rounds": n_rounds,
        "gpufleet_per_round": per_round,
        "gpufleet_variant": gf, "targets": targets,
        "gpufleet_worker_threads": args.gpufleet_threads.map_or(json!("one per core"), |n| json!(n.max(1))),
        "gpufleet_lane_threads": args.lane_threads.map_or(json!("half the cores"), |n| json!(n)),
        "gpufleet_rss_mb": round(rss_mb, 1), "gpufleet_rss_mb_by_variant": rss,
        "auth_on_minus_off_p99_ms": auth_added, "peers": peers,
        "gpufleet_over_litellm_rps": litellm_ratio,
        "checks": checks.iter().map(|(what, met)| json!({"target": what, "met": met})).collect::<Vec<_>>(),
    });
    Summary {
        rows: medians,
        rounds: n_rounds,
        json,
        gf,
        auth_added,
        litellm_ratio,
        checks,
    }
}

/// Prints a run's report: one JSON object with `--json`, else a table and the targets.
pub(super) fn report(
    args: &GatewayBenchArgs,
    rows: &[Row],
    rss: &Map<String, Value>,
    peers: &Map<String, Value>,
) -> Result<()> {
    let Summary {
        rows: medians,
        rounds: n_rounds,
        json,
        gf,
        auth_added,
        litellm_ratio,
        checks,
    } = summarize(args, rows, rss, peers);
    let rows = &medians[..];
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let threads = args.gpufleet_threads.map_or("one per core".to_owned(), |n| n.max(1).to_string());
    println!("gateway overhead ({} s per run after {} s warm-up, wrk -t1, mock backends = nginx return 200;", args.seconds, args.warmup);
    let lanes = args.lane_threads.filter(|n| *n > 0).map_or("half the cores".to_owned(), |n| n.to_string());
    println!("  nginx: 1 worker; gpufleet worker threads: {threads}, inference lane threads: {lanes};");
    println!("  cores and µs/req: CPU of the serving process tree during the run — for direct, the mock backends);");
    if n_rounds > 1 {
        println!("  {n_rounds} rounds, target order rotated each round; every figure below is the median over the rounds:");
    }
    println!(
        "  {:<18} {:>5} {:>10} {:>9} {:>9} {:>12} {:>8} {:>8} {:>6} {:>8}",
        "target",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "added p99",
        "non-2xx",
        "sockerr",
        "cores",
        "µs/req"
    );
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by_key(|r| r.conns);
    for r in sorted {
        let added = if r.target == "direct" {
            "-".to_owned()
        } else {
            added_p99(rows, r.target, r.conns).map_or("-".to_owned(), |a| format!("{a:.3}"))
        };
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
        println!(
            "  {:<18} {:>5} {:>10.0} {:>9.3} {:>9.3} {:>12} {:>8} {:>8} {:>6} {:>8}",
            r.target,
            r.conns,
            r.r.rps,
            r.r.p50_ms,
            r.r.p99_ms,
            added,
            r.r.non_2xx,
            r.r.socket_errors,
            opt(r.r.cpu_cores, 2),
            opt(r.r.cpu_us_per_req, 1)
        );
    }
    for (name, v) in rss {
        println!(
            "  {name} peak RSS (VmHWM): {:.1} MB",
            v.as_f64().unwrap_or(0.0)
        );
    }
    for (c, v) in &auth_added {
        println!(
            "  auth on − off p99 at {c} conns: {:.3} ms",
            v.as_f64().unwrap_or(0.0)
        );
    }
    for (c, v) in &litellm_ratio {
        println!(
            "  {gf} req/s ÷ litellm req/s at {c} conns: {:.0}×",
            v.as_f64().unwrap_or(0.0)
        );
    }
    for (peer, v) in peers {
        match v.get("error").and_then(Value::as_str) {
            Some(e) => println!("  {peer}: NOT MEASURED: {e}"),
            None => println!(
                "  {peer} peak RSS (VmHWM): {:.1} MB",
                v["rss_mb"].as_f64().unwrap_or(0.0)
            ),
        }
    }
    for (what, met) in &checks {
        println!(
            "  target: {what} -> {}",
            if *met { "met" } else { "MISSED" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayBenchArgs,
    }

    fn row(target: &'static str, conns: u32, rps: f64, p99_ms: f64) -> Row {
        Row {
            target,
            conns,
            round: 0,
            r: WrkResult {
                rps,
                p50_ms: p99_ms / 2.0,
                p99_ms,
                cpu_cores: Some(0.5),
                cpu_us_per_req: Some(10.0),
                ..WrkResult::default()
            },
        }
    }

    #[test]
    fn the_json_has_every_target_per_connection_count() {
        let args = Cli::parse_from(["bench", "--auth", "on"]).args;
        let rows = [
            row("direct", 16, 100_000.0, 0.25),
            row("nginx", 16, 40_000.0, 0.9),
            row("gpufleet_auth_on", 16, 30_000.0, 1.2),
            row("litellm", 16, 50.0, 300.0),
            row("direct", 64, 110_000.0, 1.0),
            row("nginx", 64, 48_000.0, 2.5),
            row("gpufleet_auth_on", 64, 50_000.0, 2.0),
            row("litellm", 64, 50.0, 4000.0),
        ];
        let mut rss = Map::new();
        rss.insert("gpufleet_auth_on".into(), 30.04.into());
        let s = summarize(&args, &rows, &rss, &Map::new());
        let t = &s.json["targets"];
        for target in ["direct", "nginx", "gpufleet", "litellm"] {
            for c in ["16", "64"] {
                for k in ["rps", "p50_ms", "p99_ms", "added_p99_ms"] {
                    assert!(t[target][c].get(k).is_some(), "{target} {c} {k}");
                }
            }
        }
        assert_eq!(t["direct"]["16"]["added_p99_ms"], Value::Null);
        assert_eq!(t["gpufleet"]["16"]["added_p99_ms"], json!(0.95));
        assert_eq!(t["litellm"]["64"]["added_p99_ms"], json!(3999.0));
        assert_eq!(s.json["gpufleet_rss_mb"], json!(30.0));
        assert_eq!(s.json["gpufleet_over_litellm_rps"]["64"], json!(1000.0));
        // 16 connections: both targets missed; 64: both met; RSS met.
        let met: Vec<bool> = s.checks.iter().map(|c| c.1).collect();
        assert_eq!(met, [false, false, true, true, true]);
    }
}
