//! End-to-end durable ingest and queries against a real server: `gpufleet up` runs as a child
//! process (this same executable, default configuration, retention and API keys off), the in-process streamer
//! replays the file into it, and ingest ends when `/stats` counts every sample in the store (WAL
//! fsynced, queryable). Then SIGTERM (the graceful shutdown writes the head into compressed
//! partitions), the store directory is measured, and a restarted server answers the two queries.

use super::http::{self, timed_get};
use crate::bench::proc::{dir_bytes, free_port, log_tail, vm_hwm_kb, ChildProc, POLL};
use crate::cli::StreamArgs;
use anyhow::{bail, Context, Result};
use gpufleet_runtime::Shutdown;
use gpufleet_telemetry::synth::{GPUS_PER_HOST, HOSTS, METRICS};
use serde_json::Value;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Host, GPU index and metric of query (a), as in the peer scripts.
pub(super) const Q1_HOST: &str = "gpu-node-017";
pub(super) const Q1_GPU: u32 = 3;
pub(super) const Q1_METRIC: &str = "DCGM_FI_DEV_POWER_USAGE";
/// Metric of query (b).
pub(super) const Q2_METRIC: &str = "DCGM_FI_DEV_GPU_UTIL";
/// Samples in one second of the synthetic fleet.
pub(super) const SAMPLES_PER_SECOND: u64 = (HOSTS * GPUS_PER_HOST * METRICS.len()) as u64;
/// Longest the store may take to hold every sample after the streamer finished.
const STORE_LIMIT: Duration = Duration::from_secs(600);
/// Longest a graceful shutdown (which compresses the head) may take.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(300);

/// Points query (a) returns for a file of `rows` rows: one per second in which the generator
/// reached that series' row.
pub(super) fn expected_q1_points(rows: u64) -> u64 {
    let metric = METRICS.iter().position(|m| *m == Q1_METRIC).unwrap_or(0) as u64;
    let pos = ((17 * GPUS_PER_HOST as u64 + u64::from(Q1_GPU)) * METRICS.len() as u64) + metric;
    rows / SAMPLES_PER_SECOND + u64::from(rows % SAMPLES_PER_SECOND > pos)
}

/// A `gpufleet up` child.
pub(super) struct Server {
    proc: ChildProc,
    base: String,
}

impl Server {
    /// Starts `gpufleet up` on a free loopback port with `data_dir`, in `work` (so no
    /// `gpufleet.toml` is picked up), with every inherited `GPUFLEET_*` variable removed, retention
    /// off and authentication off; waits for `/health`.
    pub(super) async fn start(client: &reqwest::Client, work: &Path, data_dir: &Path, log: &Path) -> Result<Server> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let port = free_port()?;
        let log_file = OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(data_dir).current_dir(work);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("GPUFLEET_")) {
            cmd.env_remove(k);
        }
        cmd.env("GPUFLEET_STORE_RAW_RETENTION", "forever")
            .env("GPUFLEET_STORE_ROLLUP_1M_RETENTION", "forever")
            .env("GPUFLEET_STORE_ROLLUP_1H_RETENTION", "forever")
            .env("GPUFLEET_LOG_LEVEL", "warn");
        if has_server_auth_key() {
            // Loopback only: the benchmark measures the pipeline, not API keys.
            cmd.env("GPUFLEET_SERVER_AUTH", "false");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log_file);
        let mut proc = ChildProc::spawn(&mut cmd, "the gpufleet server")?;
        let base = format!("http://127.0.0.1:{port}");
        http::wait_healthy(client, &format!("{base}/health"), &mut proc, Duration::from_secs(120)).await?;
        Ok(Server { proc, base })
    }

    /// Its process id.
    pub(super) fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGTERM and wait for a clean exit; returns (seconds, the last `VmHWM` seen while it shut down, kB).
    pub(super) async fn stop(&mut self) -> Result<(f64, u64)> {
        let t = Instant::now();
        let mut hwm = 0;
        let st = self.proc.terminate(SHUTDOWN_LIMIT, |pid| hwm = vm_hwm_kb(pid).unwrap_or(hwm)).await?;
        if !st.success() {
            bail!("the server exited with {st} after SIGTERM");
        }
        Ok((t.elapsed().as_secs_f64(), hwm))
    }
}

/// Whether this build's configuration has `server.auth` (API keys), which the child then runs
/// without; a build before authentication rejects that variable as an unknown key.
fn has_server_auth_key() -> bool {
    toml::Value::try_from(crate::config::FileConfig::default()).is_ok_and(|v| v.get("server").and_then(|s| s.get("auth")).is_some())
}

/// Figures of the ingest phase.
#[derive(Debug, Clone, Default)]
pub(super) struct Ingest {
    pub(super) stream_s: f64,
    pub(super) ingest_s: f64,
    pub(super) peak_rss_kb: u64,
    pub(super) shutdown_s: f64,
    pub(super) shutdown_rss_kb: u64,
    pub(super) store_bytes: u64,
    pub(super) broker_bytes: u64,
}

/// Streams `csv` into a fresh server in `work/server`, waits until every sample is stored,
/// stops the server gracefully and measures the store.
pub(super) async fn ingest(client: &reqwest::Client, work: &Path, csv: &Path, rows: u64, workers: usize, batch: usize) -> Result<Ingest> {
    let data = work.join("server");
    let mut server = Server::start(client, work, &data, &work.join("server.log")).await?;
    let args = stream_args(csv, &server.base, workers, batch)?;
    let t0 = Instant::now();
    let summary = crate::stream::run(&args, Shutdown::new()).await.context("streaming the file into the server")?;
    let stream_s = t0.elapsed().as_secs_f64();
    if summary.rows != rows || summary.rejected != 0 || summary.samples != rows {
        bail!("the streamer acknowledged {} rows ({} rejected, {} samples); expected {rows} good rows", summary.rows, summary.rejected, summary.samples);
    }
    let stats_url = format!("{}/stats", server.base);
    loop {
        server.proc.ensure_running()?;
        let stats = http::get_json(client, &stats_url).await?;
        let stored = stats.pointer("/store/samples").and_then(Value::as_u64).unwrap_or(0);
        if stored >= rows {
            break;
        }
        if t0.elapsed() > STORE_LIMIT {
            bail!("only {stored} of {rows} samples were stored {STORE_LIMIT:?} after the stream started; see {stats_url}");
        }
        tokio::time::sleep(POLL).await;
    }
    let ingest_s = t0.elapsed().as_secs_f64();
    let peak_rss_kb = vm_hwm_kb(server.pid())?;
    let (shutdown_s, shutdown_rss_kb) = server.stop().await?;
    Ok(Ingest {
        stream_s,
        ingest_s,
        peak_rss_kb,
        shutdown_s,
        shutdown_rss_kb: shutdown_rss_kb.max(peak_rss_kb),
        store_bytes: dir_bytes(&data.join("store"))?,
        broker_bytes: dir_bytes(&data.join("broker"))?,
    })
}

/// The streamer's flags, parsed like `gpufleet stream` parses them so every flag this benchmark
/// does not set keeps its command-line default.
fn stream_args(csv: &Path, server: &str, workers: usize, batch: usize) -> Result<StreamArgs> {
    #[derive(clap::Parser)]
    struct StreamCli {
        #[command(flatten)]
        args: StreamArgs,
    }
    let argv: Vec<OsString> = vec![
        "stream".into(),
        csv.into(),
        "--server".into(),
        server.into(),
        "--workers".into(),
        workers.to_string().into(),
        "--batch".into(),
        batch.to_string().into(),
    ];
    Ok(<StreamCli as clap::Parser>::try_parse_from(argv).context("building the streamer's flags")?.args)
}

/// A (host, GPU index, value rounded to 3 decimals) row of query (b), for cross-checking.
pub(super) type AvgRow = (String, u32, f64);

/// Figures of the query phase (ours or the peer's).
#[derive(Debug, Clone, Default)]
pub(super) struct Queries {
    pub(super) q1_first_ms: f64,
    pub(super) q1_median_ms: f64,
    pub(super) q1_points: u64,
    pub(super) q2_first_ms: f64,
    pub(super) q2_median_ms: f64,
    pub(super) q2_rows: u64,
    /// The first two rows of (b) by (host, GPU index).
    pub(super) q2_sample: Vec<AvgRow>,
    /// `VmHWM` of the serving process after the queries, kB.
    pub(super) rss_kb: u64,
}

/// Restarts the server on `work/server` and runs queries (a) and (b) against it.
pub(super) async fn queries(client: &reqwest::Client, work: &Path) -> Result<Queries> {
    let mut server = Server::start(client, work, &work.join("server"), &work.join("server.log")).await?;
    let base = server.base.clone();
    let host_gpus = http::get_json(client, &format!("{base}/api/v1/hosts/{Q1_HOST}/gpus")).await?;
    let uuid = host_gpus["gpus"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["index"].as_u64() == Some(u64::from(Q1_GPU))))
        .and_then(|g| g["uuid"].as_str())
        .with_context(|| format!("{Q1_HOST} has no GPU with index {Q1_GPU}"))?
        .to_owned();
    let q1 = timed_get(client, &format!("{base}/api/v1/gpus/{uuid}/telemetry?metric={Q1_METRIC}&limit=100000")).await?;
    let q1_json: Value = serde_json::from_slice(&q1.body).context("query (a) answer")?;
    let q1_points = q1_json.pointer("/series/0/points").and_then(Value::as_array).map_or(0, |p| p.len() as u64);
    let q2 = timed_get(client, &format!("{base}/api/v1/telemetry/aggregate?metric={Q2_METRIC}&agg=avg")).await?;
    let q2_json: Value = serde_json::from_slice(&q2.body).context("query (b) answer")?;
    let gpus = http::get_json(client, &format!("{base}/api/v1/gpus")).await?;
    let index: HashMap<&str, u32> =
        gpus["gpus"].as_array().map(|gs| gs.iter().filter_map(|g| Some((g["uuid"].as_str()?, g["index"].as_u64()? as u32))).collect()).unwrap_or_default();
    let rows = q2_json["series"].as_array().cloned().unwrap_or_default();
    let sample =
        first_two(rows.iter().filter_map(|r| Some((r["host"].as_str()?.to_owned(), *index.get(r["gpu_uuid"].as_str()?)?, r["value"].as_f64()?))).collect());
    let rss_kb = vm_hwm_kb(server.pid())?;
    server.stop().await?;
    Ok(Queries {
        q1_first_ms: q1.first_ms,
        q1_median_ms: q1.median_ms,
        q1_points,
        q2_first_ms: q2.first_ms,
        q2_median_ms: q2.median_ms,
        q2_rows: rows.len() as u64,
        q2_sample: sample,
        rss_kb,
    })
}

/// The first two rows by (host, GPU index), values rounded to 3 decimals like the peer report.
pub(super) fn first_two(mut rows: Vec<AvgRow>) -> Vec<AvgRow> {
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    rows.into_iter().take(2).map(|(h, g, v)| (h, g, (v * 1000.0).round() / 1000.0)).collect()
}

/// The server log, for error messages.
pub(super) fn server_log(work: &Path) -> PathBuf {
    work.join("server.log")
}

/// The tail of the server log as an error context line.
pub(super) fn log_context(work: &Path) -> String {
    let tail = log_tail(&server_log(work), 2000);
    if tail.is_empty() {
        "the server log is empty".to_owned()
    } else {
        format!("server log ({}) ends with:\n{tail}", server_log(work).display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q1_expects_326_points_for_two_million_rows() {
        assert_eq!(SAMPLES_PER_SECOND, 6144);
        assert_eq!(expected_q1_points(2_000_000), 326);
        // (17 * 8 + 3) * 12 + 3 = 1671 rows into a second come before that series' row.
        assert_eq!(expected_q1_points(6144 + 1671), 1);
        assert_eq!(expected_q1_points(6144 + 1672), 2);
    }

    #[test]
    fn stream_args_keep_the_command_line_defaults() {
        let a = stream_args(Path::new("/tmp/x.csv"), "http://127.0.0.1:1", 3, 777).unwrap();
        assert_eq!((a.workers, a.batch, a.rate, a.loop_forever), (3, 777, 0, false));
        assert_eq!(a.files, vec![PathBuf::from("/tmp/x.csv")]);
        assert_eq!(a.server.server, "http://127.0.0.1:1");
    }

    #[test]
    fn first_two_sorts_by_host_then_index_and_rounds() {
        let rows = vec![("gpu-node-001".into(), 0, 1.0), ("gpu-node-000".into(), 10, 2.0), ("gpu-node-000".into(), 2, 68.62349)];
        assert_eq!(first_two(rows), vec![("gpu-node-000".to_owned(), 2, 68.623), ("gpu-node-000".to_owned(), 10, 2.0)]);
    }
}
