//! The figures of one run, the targets of the issue, and the two ways of printing them: a table
//! for people and one JSON object for machines. Every ratio reads "> 1 means we are better":
//! ours/theirs for rates, theirs/ours for times, bytes and memory.

use super::e2e::AvgRow;
use serde::Serialize;
use std::collections::BTreeMap;

/// Everything a run measured. The first nine fields are the issue's keys; the rest are extras.
#[derive(Debug, Default, Serialize)]
pub(super) struct Figures {
    pub(super) parse_rows_per_s: f64,
    pub(super) broker_msgs_per_s: f64,
    pub(super) ingest_samples_per_s: f64,
    pub(super) e2e_p50_ms: f64,
    pub(super) e2e_p99_ms: f64,
    pub(super) bytes_per_sample: f64,
    pub(super) query_one_series_ms: f64,
    pub(super) query_avg_all_ms: f64,
    /// Server `VmHWM` when the last sample became queryable, decimal MB.
    pub(super) peak_rss_mb: f64,
    pub(super) rows: u64,
    pub(super) seed: u64,
    pub(super) csv_bytes: u64,
    pub(super) gen_s: f64,
    pub(super) parse_s: f64,
    /// Reader and decoder on the same thread.
    pub(super) parse_1thread_rows_per_s: f64,
    pub(super) broker_messages: u64,
    pub(super) broker_mb_per_s: f64,
    pub(super) stream_workers: usize,
    pub(super) stream_batch: usize,
    /// Streamer start until every chunk was acknowledged (durable in the broker).
    pub(super) stream_s: f64,
    /// Streamer start until the store held every sample.
    pub(super) ingest_s: f64,
    pub(super) e2e_offered_samples_per_s: f64,
    pub(super) e2e_batches: u64,
    pub(super) e2e_max_ms: f64,
    /// `du -sb` of the store directory after a graceful shutdown.
    pub(super) store_bytes: u64,
    /// `du -sb` of the server's broker directory at the same moment (not part of bytes_per_sample).
    pub(super) broker_bytes_after: u64,
    pub(super) shutdown_s: f64,
    /// Server `VmHWM` at the end of its graceful shutdown (head compression included), decimal MB.
    pub(super) peak_rss_incl_shutdown_mb: f64,
    pub(super) q1_first_ms: f64,
    pub(super) q1_points: u64,
    pub(super) q1_expected_points: u64,
    pub(super) q2_first_ms: f64,
    pub(super) q2_rows: u64,
    pub(super) q2_sample: Vec<AvgRow>,
    /// `VmHWM` of the restarted server after the queries, decimal MB.
    pub(super) query_server_rss_mb: f64,
    /// Per target: met (true/false) or not decidable without a peer (null).
    pub(super) targets_met: BTreeMap<&'static str, Option<bool>>,
    #[serde(flatten)]
    pub(super) peer: Option<PeerFigures>,
}

/// The peer's figures and the ratios (each > 1 when we are better).
#[derive(Debug, Default, Serialize)]
pub(super) struct PeerFigures {
    pub(super) peer: &'static str,
    pub(super) peer_version: String,
    pub(super) peer_ingest_samples_per_s: f64,
    /// Ingest rate, ours / theirs.
    pub(super) ratio_vs_peer: f64,
    pub(super) peer_ingest_s: f64,
    pub(super) peer_post_s: f64,
    pub(super) peer_series: u64,
    pub(super) peer_samples_stored: u64,
    pub(super) peer_query_one_series_ms: f64,
    pub(super) peer_q1_first_ms: f64,
    pub(super) peer_q1_points: u64,
    pub(super) peer_query_avg_all_ms: f64,
    pub(super) peer_q2_first_ms: f64,
    pub(super) peer_q2_rows: u64,
    pub(super) peer_q2_sample: Vec<AvgRow>,
    pub(super) peer_disk_bytes: u64,
    pub(super) peer_bytes_per_sample: f64,
    pub(super) peer_peak_rss_mb: f64,
    /// Query (a) median, theirs / ours.
    pub(super) ratio_query_one_series: f64,
    /// Query (b) median, theirs / ours.
    pub(super) ratio_query_avg_all: f64,
    /// Bytes per sample, theirs / ours.
    pub(super) ratio_bytes_per_sample: f64,
    /// Peak RSS, theirs / ours.
    pub(super) ratio_peak_rss: f64,
}

/// `a / b`, or 0 when `b` is 0.
pub(super) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// One line of the table.
struct Line {
    key: &'static str,
    figure: &'static str,
    ours: String,
    theirs: String,
    ratio: String,
    target: &'static str,
    met: Option<bool>,
}

fn lines(f: &Figures) -> Vec<Line> {
    let p = f.peer.as_ref();
    let theirs = |g: &dyn Fn(&PeerFigures) -> String| p.map_or_else(|| "-".to_owned(), g);
    let rat = |g: &dyn Fn(&PeerFigures) -> f64| p.map_or_else(|| "-".to_owned(), |p| format!("{:.2}x", g(p)));
    vec![
        Line {
            key: "parse",
            figure: "CSV parse, best of 3 (reader + decoder threads)",
            ours: format!("{} rows/s ({} on 1 thread)", si(f.parse_rows_per_s), si(f.parse_1thread_rows_per_s)),
            theirs: "-".into(),
            ratio: "-".into(),
            target: ">= 2M rows/s",
            met: Some(f.parse_rows_per_s >= 2e6),
        },
        Line {
            key: "broker",
            figure: "broker publish+consume+ack",
            ours: format!("{} msgs/s ({:.0} MB/s)", si(f.broker_msgs_per_s), f.broker_mb_per_s),
            theirs: "-".into(),
            ratio: "-".into(),
            target: "(none)",
            met: None,
        },
        Line {
            key: "ingest",
            figure: "durable ingest, file -> queryable",
            ours: format!("{} samples/s", si(f.ingest_samples_per_s)),
            theirs: theirs(&|p| format!("{} samples/s", si(p.peer_ingest_samples_per_s))),
            ratio: rat(&|p| p.ratio_vs_peer),
            target: ">= 1M/s and >= 2x peer",
            met: Some(f.ingest_samples_per_s >= 1e6 && p.is_none_or(|p| p.ratio_vs_peer >= 2.0)),
        },
        Line {
            key: "e2e_p99",
            figure: "publish -> queryable p50 / p99",
            ours: format!("{:.1} / {:.1} ms", f.e2e_p50_ms, f.e2e_p99_ms),
            theirs: "-".into(),
            ratio: "-".into(),
            target: "p99 <= 100 ms",
            met: Some(f.e2e_p99_ms <= 100.0),
        },
        Line {
            key: "bytes_per_sample",
            figure: "bytes on disk per sample",
            ours: format!("{:.3} B", f.bytes_per_sample),
            theirs: theirs(&|p| format!("{:.3} B", p.peer_bytes_per_sample)),
            ratio: rat(&|p| p.ratio_bytes_per_sample),
            target: "<= 1.0 B",
            met: Some(f.bytes_per_sample <= 1.0),
        },
        Line {
            key: "query_one_series",
            figure: "query (a) one series, median",
            ours: format!("{:.2} ms", f.query_one_series_ms),
            theirs: theirs(&|p| format!("{:.2} ms", p.peer_query_one_series_ms)),
            ratio: rat(&|p| p.ratio_query_one_series),
            target: "<= peer",
            met: p.map(|p| p.ratio_query_one_series >= 1.0),
        },
        Line {
            key: "query_avg_all",
            figure: "query (b) avg of all GPUs, median",
            ours: format!("{:.2} ms", f.query_avg_all_ms),
            theirs: theirs(&|p| format!("{:.2} ms", p.peer_query_avg_all_ms)),
            ratio: rat(&|p| p.ratio_query_avg_all),
            target: "<= peer",
            met: p.map(|p| p.ratio_query_avg_all >= 1.0),
        },
        Line {
            key: "peak_rss",
            figure: "server peak RSS (VmHWM)",
            ours: format!("{:.1} MB", f.peak_rss_mb),
            theirs: theirs(&|p| format!("{:.1} MB", p.peer_peak_rss_mb)),
            ratio: rat(&|p| p.ratio_peak_rss),
            target: "<= 150 MB",
            met: Some(f.peak_rss_mb <= 150.0),
        },
    ]
}

/// Fills `targets_met` from the figures.
pub(super) fn judge(f: &mut Figures) {
    f.targets_met = lines(f).into_iter().filter(|l| l.key != "broker").map(|l| (l.key, l.met)).collect();
}

/// Prints the table and the cross-check lines.
pub(super) fn print_human(f: &Figures) {
    println!(
        "gpufleet bench ingest: {} rows (seed {}), 64 hosts x 8 GPUs x 12 metrics; CSV {:.0} MB generated in {:.1} s",
        f.rows,
        f.seed,
        f.csv_bytes as f64 / 1e6,
        f.gen_s
    );
    let peer = f.peer.as_ref().map_or("peer", |_| "VictoriaMetrics");
    let mut rows = vec![["figure".to_owned(), "ours".into(), peer.into(), "ratio (>1: ours better)".into(), "target".into(), "met?".into()]];
    for l in lines(f) {
        let met = match l.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        rows.push([l.figure.into(), l.ours, l.theirs, l.ratio, l.target.into(), met.into()]);
    }
    let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
        if i == 0 {
            println!("{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        }
    }
    println!();
    println!(
        "ingest: streamer ({} workers x {} rows) acked all rows after {:.2} s, store held all {} samples after {:.2} s; graceful shutdown {:.2} s",
        f.stream_workers, f.stream_batch, f.stream_s, f.rows, f.ingest_s, f.shutdown_s
    );
    println!(
        "disk: store {} bytes ({:.3} B/sample); broker log left {} bytes; RSS incl. shutdown {:.1} MB, query server {:.1} MB",
        f.store_bytes, f.bytes_per_sample, f.broker_bytes_after, f.peak_rss_incl_shutdown_mb, f.query_server_rss_mb
    );
    println!(
        "latency: {} batches of 500 at {} samples/s offered; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        f.e2e_batches, f.e2e_offered_samples_per_s, f.e2e_p50_ms, f.e2e_p99_ms, f.e2e_max_ms
    );
    println!(
        "queries (first / median of next 4): (a) {:.2} / {:.2} ms, {} points (expected {}); (b) {:.2} / {:.2} ms, {} GPUs",
        f.q1_first_ms, f.query_one_series_ms, f.q1_points, f.q1_expected_points, f.q2_first_ms, f.query_avg_all_ms, f.q2_rows
    );
    println!("ours: q2 first two GPUs (host, gpu, avg util) = {:?}", f.q2_sample);
    if let Some(p) = &f.peer {
        println!(
            "VictoriaMetrics {}: import {:.2} s + force_flush = {:.2} s, {} series, {} samples; (a) {:.2} / {:.2} ms, {} points; (b) {:.2} / {:.2} ms, {} GPUs; disk {} bytes",
            p.peer_version,
            p.peer_post_s,
            p.peer_ingest_s,
            p.peer_series,
            p.peer_samples_stored,
            p.peer_q1_first_ms,
            p.peer_query_one_series_ms,
            p.peer_q1_points,
            p.peer_q2_first_ms,
            p.peer_query_avg_all_ms,
            p.peer_q2_rows,
            p.peer_disk_bytes
        );
        println!("VictoriaMetrics: q2 first two GPUs (host, gpu, avg util) = {:?}", p.peer_q2_sample);
    }
}

/// A rate with a k/M suffix.
fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_issue_keys_and_peer_keys_only_with_a_peer() {
        let mut f = Figures { parse_rows_per_s: 3e6, peak_rss_mb: 200.0, ..Default::default() };
        judge(&mut f);
        let v = serde_json::to_value(&f).unwrap();
        for k in [
            "parse_rows_per_s",
            "broker_msgs_per_s",
            "ingest_samples_per_s",
            "e2e_p50_ms",
            "e2e_p99_ms",
            "bytes_per_sample",
            "query_one_series_ms",
            "query_avg_all_ms",
            "peak_rss_mb",
        ] {
            assert!(v[k].is_number(), "{k} missing");
        }
        assert!(v.get("ratio_vs_peer").is_none());
        assert_eq!(v["targets_met"]["parse"], true);
        assert_eq!(v["targets_met"]["peak_rss"], false);
        assert!(v["targets_met"]["query_avg_all"].is_null(), "undecidable without a peer");

        f.peer = Some(PeerFigures { peer_ingest_samples_per_s: 5e5, ratio_vs_peer: 2.5, ratio_query_avg_all: 0.5, ..Default::default() });
        f.ingest_samples_per_s = 1.25e6;
        judge(&mut f);
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["ratio_vs_peer"], 2.5);
        assert!(v["peer_ingest_samples_per_s"].is_number());
        assert_eq!(v["targets_met"]["ingest"], true);
        assert_eq!(v["targets_met"]["query_avg_all"], false);
    }

    #[test]
    fn ratio_of_zero_is_zero_and_si_suffixes() {
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert_eq!(si(2_410_000.0), "2.41M");
        assert_eq!(si(412_300.0), "412k");
    }
}
