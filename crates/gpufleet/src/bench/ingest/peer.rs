//! The VictoriaMetrics peer, run exactly as `bench/peers/telemetry-ingest/peer_vm.py` runs it: the
//! same flags, the same file streamed with `tail -n +2 | curl -T -` to `/api/v1/import/csv` with
//! the same format string, `/internal/force_flush` (both timed as ingest), the same two queries,
//! `du -sb` of its data directory and its `VmHWM`. Installed from Debian like the peer scripts when
//! it is not on `PATH`; the process started here is the only one stopped.

use super::e2e::{first_two, AvgRow, Queries, Q1_GPU, Q1_HOST, Q1_METRIC, Q2_METRIC};
use super::http::{self, timed_get};
use crate::bench::proc::{dir_bytes, free_port, log_tail, on_path, vm_hwm_kb, ChildProc};
use anyhow::{bail, Context, Result};
use gpufleet_core::time::format_rfc3339;
use gpufleet_telemetry::synth::START_MS;
use serde_json::Value;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "victoria-metrics";
/// The CSV import format of peer_vm.py: column 2 becomes the series name.
const FORMAT: &str =
    "1:time:rfc3339,2:label:__name__,3:label:gpu,4:label:device,5:label:UUID,6:label:modelName,7:label:Hostname,8:label:container,9:label:pod,10:label:namespace,11:metric:value";
/// Longest the import (tail | curl) may take.
const IMPORT_LIMIT: Duration = Duration::from_secs(900);

/// The peer's figures.
#[derive(Debug, Clone, Default)]
pub(super) struct Peer {
    pub(super) version: String,
    /// Import POST plus force_flush, seconds.
    pub(super) ingest_s: f64,
    /// Import POST alone, seconds.
    pub(super) post_s: f64,
    pub(super) series: u64,
    pub(super) samples_stored: u64,
    pub(super) queries: Queries,
    pub(super) disk_bytes: u64,
    pub(super) peak_rss_kb: u64,
}

/// Installs VictoriaMetrics when needed, ingests `csv` (of `rows` rows) into a fresh instance in
/// `work/vm`, queries it and stops it.
pub(super) async fn run(client: &reqwest::Client, work: &Path, csv: &Path, rows: u64) -> Result<Peer> {
    ensure_installed().await?;
    for tool in ["tail", "curl"] {
        if !on_path(tool) {
            bail!("`{tool}` is not on PATH; the peer import streams the file with tail | curl like peer_vm.py");
        }
    }
    let version = version();
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let dir = work.join("vm");
    let log = work.join("vm.log");
    let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(BINARY);
    cmd.arg(format!("-storageDataPath={}", dir.display()))
        .arg("-retentionPeriod=100y")
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-loggerLevel=ERROR")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let mut vm = ChildProc::spawn(&mut cmd, "victoria-metrics")?;
    let result = ingest_and_query(client, &base, &mut vm, &dir, csv, rows).await;
    let stopped = vm.terminate(Duration::from_secs(60), |_| {}).await;
    let mut peer = result.with_context(|| format!("victoria-metrics log ({}) ends with:\n{}", log.display(), log_tail(&log, 2000)))?;
    stopped.context("stopping victoria-metrics")?;
    peer.version = version;
    Ok(peer)
}

async fn ingest_and_query(client: &reqwest::Client, base: &str, vm: &mut ChildProc, dir: &Path, csv: &Path, rows: u64) -> Result<Peer> {
    http::wait_healthy(client, &format!("{base}/health"), vm, Duration::from_secs(60)).await?;
    let t0 = Instant::now();
    import(csv, &format!("{base}/api/v1/import/csv?format={FORMAT}")).await?;
    let post_s = t0.elapsed().as_secs_f64();
    http::get_bytes(client, &format!("{base}/internal/force_flush")).await?;
    let ingest_s = t0.elapsed().as_secs_f64();

    let series_count = http::get_json(client, &format!("{base}/api/v1/series/count")).await?;
    let series = series_count.pointer("/data/0").and_then(Value::as_u64).unwrap_or(0);
    let (time, window) = query_time(rows);
    let count_q = format!("sum(count_over_time({{__name__=~\"DCGM_.*\"}}[{window}]))");
    let count = http::get_json(client, &query_url(base, &count_q, &time)).await?;
    let samples_stored = count.pointer("/data/result/0/value/1").and_then(Value::as_str).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0) as u64;

    let matcher = format!("{Q1_METRIC}{{Hostname=\"{Q1_HOST}\",gpu=\"{Q1_GPU}\"}}");
    let q1 = timed_get(client, &format!("{base}/api/v1/export?match[]={}", enc(&matcher))).await?;
    let mut q1_points = 0u64;
    for line in q1.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).context("victoria-metrics export line")?;
        q1_points += v["values"].as_array().map_or(0, |a| a.len() as u64);
    }
    let q2 = timed_get(client, &query_url(base, &format!("avg_over_time({Q2_METRIC}[{window}])"), &time)).await?;
    let q2_json: Value = serde_json::from_slice(&q2.body).context("victoria-metrics query answer")?;
    let result = q2_json.pointer("/data/result").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows_b: Vec<AvgRow> = result
        .iter()
        .filter_map(|r| {
            let value = r.pointer("/value/1")?.as_str()?.parse().ok()?;
            Some((r.pointer("/metric/Hostname")?.as_str()?.to_owned(), r.pointer("/metric/gpu")?.as_str()?.parse().ok()?, value))
        })
        .collect();
    let peak_rss_kb = vm_hwm_kb(vm.pid())?;
    Ok(Peer {
        version: String::new(),
        ingest_s,
        post_s,
        series,
        samples_stored,
        queries: Queries {
            q1_first_ms: q1.first_ms,
            q1_median_ms: q1.median_ms,
            q1_points,
            q2_first_ms: q2.first_ms,
            q2_median_ms: q2.median_ms,
            q2_rows: result.len() as u64,
            q2_sample: first_two(rows_b),
            rss_kb: peak_rss_kb,
        },
        disk_bytes: dir_bytes(dir)?,
        peak_rss_kb,
    })
}

/// `tail -n +2 csv | curl -sS -f -X POST -T - url`, two guarded processes; fails unless both exit 0.
async fn import(csv: &Path, url: &str) -> Result<()> {
    let mut tail_cmd = Command::new("tail");
    tail_cmd.args(["-n", "+2"]).arg(csv).stdin(Stdio::null()).stdout(Stdio::piped());
    let mut tail = ChildProc::spawn(&mut tail_cmd, "tail")?;
    let pipe = tail.take_stdout().context("tail has no stdout pipe")?;
    let mut curl_cmd = Command::new("curl");
    curl_cmd.args(["-sS", "-f", "-X", "POST", "-T", "-", url]).stdin(pipe).stdout(Stdio::null());
    let mut curl = ChildProc::spawn(&mut curl_cmd, "curl")?;
    let curl_st = curl.wait_exit(IMPORT_LIMIT, |_| {}).await?;
    let tail_st = tail.wait_exit(Duration::from_secs(10), |_| {}).await?;
    if !curl_st.success() || !tail_st.success() {
        bail!("importing into victoria-metrics failed: curl {curl_st}, tail {tail_st}");
    }
    Ok(())
}

/// Evaluation time and window of the range queries: peer_vm.py's `2025-06-01T00:10:00Z` and `1h`
/// while the data ends before 00:09; otherwise ten minutes past the data with a window that covers it.
pub(super) fn query_time(rows: u64) -> (String, String) {
    let span_s = rows.div_ceil(super::e2e::SAMPLES_PER_SECOND) as i64;
    if span_s <= 540 {
        return (format_rfc3339(START_MS + 600_000), "1h".to_owned());
    }
    let end_s = span_s + 600;
    (format_rfc3339(START_MS + end_s * 1000), format!("{}s", end_s + 60))
}

fn query_url(base: &str, query: &str, time: &str) -> String {
    format!("{base}/api/v1/query?query={}&time={}", enc(query), enc(time))
}

/// Percent-encodes a query parameter value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `victoria-metrics -version`, or the Debian package version when that prints nothing (the
/// Debian build carries no build info).
fn version() -> String {
    let out = |cmd: &mut Command| {
        cmd.stdin(Stdio::null()).output().map(|o| String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).trim().to_owned()).unwrap_or_default()
    };
    let v = out(Command::new(BINARY).arg("-version"));
    if !v.is_empty() {
        return v;
    }
    let deb = out(Command::new("dpkg-query").args(["-W", "-f", "${Version}", BINARY]));
    if deb.is_empty() || deb.contains(' ') {
        "unknown version".to_owned()
    } else {
        format!("{deb} (Debian)")
    }
}

/// Installs the Debian package the way the peer scripts do when the binary is missing.
async fn ensure_installed() -> Result<()> {
    if on_path(BINARY) {
        return Ok(());
    }
    eprintln!("{BINARY} is not on PATH; installing it with apt-get (as bench/peers does)");
    let st = tokio::task::spawn_blocking(|| {
        // apt's output goes to stderr so that stdout stays one JSON object with --json.
        Command::new("sh")
            .args(["-c", "apt-get update -qq && apt-get install -y -qq victoria-metrics"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .status()
    })
    .await
    .context("installer thread")?
    .context("running apt-get")?;
    if !st.success() || !on_path(BINARY) {
        bail!("could not install {BINARY} (apt-get: {st}); install the Debian package victoria-metrics (needs root) or put the binary on PATH");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rows_use_the_peer_scripts_query_time() {
        assert_eq!(query_time(2_000_000), ("2025-06-01T00:10:00Z".to_owned(), "1h".to_owned()));
        let (t, w) = query_time(6144 * 3600);
        assert_eq!(t, "2025-06-01T01:10:00Z");
        assert_eq!(w, "4260s");
    }

    #[test]
    fn enc_escapes_braces_quotes_and_colons() {
        assert_eq!(enc("a{b=\"c\"}[1h]"), "a%7Bb%3D%22c%22%7D%5B1h%5D");
    }
}
