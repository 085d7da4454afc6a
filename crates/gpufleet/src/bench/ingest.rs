//! `gpufleet bench ingest`: the telemetry ingest benchmark of the issue. One run, on one machine:
//!
//! 1. generate the seeded synthetic DCGM CSV (64 hosts × 8 GPUs × 12 metrics, 1 s apart);
//! 2. CSV parse rate, one thread ([`micro`]);
//! 3. broker publish + consume + ack rate ([`micro`]);
//! 4. end-to-end durable ingest into a `gpufleet up` child process, peak RSS, bytes per sample
//!    after a graceful shutdown ([`e2e`]);
//! 5. queries (a) one series and (b) per-GPU average against the restarted child ([`e2e`]);
//! 6. publish → queryable latency at a fixed 50k samples/s ([`latency`]);
//! 7. with `--peer victoriametrics`, the same file and queries against VictoriaMetrics ([`peer`]).
//!
//! Every wait is bounded; every process started here is killed on every exit path (a guard in
//! [`proc`]), including Ctrl-C. Progress goes to stderr; stdout carries the table or the JSON.

mod e2e;
mod http;
mod latency;
mod micro;
mod peer;
mod report;

use crate::config::Settings;
use anyhow::{bail, Context, Result};
use report::{ratio, Figures, PeerFigures};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Peers the benchmark can run side by side.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// VictoriaMetrics single-node (Debian package `victoria-metrics`), as bench/peers runs it.
    #[value(name = "victoriametrics")]
    VictoriaMetrics,
}

/// Flags of `bench ingest`.
#[derive(clap::Args, Debug, Clone)]
pub struct IngestBenchArgs {
    /// Rows of synthetic DCGM CSV (one sample each); at least 6144 (one second of the fleet).
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    /// Seed of the generator; the same seed gives the same file.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also ingest the same file into this peer in the same run and print our/their ratios.
    #[arg(long, value_enum)]
    pub peer: Option<Peer>,
    /// Work directory (must be new or empty; never removed). Default: a temporary directory that
    /// is removed at the end unless --keep.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the temporary work directory (CSV, data directories, logs).
    #[arg(long)]
    pub keep: bool,
    /// Seconds of offered load in the publish -> queryable latency phase.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Requests the streamer keeps in flight in the end-to-end phase.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Rows per streamer request in the end-to-end phase.
    #[arg(long, default_value_t = 20_000)]
    pub batch: usize,
    /// Distributed mode: measure the Redis Streams broker at this URL beside raw
    /// `redis-benchmark` XADD (instead of the embedded phases).
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// Distributed mode: measure durable ingest into PostgreSQL at this URL (a fresh schema,
    /// dropped afterwards; uses --rows of the synthetic CSV).
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// With --broker: messages per run.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// With --broker: payload bytes per message (the reference uses 200).
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// With --database: rows per store write (a collector merges up to telemetry.fetch_max_messages
    /// messages into one write, so under backlog its writes are large).
    #[arg(long, default_value_t = 20_000)]
    pub db_batch_rows: usize,
    /// With --broker: pipeline depths (publish batch sizes) to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub pipeline: Vec<usize>,
}

/// Runs the benchmark and prints its figures.
pub async fn ingest(args: &IngestBenchArgs, settings: &Settings) -> Result<()> {
    if args.broker.is_some() || args.database.is_some() {
        return super::distributed::run(args).await;
    }
    if args.rows < e2e::SAMPLES_PER_SECOND {
        bail!("--rows must be at least {} (one second of the 512-GPU fleet) so both queries have data", e2e::SAMPLES_PER_SECOND);
    }
    if !(1..=600).contains(&args.latency_seconds) {
        bail!("--latency-seconds must be between 1 and 600");
    }
    if args.workers == 0 || args.batch == 0 {
        bail!("--workers and --batch must be at least 1");
    }
    let work = WorkDir::create(args)?;
    let figures = tokio::select! {
        r = run(args, settings, work.path()) => r?,
        _ = gpufleet_runtime::shutdown::os_signal() => bail!("interrupted; every process this benchmark started was stopped"),
    };
    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        report::print_human(&figures);
    }
    if work.kept() {
        eprintln!("work directory kept: {}", work.path().display());
    }
    Ok(())
}

async fn run(args: &IngestBenchArgs, settings: &Settings, work: &Path) -> Result<Figures> {
    let steps = if args.peer.is_some() { 7 } else { 6 };
    let step = |n: u32, what: &str| eprintln!("[{n}/{steps}] {what}");
    let mut f = Figures { rows: args.rows, seed: args.seed, stream_workers: args.workers, stream_batch: args.batch, ..Default::default() };
    let csv = work.join(format!("dcgm_{}_{}.csv", args.rows, args.seed));

    step(1, &format!("generating {} rows (seed {}) into {}", args.rows, args.seed, csv.display()));
    (f.gen_s, f.csv_bytes) = micro::generate(&csv, args.rows, args.seed).await?;

    step(2, "parsing the CSV (best of 3): reader and decoder threads, then everything on one thread");
    let t = Instant::now();
    for _ in 0..3 {
        f.parse_rows_per_s = f.parse_rows_per_s.max(micro::parse_rate_pipelined(&csv, args.rows).await?);
    }
    f.parse_s = t.elapsed().as_secs_f64();
    for _ in 0..3 {
        f.parse_1thread_rows_per_s = f.parse_1thread_rows_per_s.max(micro::parse_rate(&csv, args.rows).await?);
    }

    step(3, &format!("broker: {} messages of {} bytes, publish + consume + ack", micro::BROKER_MESSAGES, micro::BROKER_MESSAGE_BYTES));
    let b = micro::broker_rate(&work.join("broker-bench")).await?;
    (f.broker_messages, f.broker_msgs_per_s, f.broker_mb_per_s) = (micro::BROKER_MESSAGES as u64, b.msgs_per_s, b.mb_per_s);
    remove_dir(&work.join("broker-bench"))?;

    let client = http::client()?;
    step(4, "end-to-end durable ingest into a `gpufleet up` child, then graceful shutdown");
    let ing = e2e::ingest(&client, work, &csv, args.rows, args.workers, args.batch).await.with_context(|| e2e::log_context(work))?;
    f.stream_s = ing.stream_s;
    f.ingest_s = ing.ingest_s;
    f.ingest_samples_per_s = args.rows as f64 / ing.ingest_s.max(1e-9);
    f.peak_rss_mb = super::proc::kb_to_mb(ing.peak_rss_kb);
    f.peak_rss_incl_shutdown_mb = super::proc::kb_to_mb(ing.shutdown_rss_kb);
    f.shutdown_s = ing.shutdown_s;
    f.store_bytes = ing.store_bytes;
    f.broker_bytes_after = ing.broker_bytes;
    f.bytes_per_sample = ing.store_bytes as f64 / args.rows as f64;

    step(5, "queries (a) and (b) against the restarted server");
    let q = e2e::queries(&client, work).await.with_context(|| e2e::log_context(work))?;
    f.q1_expected_points = e2e::expected_q1_points(args.rows);
    (f.q1_first_ms, f.query_one_series_ms, f.q1_points) = (q.q1_first_ms, q.q1_median_ms, q.q1_points);
    (f.q2_first_ms, f.query_avg_all_ms, f.q2_rows, f.q2_sample) = (q.q2_first_ms, q.q2_median_ms, q.q2_rows, q.q2_sample);
    f.query_server_rss_mb = super::proc::kb_to_mb(q.rss_kb);
    if f.q1_points != f.q1_expected_points || f.q2_rows != 512 {
        eprintln!("warning: query (a) returned {} points (expected {}), query (b) {} GPUs (expected 512)", f.q1_points, f.q1_expected_points, f.q2_rows);
    }

    step(6, &format!("publish -> queryable latency, {} s at 50k samples/s", args.latency_seconds));
    let lat = latency::run(&work.join("latency"), settings, args.latency_seconds).await?;
    f.e2e_offered_samples_per_s = latency::BATCH_SAMPLES as f64 / latency::TICK.as_secs_f64();
    (f.e2e_batches, f.e2e_p50_ms, f.e2e_p99_ms, f.e2e_max_ms) = (lat.batches, lat.p50_ms, lat.p99_ms, lat.max_ms);

    if args.peer == Some(Peer::VictoriaMetrics) {
        step(7, "VictoriaMetrics: the same file and queries");
        let p = peer::run(&client, work, &csv, args.rows).await?;
        f.peer = Some(peer_figures(&f, &p));
    }
    report::judge(&mut f);
    Ok(f)
}

fn peer_figures(f: &Figures, p: &peer::Peer) -> PeerFigures {
    let rate = f.rows as f64 / p.ingest_s.max(1e-9);
    let bps = p.disk_bytes as f64 / f.rows as f64;
    let rss = super::proc::kb_to_mb(p.peak_rss_kb);
    PeerFigures {
        peer: "victoriametrics",
        peer_version: p.version.clone(),
        peer_ingest_samples_per_s: rate,
        ratio_vs_peer: ratio(f.ingest_samples_per_s, rate),
        peer_ingest_s: p.ingest_s,
        peer_post_s: p.post_s,
        peer_series: p.series,
        peer_samples_stored: p.samples_stored,
        peer_query_one_series_ms: p.queries.q1_median_ms,
        peer_q1_first_ms: p.queries.q1_first_ms,
        peer_q1_points: p.queries.q1_points,
        peer_query_avg_all_ms: p.queries.q2_median_ms,
        peer_q2_first_ms: p.queries.q2_first_ms,
        peer_q2_rows: p.queries.q2_rows,
        peer_q2_sample: p.queries.q2_sample.clone(),
        peer_disk_bytes: p.disk_bytes,
        peer_bytes_per_sample: bps,
        peer_peak_rss_mb: rss,
        ratio_query_one_series: ratio(p.queries.q1_median_ms, f.query_one_series_ms),
        ratio_query_avg_all: ratio(p.queries.q2_median_ms, f.query_avg_all_ms),
        ratio_bytes_per_sample: ratio(bps, f.bytes_per_sample),
        ratio_peak_rss: ratio(rss, f.peak_rss_mb),
    }
}

fn remove_dir(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// The work directory: `--dir` (new or empty, never removed) or a temporary one removed on drop
/// unless `--keep`.
struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    fn create(args: &IngestBenchArgs) -> Result<WorkDir> {
        let (path, remove) = match &args.dir {
            Some(d) => (d.clone(), false),
            None => (std::env::temp_dir().join(format!("gpufleet-bench-ingest-{}", std::process::id())), !args.keep),
        };
        if path.exists() && std::fs::read_dir(&path).with_context(|| format!("reading {}", path.display()))?.next().is_some() {
            bail!("work directory {} is not empty; pass a new or empty --dir", path.display());
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating work directory {}", path.display()))?;
        // Absolute, because the server child runs with the work directory as its cwd.
        let path = std::fs::canonicalize(&path).with_context(|| format!("resolving {}", path.display()))?;
        Ok(WorkDir { path, remove })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn kept(&self) -> bool {
        !self.remove
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: IngestBenchArgs,
    }

    #[test]
    fn flags_parse_with_defaults_and_the_peer_name() {
        let a = Cli::parse_from(["x"]).args;
        assert_eq!((a.rows, a.seed, a.latency_seconds, a.json, a.peer), (2_000_000, 42, 10, false, None));
        let a = Cli::parse_from(["x", "--peer", "victoriametrics", "--rows", "7000", "--json"]).args;
        assert_eq!(a.peer, Some(Peer::VictoriaMetrics));
        assert!(Cli::try_parse_from(["x", "--peer", "influx"]).is_err());
    }

    #[test]
    fn a_given_work_dir_must_be_empty_and_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Cli::parse_from(["x"]).args;
        a.dir = Some(dir.path().join("w"));
        let w = WorkDir::create(&a).unwrap();
        std::fs::write(w.path().join("f"), "x").unwrap();
        assert!(w.kept());
        drop(w);
        assert!(dir.path().join("w/f").exists());
        let e = WorkDir::create(&a).err().unwrap().to_string();
        assert!(e.contains("not empty"), "{e}");
    }
}
