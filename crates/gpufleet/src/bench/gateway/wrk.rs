//! The load generator: the `wrk` Lua script that POSTs one chat completion, a bounded `wrk` run
//! (warm-up, then the measured run with `--latency`), and parsing of its text report.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};

/// The request body every run sends, as in the peer script.
pub(super) const CHAT_BODY: &str =
    r#"{"model":"mock-gpt","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}"#;

/// Figures of one measured `wrk` run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct WrkResult {
    /// Requests per second over the run.
    pub(super) rps: f64,
    /// Median latency, ms.
    pub(super) p50_ms: f64,
    /// 99th percentile latency, ms.
    pub(super) p99_ms: f64,
    /// Responses that were not 2xx or 3xx.
    pub(super) non_2xx: u64,
    /// Socket errors of every kind (connect, read, write, timeout).
    pub(super) socket_errors: u64,
}

/// The Lua script: POST [`CHAT_BODY`] as JSON with `Authorization: Bearer <key>`.
pub(super) fn lua_script(key: &str) -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {key}\"\nwrk.body = '{CHAT_BODY}'\n"
    )
}

/// Warm-up of `warmup_s` (output dropped), then the measured run of `seconds` at `conns`
/// connections on one thread. wrk stops by itself after `-d`; `--timeout 10s` bounds each request.
pub(super) fn run(
    script: &Path,
    url: &str,
    conns: u32,
    warmup_s: u64,
    seconds: u64,
) -> Result<WrkResult> {
    if warmup_s > 0 {
        let st = Command::new("wrk")
            .args([
                "-t1",
                &format!("-c{conns}"),
                &format!("-d{warmup_s}s"),
                "-s",
            ])
            .arg(script)
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running wrk (warm-up)")?;
        if !st.success() {
            bail!("wrk warm-up against {url} failed: {st}");
        }
    }
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "10s",
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk against {url} failed ({}): {}{}",
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&text).with_context(|| format!("reading wrk's report:\n{text}"))
}

/// A wrk duration (`126.00us`, `1.19ms`, `1.02s`, `2.00m`) in ms.
fn duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return None,
    };
    Some(v * scale)
}

/// Parses wrk's `--latency` report.
pub(super) fn parse(text: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    let (mut rps, mut p50, mut p99) = (None, None, None);
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("50%"), Some(d)) => p50 = duration_ms(d),
            (Some("99%"), Some(d)) => p99 = duration_ms(d),
            (Some("Requests/sec:"), Some(v)) => rps = v.parse().ok(),
            _ => {}
        }
        if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = rest.trim().parse().context("non-2xx count")?;
        }
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            r.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        }
    }
    r.rps = rps.context("no Requests/sec line")?;
    r.p50_ms = p50.context("no 50% latency line (was --latency given?)")?;
    r.p99_ms = p99.context("no 99% latency line")?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:1234/v1/chat/completions
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   140.11us   50.00us   3.00ms   90.00%
    Req/Sec   100.00k     2.00k  110.00k    70.00%
  Latency Distribution
     50%  126.00us
     75%  150.00us
     90%  200.00us
     99%    1.25ms
  1078740 requests in 10.00s, 400.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 17
Requests/sec: 107874.12
Transfer/sec:     40.00MB
";

    #[test]
    fn a_latency_report_is_parsed() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.rps, 107_874.12);
        assert!((r.p50_ms - 0.126).abs() < 1e-9);
        assert!((r.p99_ms - 1.25).abs() < 1e-9);
        assert_eq!(r.non_2xx, 17);
        assert_eq!(r.socket_errors, 5);
    }

    #[test]
    fn a_report_without_latency_distribution_is_an_error() {
        let text = REPORT.replace("     50%  126.00us\n", "");
        assert!(parse(&text).is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(duration_ms("2.00s"), Some(2000.0));
        assert_eq!(duration_ms("1.00m"), Some(60_000.0));
        assert_eq!(duration_ms("3.5ms"), Some(3.5));
        assert_eq!(duration_ms("12"), None);
        assert_eq!(duration_ms("1.0xs"), None);
    }

    #[test]
    fn the_script_carries_the_key_and_body() {
        let s = lua_script("gf_abc");
        assert!(s.contains("Bearer gf_abc"));
        assert!(s.contains(CHAT_BODY));
    }
}
