//! The load generator: the `wrk` Lua script that POSTs one chat completion, a bounded `wrk` run
//! (warm-up, then the measured run with `--latency`; a run that outlives its duration by
//! [`GRACE`] is killed), and parsing of its text report.

use super::cpu;
use super::procs::ChildProc;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a wrk run may outlive its `-d` duration before it is killed (wrk stops by itself at
/// the duration; a slow peer's open requests must not hold it longer than its `--timeout`).
pub(super) const GRACE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

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
    /// Cores the server's process tree used during the measured run (CPU s / wall s).
    pub(super) cpu_cores: Option<f64>,
    /// Server CPU per request in µs (CPU s / requests).
    pub(super) cpu_us_per_req: Option<f64>,
}

/// The Lua script: POST [`CHAT_BODY`] as JSON with `Authorization: Bearer <key>`.
pub(super) fn lua_script(key: &str) -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {key}\"\nwrk.body = '{CHAT_BODY}'\n"
    )
}

/// Warm-up of `warmup_s` (output dropped), then the measured run of `seconds` at `conns`
/// connections on one thread. wrk stops by itself after `-d`; `--timeout 10s` bounds each
/// request and [`GRACE`] bounds the whole run. With `server` (a process id), the CPU its
/// process tree used during the measured run is reported too.
pub(super) fn run(
    script: &Path,
    url: &str,
    conns: u32,
    warmup_s: u64,
    seconds: u64,
    server: Option<u32>,
) -> Result<WrkResult> {
    if warmup_s > 0 {
        let (st, _) =
            finish(start(script, url, conns, warmup_s, false)?, warmup_s).context("wrk warm-up")?;
        if !st.success() {
            bail!("wrk warm-up against {url} failed: {st}");
        }
    }
    let cpu0 = server.map(cpu::tree_cpu_s).transpose()?;
    let t0 = Instant::now();
    let child = start(script, url, conns, seconds, true)?;
    let (st, text) = finish(child, seconds)?;
    let wall = t0.elapsed().as_secs_f64();
    if !st.success() {
        bail!("wrk against {url} failed ({st}): {}", text.trim());
    }
    let mut r = parse(&text).with_context(|| format!("reading wrk's report:\n{text}"))?;
    if let (Some(pid), Some(c0)) = (server, cpu0) {
        let cpu = cpu::tree_cpu_s(pid)? - c0;
        r.cpu_cores = Some(cpu / wall);
        let requests = r.rps * seconds as f64;
        r.cpu_us_per_req = (requests > 0.0).then(|| cpu / requests * 1e6);
    }
    Ok(r)
}

/// Starts `wrk -t1 -cC -dS` (with `--timeout 10s --latency` when `measured`), stdout piped and
/// stderr merged into it by the caller's reading ([`finish`]).
pub(super) fn start(
    script: &Path,
    url: &str,
    conns: u32,
    seconds: u64,
    measured: bool,
) -> Result<ChildProc> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", &format!("-c{conns}"), &format!("-d{seconds}s")]);
    if measured {
        cmd.args(["--timeout", "10s", "--latency"]);
    }
    cmd.arg("-s")
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    ChildProc::spawn(&mut cmd, format!("wrk -c{conns} against {url}"))
}

/// Waits for a wrk started with [`start`] for `seconds` to exit, at most `seconds` + [`GRACE`]
/// (then it is killed and this fails); its exit status and report.
pub(super) fn finish(mut child: ChildProc, seconds: u64) -> Result<(ExitStatus, String)> {
    let limit = Duration::from_secs(seconds) + GRACE;
    let deadline = Instant::now() + limit;
    let mut out = child.take_stdout().context("wrk's stdout")?;
    loop {
        if let Some(st) = child.try_exited()? {
            let mut text = String::new();
            out.read_to_string(&mut text)
                .context("reading wrk's report")?;
            return Ok((st, text));
        }
        if Instant::now() >= deadline {
            bail!("wrk did not finish within {limit:?}; killed it");
        }
        std::thread::sleep(POLL);
    }
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
