//! The chunked file reader: plain and gzip files, chunk boundaries, line numbers, and the
//! guarantee that a chunked read decodes to exactly what a whole-file decode gives.

use flate2::write::GzEncoder;
use flate2::Compression;
use gpufleet_core::{BatchBuilder, SampleBatch};
use gpufleet_telemetry::source::{
    CsvDecoder, CsvFileReader, DecodeOptions, RowError, RowErrors, SourceError, MAX_RECORD_BYTES,
};
use proptest::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

type Points = Vec<(String, String, i64, u64)>;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn opts() -> DecodeOptions {
    DecodeOptions {
        default_host: None,
        ingest_ms: 5,
    }
}

fn points(batch: &SampleBatch) -> Points {
    batch
        .points
        .iter()
        .map(|p| {
            let k = batch.key_of(p);
            (
                k.uuid.to_string(),
                k.metric.to_string(),
                p.ts_ms,
                p.value.to_bits(),
            )
        })
        .collect()
}

/// Decodes a whole in-memory file: header on line 1.
fn decode_whole(bytes: &[u8]) -> (Points, Vec<RowError>) {
    let split = memchr::memchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1);
    let mut dec = CsvDecoder::from_header(&bytes[..split], opts()).unwrap();
    let mut out = BatchBuilder::new();
    let mut errors = RowErrors::default();
    dec.decode(&bytes[split..], 2, &mut out, &mut errors);
    (points(&out.finish()), errors.first)
}

/// Reads a file chunk by chunk, finishing the builder after each chunk.
fn decode_chunked(path: &Path, max_rows: usize) -> (Points, Vec<RowError>, u64) {
    let mut reader = CsvFileReader::open(path).unwrap();
    let mut dec = CsvDecoder::from_header(reader.header(), opts()).unwrap();
    let mut out = BatchBuilder::new();
    let mut errors = RowErrors::default();
    let mut all = Vec::new();
    let mut records = 0;
    let mut expect_line = None;
    while let Some(chunk) = reader.next_chunk(max_rows).unwrap() {
        assert!(
            chunk.rows >= 1 && chunk.rows <= max_rows as u64,
            "{} rows for max {max_rows}",
            chunk.rows
        );
        if let Some(l) = expect_line {
            assert_eq!(chunk.first_line, l, "chunks are contiguous");
        }
        expect_line =
            Some(chunk.first_line + memchr::memchr_iter(b'\n', &chunk.bytes).count() as u64);
        records += dec.decode(&chunk.bytes, chunk.first_line, &mut out, &mut errors);
        let batch = out.finish();
        batch.validate().unwrap();
        all.extend(points(&batch));
    }
    (all, errors.first, records)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn chunked_read_of_the_real_export_equals_whole_decode() {
    let path = testdata("dcgm_metrics_20250718_134233.csv");
    let bytes = std::fs::read(&path).unwrap();
    let (whole, errors) = decode_whole(&bytes);
    assert!(errors.is_empty());
    assert_eq!(whole.len(), 2470);
    for max_rows in [1, 7, 1000, 100_000] {
        let (chunked, errors, records) = decode_chunked(&path, max_rows);
        assert_eq!((records, errors.len()), (2470, 0));
        assert_eq!(chunked, whole, "max_rows {max_rows}");
    }
    let mut reader = CsvFileReader::open(&path).unwrap();
    assert!(reader.header().starts_with(b"timestamp,metric_name,"));
    assert!(!reader.header().ends_with(b"\n"));
    let first = reader.next_chunk(10).unwrap().unwrap();
    assert_eq!((first.first_line, first.rows), (2, 10));
    assert_eq!(reader.next_chunk(10).unwrap().unwrap().first_line, 12);
}

#[test]
fn gzip_is_detected_by_magic_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(testdata("dcgm_metrics_20250718_134233.csv")).unwrap();
    let (whole, _) = decode_whole(&bytes);
    let gz_named_csv = dir.path().join("export.csv");
    std::fs::write(&gz_named_csv, gzip(&bytes)).unwrap();
    let plain_named_gz = dir.path().join("export.csv.gz");
    std::fs::write(&plain_named_gz, &bytes).unwrap();
    // Two concatenated gzip members read as one stream.
    let split = bytes.len() / 3;
    let multi = dir.path().join("multi.gz");
    std::fs::write(
        &multi,
        [gzip(&bytes[..split]), gzip(&bytes[split..])].concat(),
    )
    .unwrap();
    for path in [&gz_named_csv, &plain_named_gz, &multi] {
        let (chunked, errors, _) = decode_chunked(path, 333);
        assert!(errors.is_empty());
        assert_eq!(chunked, whole, "{}", path.display());
    }
}

#[test]
fn corrupt_gzip_and_missing_file_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(testdata("dcgm_metrics_20250718_134233.csv")).unwrap();
    let mut gz = gzip(&bytes);
    let mid = gz.len() / 2;
    gz[mid..mid + 64].iter_mut().for_each(|b| *b ^= 0x55);
    let path = dir.path().join("bad.gz");
    std::fs::write(&path, &gz).unwrap();
    let result = CsvFileReader::open(&path).and_then(|mut r| {
        while r.next_chunk(500)?.is_some() {}
        Ok(())
    });
    assert!(
        matches!(result, Err(SourceError::Gzip { .. })),
        "{result:?}"
    );

    let missing = CsvFileReader::open(&dir.path().join("nope.csv"));
    assert!(
        matches!(missing, Err(SourceError::Io { .. })),
        "{missing:?}"
    );
}

#[test]
fn empty_and_header_only_files() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, b"\n\n").unwrap();
    assert!(matches!(
        CsvFileReader::open(&empty),
        Err(SourceError::BadHeader(_))
    ));
    let header_only = dir.path().join("header.csv");
    std::fs::write(
        &header_only,
        b"\xEF\xBB\xBF\ntimestamp,gpu_id,utilization.gpu\r\n\r\n",
    )
    .unwrap();
    let mut r = CsvFileReader::open(&header_only).unwrap();
    assert_eq!(r.header(), b"timestamp,gpu_id,utilization.gpu");
    assert_eq!(r.next_chunk(10).unwrap(), None);
}

#[test]
fn crlf_file_with_quoted_newlines_and_no_final_newline() {
    let dir = tempfile::tempdir().unwrap();
    let text = "gpu_id,name,utilization.gpu\r\n0,\"A\r\nB\",1\r\n\r\n1,\"C\",x\r\n2,D,3";
    let path = dir.path().join("w.csv");
    std::fs::write(&path, text).unwrap();
    let (whole, whole_errors) = decode_whole(text.as_bytes());
    let (chunked, errors, records) = decode_chunked(&path, 1);
    assert_eq!(records, 3);
    assert_eq!(chunked, whole);
    assert_eq!(errors, whole_errors);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 5);
    assert_eq!(chunked.len(), 2);
}

/// A long CSV of simple unquoted rows: `n` rows starting at line 2 (values 0..n).
fn plain_rows(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-{},M,h,,,,{i},\n",
                i % 8
            )
        })
        .collect()
}

#[test]
fn stray_quote_loses_one_line_whatever_the_file_size() {
    let dir = tempfile::tempdir().unwrap();
    let header = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n";
    for n_after in [100, MAX_RECORD_BYTES / 60] {
        let text = format!(
            "{header}{}2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,\"GPU-0,M,h,,,,1,\n{}",
            plain_rows(3),
            plain_rows(n_after)
        );
        let path = dir.path().join("stray.csv");
        std::fs::write(&path, &text).unwrap();
        let (whole, whole_errors) = decode_whole(text.as_bytes());
        let (chunked, errors, _) = decode_chunked(&path, 50_000);
        assert_eq!(errors.len(), 1, "n_after {n_after}");
        assert_eq!(errors[0].line, 5);
        assert!(errors[0].reason.contains("unterminated"));
        assert_eq!(chunked.len(), 3 + n_after);
        assert_eq!((&chunked, &errors), (&whole, &whole_errors));
        if text.len() > MAX_RECORD_BYTES {
            // The reader gave up on the open quote and handed on its line alone, last in a chunk.
            let mut r = CsvFileReader::open(&path).unwrap();
            let mut ends = Vec::new();
            while let Some(c) = r.next_chunk(50_000).unwrap() {
                ends.push((
                    c.first_line,
                    c.rows,
                    c.bytes.ends_with(b"\"GPU-0,M,h,,,,1,\n"),
                ));
            }
            assert_eq!(ends[0], (2, 4, true));
        }
    }
}

#[test]
fn a_line_longer_than_the_limit_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.csv");
    let mut text = String::from("gpu_id,utilization.gpu\n0,1\n");
    text.push_str(&"9".repeat(MAX_RECORD_BYTES + (2 << 20)));
    std::fs::write(&path, &text).unwrap();
    let mut r = CsvFileReader::open(&path).unwrap();
    let first = r.next_chunk(1).unwrap().unwrap();
    assert_eq!(first.bytes, b"0,1\n");
    match r.next_chunk(10) {
        Err(SourceError::LineTooLong { line, .. }) => assert_eq!(line, 3),
        other => panic!("expected LineTooLong, got {other:?}"),
    }
}

/// Record templates for the property test: good, bad, quoted, multi-line, blank.
fn record(kind: u8, i: usize) -> String {
    let ts = "2025-07-18T20:42:34Z";
    match kind % 8 {
        0 => format!("{ts},DCGM_FI_DEV_GPU_UTIL,{g},nvidia{g},GPU-{g},M,h,,,,{i},\n", g = i % 5),
        1 => format!("\"{ts}\",\"DCGM_FI_DEV_GPU_TEMP\",\"1\",\"nvidia1\",\"GPU-1\",\"M\",\"h\",\"\",\"p\",\"\",\"{i}\",\"job=\"\"x\"\"\"\r\n"),
        2 => format!("{ts},DCGM_FI_DEV_FB_USED,2,nvidia2,GPU-2,\"multi\nline, \"\"model\"\"\",h,,,,{i},\n"),
        3 => "\n".to_string(),
        4 => format!("{ts},DCGM_FI_DEV_GPU_UTIL,3,nvidia3,GPU-3,M,h,,,,not-a-number-{i},\n"),
        5 => format!("{ts},DCGM_FI_DEV_GPU_UTIL,3\n"),
        6 => format!("{ts},DCGM_FI_DEV_GPU_UTIL,4,nvidia4,GPU-4,M,h,,,,{i},\"bad labels\"\n"),
        _ => format!(",DCGM_FI_DEV_POWER_USAGE,0,nvidia0,GPU-0,M,h,,,,{i}.5,\r\n"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn chunked_equals_whole_for_any_mix(kinds in proptest::collection::vec(any::<u8>(), 0..200), max_rows in 1usize..40) {
        let mut text = String::from("timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n");
        for (i, k) in kinds.iter().enumerate() {
            text.push_str(&record(*k, i));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mix.csv");
        std::fs::write(&path, &text).unwrap();
        let (whole, whole_errors) = decode_whole(text.as_bytes());
        let (chunked, errors, records) = decode_chunked(&path, max_rows);
        let expected_records = kinds.iter().filter(|k| *k % 8 != 3).count() as u64;
        prop_assert_eq!(records, expected_records);
        prop_assert_eq!(chunked, whole);
        prop_assert_eq!(errors, whole_errors);
    }
}
