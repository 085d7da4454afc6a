//! System test: `gpufleet up` as a real process, a replay through `gpufleet stream`, SIGKILL of the
//! server mid-replay, restart, and the stored count must equal the distinct samples in the file.
//! Ends with SIGTERM, which must exit 0 after a graceful drain.

mod common;

use common::*;
use gpufleet_core::BatchBuilder;
use gpufleet_telemetry::source::{CsvFileReader, CsvDecoder, DecodeOptions, RowErrors};
use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

fn distinct_samples(path: &std::path::Path) -> usize {
    let mut reader = CsvFileReader::open(path).unwrap();
    let mut dec = CsvDecoder::from_header(reader.header(), DecodeOptions { default_host: None, ingest_ms: 0 }).unwrap();
    let mut seen = HashSet::new();
    while let Some(chunk) = reader.next_chunk(10_000).unwrap() {
        let mut b = BatchBuilder::new();
        let mut errors = RowErrors::default();
        dec.decode(&chunk.bytes, chunk.first_line, &mut b, &mut errors);
        assert_eq!(errors.count, 0);
        let batch = b.finish();
        for p in &batch.points {
            let k = batch.key_of(p);
            seen.insert((k.host, k.uuid, k.metric, p.ts_ms));
        }
    }
    seen.len()
}

#[test]
fn sigkill_mid_replay_then_restart_stores_every_sample_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("replay.csv");
    let rows = 36_000u64;
    gpufleet_telemetry::synth::write_dcgm_csv(std::fs::File::create(&csv).unwrap(), rows, 7).unwrap();
    // Append a copy of the first 2,000 data rows: duplicates inside the file must be stored once too.
    let text = std::fs::read_to_string(&csv).unwrap();
    let dup: String = text.lines().skip(1).take(2000).map(|l| format!("{l}\n")).collect();
    std::fs::write(&csv, format!("{text}{dup}")).unwrap();
    let expected = distinct_samples(&csv);
    assert_eq!(expected, rows as usize);

    let data = dir.path().join("data");
    let port = free_port();
    let server = ServerProc::start(&data, port);
    let streamer = client(&server.url)
        .args(["stream", "--rate", "9000", "--batch", "1000", "--workers", "2", "--json"])
        .arg(&csv)
        .env("GPUFLEET_LOG_LEVEL", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    // Kill the server once part of the replay has been acknowledged.
    let url = server.url.clone();
    wait_until(Duration::from_secs(60), "first acknowledged rows", || {
        get(&format!("{url}/stats")).and_then(|v| v.pointer("/ingest/samples_published")?.as_u64()).is_some_and(|n| n >= 8_000)
    });
    server.kill9();
    // The streamer keeps retrying while the server is down; bring it back on the same port.
    std::thread::sleep(Duration::from_millis(500)); // let the streamer see the outage (not used for sync)
    let server = ServerProc::start(&data, port);

    let out = streamer.wait_with_output().unwrap();
    assert!(out.status.success(), "streamer failed: {}", String::from_utf8_lossy(&out.stdout));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rows"], rows + 2000);
    assert_eq!(summary["rejected"], 0);
    assert!(summary["retries"].as_u64().unwrap() >= 1, "the outage must have been seen: {summary}");

    // Everything acknowledged gets stored, once.
    let mut stored = 0;
    wait_until(Duration::from_secs(60), "all samples stored and broker drained", || {
        let Some(v) = get(&format!("{}/stats", server.url)) else { return false };
        stored = v.pointer("/store/samples").and_then(|x| x.as_u64()).unwrap_or(0);
        let drained = v["broker"].as_array().is_some_and(|ts| {
            ts.iter().flat_map(|t| t["groups"].as_array().cloned().unwrap_or_default()).all(|g| g["lag"] == 0 && g["in_flight"] == 0)
        });
        drained && stored >= expected as u64
    });
    assert_eq!(stored, expected as u64);
    // The query path agrees: per-series counts sum to the distinct samples of each metric.
    let agg = get(&format!("{}/api/v1/telemetry/aggregate?metric=DCGM_FI_DEV_GPU_UTIL&agg=count", server.url)).unwrap();
    let counted: u64 = agg["series"].as_array().unwrap().iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, rows / 12);

    let status = server.terminate();
    assert!(status.success(), "graceful shutdown must exit 0, got {status}");
}
