//! DCGM long CSV decode throughput on the synthetic file (harness-less: `cargo bench -p
//! gpufleet-telemetry --bench parse`). Rows from `BENCH_ROWS` (default 2,000,000), seed 42.
//! Prints rows/s and MB/s for: one decode call over the whole body, decode in 64k-row pieces with
//! the builder finished after each (what a collector does), and the file reader + decoder on a
//! plain and a gzip temp file.

use gpufleet_core::BatchBuilder;
use gpufleet_telemetry::source::{CsvDecoder, CsvFileReader, DecodeOptions, RowErrors};
use gpufleet_telemetry::synth::write_dcgm_csv;
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

const RUNS: usize = 3;
const PIECE_ROWS: usize = 65_536;

fn report(what: &str, rows: u64, bytes: usize, times: &mut [Duration]) {
    times.sort();
    let best = times[0].as_secs_f64();
    let median = times[times.len() / 2].as_secs_f64();
    println!(
        "{what:<34} {rows:>9} rows {:>8.1} MB  best {:>6.3} s = {:>10.0} rows/s {:>7.1} MB/s   median {:>10.0} rows/s",
        bytes as f64 / 1e6,
        best,
        rows as f64 / best,
        bytes as f64 / 1e6 / best,
        rows as f64 / median,
    );
}

fn decoder(header: &[u8]) -> CsvDecoder {
    CsvDecoder::from_header(
        header,
        DecodeOptions {
            default_host: None,
            ingest_ms: 0,
        },
    )
    .expect("synthetic header is valid")
}

fn main() {
    let rows: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let t = Instant::now();
    let mut csv = Vec::with_capacity(rows as usize * 420);
    write_dcgm_csv(&mut csv, rows, 42).expect("writing to a Vec cannot fail");
    println!(
        "generated {rows} rows, {:.1} MB ({:.0} B/row) in {:.2} s",
        csv.len() as f64 / 1e6,
        csv.len() as f64 / rows as f64,
        t.elapsed().as_secs_f64()
    );
    let split = memchr::memchr(b'\n', &csv).expect("header line") + 1;
    let (header, body) = csv.split_at(split);

    let mut times = Vec::new();
    for _ in 0..RUNS {
        let mut dec = decoder(header);
        let mut out = BatchBuilder::new();
        let mut errors = RowErrors::default();
        let t = Instant::now();
        let n = dec.decode(body, 2, &mut out, &mut errors);
        times.push(t.elapsed());
        assert_eq!((n, errors.count, out.len() as u64), (rows, 0, rows));
        black_box(out.finish());
    }
    report("decode, one call", rows, body.len(), &mut times);

    // Pieces of PIECE_ROWS complete lines (the synthetic file has no quoted newlines).
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < body.len() {
        let mut end = start;
        for _ in 0..PIECE_ROWS {
            match memchr::memchr(b'\n', &body[end..]) {
                Some(i) => end += i + 1,
                None => {
                    end = body.len();
                    break;
                }
            }
        }
        pieces.push(&body[start..end]);
        start = end;
    }
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let mut dec = decoder(header);
        let mut out = BatchBuilder::new();
        let mut errors = RowErrors::default();
        let mut total = 0;
        let t = Instant::now();
        for p in &pieces {
            total += dec.decode(p, 0, &mut out, &mut errors);
            black_box(out.finish());
        }
        times.push(t.elapsed());
        assert_eq!(total, rows);
    }
    report(
        "decode, 64k-row pieces + finish",
        rows,
        body.len(),
        &mut times,
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let plain = dir.path().join("bench.csv");
    std::fs::write(&plain, &csv).expect("write temp file");
    let gz_rows = rows.min(200_000);
    let gz = dir.path().join("bench.csv.gz");
    {
        let f = std::fs::File::create(&gz).expect("create temp file");
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        write_dcgm_csv(&mut enc, gz_rows, 42).expect("write gzip");
        enc.finish().expect("finish gzip").flush().expect("flush");
    }
    for (what, path, n_rows) in [
        ("file reader + decode, plain", &plain, rows),
        ("file reader + decode, gzip", &gz, gz_rows),
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            let mut reader = CsvFileReader::open(path).expect("open temp file");
            let mut dec = decoder(reader.header());
            let mut out = BatchBuilder::new();
            let mut errors = RowErrors::default();
            let mut total = 0;
            bytes = reader.header().len() + 1;
            while let Some(chunk) = reader.next_chunk(PIECE_ROWS).expect("read chunk") {
                total += dec.decode(&chunk.bytes, chunk.first_line, &mut out, &mut errors);
                bytes += chunk.bytes.len();
                black_box(out.finish());
            }
            times.push(t.elapsed());
            assert_eq!((total, errors.count), (n_rows, 0));
        }
        report(what, n_rows, bytes, &mut times);
    }
}
