//! DCGM long CSV decoding: the real export, the hand-made sample, malformed rows, quoting,
//! line endings, timestamps and the decoder's caches.

use gpufleet_core::time::parse_timestamp;
use gpufleet_core::{BatchBuilder, SampleBatch};
use gpufleet_telemetry::source::{CsvDecoder, CsvShape, DecodeOptions, RowErrors, SourceError};
use std::collections::BTreeSet;
use std::path::Path;

const HEADER: &str = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw";

fn testdata(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn opts() -> DecodeOptions {
    DecodeOptions {
        default_host: None,
        ingest_ms: 1_000,
    }
}

/// Decodes a whole file (header on line 1).
fn decode_file(bytes: &[u8], opts: DecodeOptions) -> (SampleBatch, u64, RowErrors) {
    let split = memchr::memchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1);
    let mut dec = CsvDecoder::from_header(&bytes[..split], opts).unwrap();
    assert_eq!(dec.shape(), CsvShape::DcgmLong);
    let mut out = BatchBuilder::new();
    let mut errors = RowErrors::default();
    let n = dec.decode(&bytes[split..], 2, &mut out, &mut errors);
    let batch = out.finish();
    batch.validate().unwrap();
    (batch, n, errors)
}

fn row(ts: &str, metric: &str, gpu: &str, value: &str, labels: &str) -> String {
    format!(
        "\"{ts}\",\"{metric}\",\"{gpu}\",\"nvidia{gpu}\",\"GPU-{gpu}\",\"NVIDIA H100 80GB HBM3\",\"h1\",\"\",\"\",\"\",\"{value}\",\"{labels}\"\n"
    )
}

#[test]
fn real_export_gives_2470_points_247_gpus_10_metrics() {
    let (batch, n, errors) = decode_file(&testdata("dcgm_metrics_20250718_134233.csv"), opts());
    assert_eq!(errors.count, 0, "{:?}", errors.first);
    assert_eq!(n, 2470);
    assert_eq!(batch.points.len(), 2470);
    assert_eq!(batch.gpus.len(), 247);
    assert_eq!(batch.metrics.len(), 10);
    let hosts: BTreeSet<&str> = batch.gpus.iter().map(|g| g.host.as_str()).collect();
    assert_eq!(hosts.len(), 31);
    let stamps: BTreeSet<i64> = batch.points.iter().map(|p| p.ts_ms).collect();
    assert_eq!(stamps.len(), 4);
    assert_eq!(
        stamps.first(),
        Some(&parse_timestamp(b"2025-07-18T20:42:34Z").unwrap())
    );

    let first = &batch.points[0];
    let g = &batch.gpus[first.gpu as usize];
    assert_eq!(
        batch.metrics[first.metric as usize].as_str(),
        "DCGM_FI_DEV_GPU_UTIL"
    );
    assert_eq!(g.uuid.as_str(), "GPU-5fd4f087-86f3-7a43-b711-4771313afc50");
    assert_eq!(g.host.as_str(), "mtv5-dgx1-hgpu-031");
    assert_eq!(
        (g.index, g.device.as_str(), g.model.as_str()),
        (Some(0), "nvidia0", "NVIDIA H100 80GB HBM3")
    );
    let keys: Vec<&str> = g.labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["DCGM_FI_DRIVER_VERSION", "instance", "job"]);
    assert_eq!(g.labels[0].1, "535.129.03");
    assert_eq!(g.labels[1].1, "mtv5-dgx1-hgpu-031:9400");

    let power: Vec<f64> = batch
        .points
        .iter()
        .filter(|p| batch.metrics[p.metric as usize].as_str() == "DCGM_FI_DEV_POWER_USAGE")
        .map(|p| p.value)
        .collect();
    assert_eq!(power.len(), 247);
    let (lo, hi) = power
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert_eq!((lo, hi), (66.781, 689.457));
}

#[test]
fn sample_file_keeps_pod_labels_from_columns() {
    let (batch, n, errors) = decode_file(&testdata("sample_dcgm_long.csv"), opts());
    assert_eq!((n, errors.count, batch.points.len()), (5, 0, 5));
    let with_pod = batch
        .gpus
        .iter()
        .find(|g| g.labels.iter().any(|(k, _)| k == "pod"))
        .expect("a GPU with pod labels");
    let labels: Vec<(&str, &str)> = with_pod
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("DCGM_FI_DRIVER_VERSION", "550.54.15"),
            ("container", "trainer"),
            ("instance", "lab-gpu-01:9400"),
            ("job", "dcgm"),
            ("namespace", "research"),
            ("pod", "job-42")
        ]
    );
}

#[test]
fn malformed_rows_are_reported_with_their_line_and_the_rest_flows_on() {
    let mut body = String::from(HEADER);
    body.push('\n');
    body += &row(
        "2025-07-18T20:42:34Z",
        "DCGM_FI_DEV_GPU_UTIL",
        "0",
        "10",
        "",
    ); // line 2
    body += "\"2025-07-18T20:42:34Z\",\"DCGM_FI_DEV_GPU_UTIL\",\"0\"\n"; // line 3: missing fields
    body += &row(
        "2025-07-18T20:42:34Z",
        "DCGM_FI_DEV_GPU_UTIL",
        "1",
        "abc",
        "",
    ); // line 4
    body += &row("2025-13-18T20:42:34Z", "DCGM_FI_DEV_GPU_UTIL", "2", "5", ""); // line 5
    body += &row(
        "2025-07-18T20:42:34Z",
        "DCGM_FI_DEV_GPU_UTIL",
        "3",
        "5",
        "job=dcgm",
    ); // line 6
    body += &row(
        "2025-07-18T20:42:34Z",
        "DCGM_FI_DEV_GPU_UTIL",
        "x7",
        "5",
        "",
    ); // line 7
    body += &row("2025-07-18T20:42:34Z", "", "4", "5", ""); // line 8
    body += &row("2025-07-18T20:42:34Z", "GPU UTIL", "4", "5", ""); // line 9
    body += &row(
        "2025-07-18T20:42:35Z",
        "DCGM_FI_DEV_GPU_TEMP",
        "0",
        "61",
        "job=\"\"dcgm\"\"",
    ); // line 10
    let (batch, n, errors) = decode_file(body.as_bytes(), opts());
    assert_eq!(n, 9);
    assert_eq!(batch.points.len(), 2);
    assert_eq!(errors.count, 7);
    let lines: Vec<u64> = errors.first.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9]);
    let reasons: Vec<&str> = errors.first.iter().map(|e| e.reason.as_str()).collect();
    assert!(
        reasons[0].contains("expected 12 fields") && reasons[0].contains("found 3"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("value \"abc\" is not a number"),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains("bad timestamp") && reasons[2].contains("field out of range"),
        "{}",
        reasons[2]
    );
    assert!(
        reasons[3].contains("labels_raw is malformed"),
        "{}",
        reasons[3]
    );
    assert!(reasons[4].contains("gpu_id \"x7\""), "{}", reasons[4]);
    assert!(
        reasons[5].contains("metric_name is empty"),
        "{}",
        reasons[5]
    );
    assert!(
        reasons[6].contains("not a valid metric name"),
        "{}",
        reasons[6]
    );
    assert_eq!(batch.points[1].value, 61.0);
    assert_eq!(
        batch.gpus[batch.points[1].gpu as usize].labels,
        vec![("job".to_string(), "dcgm".to_string())]
    );
}

#[test]
fn quoted_commas_escapes_and_newlines_keep_line_numbers_right() {
    let body = format!(
        "{HEADER}\n\
         2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-0,\"NVIDIA, \"\"special\"\"\nedition\",h1,,,,7,\"a=\"\"x,y\"\"\"\n\
         2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,1,nvidia1,GPU-1,M,h1,,,,oops,\n\
         2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,2,nvidia2,GPU-2,M,h1,,,,9,\n"
    );
    let (batch, n, errors) = decode_file(body.as_bytes(), opts());
    assert_eq!(n, 3);
    assert_eq!(errors.first.len(), 1);
    assert_eq!(
        errors.first[0].line, 4,
        "the quoted newline makes the record span lines 2-3"
    );
    let g = &batch.gpus[batch.points[0].gpu as usize];
    assert_eq!(g.model, "NVIDIA, \"special\"\nedition");
    assert_eq!(g.labels, vec![("a".to_string(), "x,y".to_string())]);
    assert_eq!(batch.points[1].value, 9.0);
}

#[test]
fn crlf_file_decodes_like_lf() {
    let lf = testdata("sample_dcgm_long.csv");
    let crlf = String::from_utf8(lf.clone()).unwrap().replace('\n', "\r\n");
    let (a, _, ea) = decode_file(&lf, opts());
    let (b, _, eb) = decode_file(crlf.as_bytes(), opts());
    assert_eq!((ea.count, eb.count), (0, 0));
    assert_eq!(a, b);
}

#[test]
fn rows_without_timestamp_get_ingest_ms() {
    let body = format!("{HEADER}\n,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-0,M,h1,,,,7,\n");
    let (batch, _, errors) = decode_file(
        body.as_bytes(),
        DecodeOptions {
            default_host: None,
            ingest_ms: 42_000,
        },
    );
    assert_eq!(errors.count, 0);
    assert_eq!(batch.points[0].ts_ms, 42_000);

    let mut dec = CsvDecoder::from_header(b"metric_name,uuid,value\r\n", opts()).unwrap();
    let mut out = BatchBuilder::new();
    let mut errors = RowErrors::default();
    dec.decode(b"DCGM_FI_DEV_GPU_TEMP,GPU-9,55\n", 2, &mut out, &mut errors);
    let batch = out.finish();
    assert_eq!(
        (batch.points[0].ts_ms, batch.points[0].value),
        (1_000, 55.0)
    );
    assert_eq!(batch.gpus[0].host.as_str(), "localhost");
}

#[test]
fn blank_lines_are_ignored_but_counted_as_lines() {
    let body = format!(
        "{HEADER}\n\n{}\r\n\n{}",
        row("2025-07-18T20:42:34Z", "DCGM_FI_DEV_GPU_UTIL", "0", "1", "").trim_end(),
        row(
            "2025-07-18T20:42:34Z",
            "DCGM_FI_DEV_GPU_UTIL",
            "1",
            "bad",
            ""
        )
    );
    let (batch, n, errors) = decode_file(body.as_bytes(), opts());
    assert_eq!((n, batch.points.len()), (2, 1));
    assert_eq!(errors.first[0].line, 5);
}

#[test]
fn missing_host_and_uuid_are_filled_in() {
    let body = format!("{HEADER}\n2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,3,nvidia3,,M,,,,,7,\n");
    let (batch, _, errors) = decode_file(
        body.as_bytes(),
        DecodeOptions {
            default_host: Some("node-a".into()),
            ingest_ms: 0,
        },
    );
    assert_eq!(errors.count, 0);
    assert_eq!(batch.gpus[0].host.as_str(), "node-a");
    assert_eq!(batch.gpus[0].uuid.as_str(), "node-a:3");
}

#[test]
fn unterminated_quote_rejects_one_line_and_decoding_resumes() {
    let body = format!(
        "{HEADER}\n2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-0,\"M,h1,,,,7,\n\
         2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,1,nvidia1,GPU-1,M,h1,,,,8,\n"
    );
    let (batch, n, errors) = decode_file(body.as_bytes(), opts());
    assert_eq!(n, 2);
    assert_eq!(errors.first[0].line, 2);
    assert!(errors.first[0].reason.contains("unterminated quoted field"));
    assert_eq!(batch.points.len(), 1);
    assert_eq!(batch.points[0].value, 8.0);
}

#[test]
fn text_after_a_closing_quote_is_a_row_error() {
    let body = format!(
        "{HEADER}\n2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,\"GPU-0\"x,M,h1,,,,7,\n"
    );
    let (_, _, errors) = decode_file(body.as_bytes(), opts());
    assert!(
        errors.first[0].reason.contains("column \"uuid\""),
        "{}",
        errors.first[0].reason
    );
}

#[test]
fn header_detection() {
    for h in [
        format!("{HEADER}\n"),
        format!("{HEADER}\r\n"),
        HEADER.to_string(),
        format!("\u{feff}{HEADER}\n"),
    ] {
        assert_eq!(
            CsvDecoder::from_header(h.as_bytes(), opts())
                .unwrap()
                .shape(),
            CsvShape::DcgmLong
        );
    }
    let quoted = HEADER
        .split(',')
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        CsvDecoder::from_header(quoted.as_bytes(), opts())
            .unwrap()
            .shape(),
        CsvShape::DcgmLong
    );
    for bad in ["", "\r\n", "timestamp,metric_name,gpu_id", "\"unterminated"] {
        match CsvDecoder::from_header(bad.as_bytes(), opts()) {
            Err(SourceError::BadHeader(msg)) => assert!(!msg.is_empty()),
            other => panic!("{bad:?}: expected BadHeader, got {other:?}"),
        }
    }
}

#[test]
fn caches_follow_the_builder_across_finish() {
    let bytes = testdata("dcgm_metrics_20250718_134233.csv");
    let split = memchr::memchr(b'\n', &bytes).unwrap() + 1;
    let body = &bytes[split..];
    let mid = memchr::memchr(b'\n', &body[body.len() / 2..]).unwrap() + body.len() / 2 + 1;
    let mut dec = CsvDecoder::from_header(&bytes[..split], opts()).unwrap();
    let mut errors = RowErrors::default();

    // Same builder, finished in between.
    let mut out = BatchBuilder::new();
    dec.decode(&body[..mid], 2, &mut out, &mut errors);
    let a = out.finish();
    dec.decode(&body[mid..], 0, &mut out, &mut errors);
    let b = out.finish();
    // A different, non-empty builder.
    let mut other = BatchBuilder::new();
    let g = other.gpu(&a.gpus[5]);
    let m = other.metric(&"OTHER".into());
    other.push(g, m, 0, 0.0);
    dec.decode(&body[..mid], 2, &mut other, &mut errors);
    let c = other.finish();

    assert_eq!(errors.count, 0);
    for batch in [&a, &b, &c] {
        batch.validate().unwrap();
    }
    let mut joined = a.clone();
    joined.extend_from(&b);
    let (whole, _, _) = decode_file(&bytes, opts());
    let keys = |s: &SampleBatch| {
        s.points
            .iter()
            .map(|p| (s.key_of(p), p.ts_ms, p.value.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&joined), keys(&whole));
    assert_eq!(keys(&c)[1..], keys(&a)[..]);
}

#[test]
fn synthetic_file_round_trips() {
    let mut csv = Vec::new();
    gpufleet_telemetry::synth::write_dcgm_csv(&mut csv, 10_000, 42).unwrap();
    let (batch, n, errors) = decode_file(&csv, opts());
    assert_eq!((n, errors.count, batch.points.len()), (10_000, 0, 10_000));
    assert_eq!(batch.gpus.len(), 512);
    assert_eq!(batch.metrics.len(), 12);
    let busy = batch
        .gpus
        .iter()
        .find(|g| g.labels.len() == 4)
        .expect("a busy GPU");
    let keys: Vec<&str> = busy.labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["DCGM_FI_DRIVER_VERSION", "container", "namespace", "pod"]
    );
    let idle = batch
        .gpus
        .iter()
        .find(|g| g.labels.len() == 1)
        .expect("an idle GPU");
    assert_eq!(
        idle.labels[0],
        (
            "DCGM_FI_DRIVER_VERSION".to_string(),
            "550.54.15".to_string()
        )
    );
}
