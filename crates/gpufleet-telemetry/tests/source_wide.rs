//! Wide CSV decoding: the hand-made fixtures and real nvidia-smi `--query-gpu` captures.

use gpufleet_core::time::parse_timestamp;
use gpufleet_core::{BatchBuilder, SampleBatch};
use gpufleet_telemetry::source::{CsvDecoder, CsvShape, DecodeOptions, RowErrors};
use std::path::Path;

fn testdata(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decode(bytes: &[u8], opts: DecodeOptions) -> (SampleBatch, u64, RowErrors) {
    let split = memchr::memchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1);
    let mut dec = CsvDecoder::from_header(&bytes[..split], opts).unwrap();
    assert_eq!(dec.shape(), CsvShape::Wide);
    let mut out = BatchBuilder::new();
    let mut errors = RowErrors::default();
    let n = dec.decode(&bytes[split..], 2, &mut out, &mut errors);
    let batch = out.finish();
    batch.validate().unwrap();
    (batch, n, errors)
}

fn opts() -> DecodeOptions {
    DecodeOptions {
        default_host: None,
        ingest_ms: 7_000,
    }
}

/// The value of `metric` in the batch's only (or first) sample of it.
fn value(batch: &SampleBatch, metric: &str) -> Option<f64> {
    batch
        .points
        .iter()
        .find(|p| batch.metrics[p.metric as usize].as_str() == metric)
        .map(|p| p.value)
}

#[test]
fn minimal_fixture_maps_every_column() {
    let (batch, n, errors) = decode(&testdata("dilipmighty245_test_minimal.csv"), opts());
    assert_eq!((n, errors.count), (2, 0));
    assert_eq!(batch.points.len(), 16);
    assert_eq!(batch.gpus.len(), 2);
    let g = &batch.gpus[0];
    assert_eq!(
        (g.host.as_str(), g.uuid.as_str(), g.index),
        ("test-host-1", "GPU-00000001", Some(0))
    );
    assert_eq!(
        (g.device.as_str(), g.model.as_str()),
        ("nvidia0", "Tesla V100")
    );
    assert_eq!(
        batch.points[0].ts_ms,
        parse_timestamp(b"2024-01-01 12:00:01").unwrap()
    );
    assert_eq!(value(&batch, "DCGM_FI_DEV_GPU_UTIL"), Some(75.5));
    assert_eq!(value(&batch, "DCGM_FI_DEV_MEM_COPY_UTIL"), Some(60.2));
    assert_eq!(value(&batch, "DCGM_FI_DEV_FB_FREE"), Some(8192.0));
    assert_eq!(value(&batch, "DCGM_FI_DEV_MEM_CLOCK"), Some(1000.0));
}

#[test]
fn fixture_without_host_uuid_or_time_uses_defaults() {
    let (batch, n, errors) = decode(&testdata("harishb93_sample_gpu_data.csv"), opts());
    assert_eq!((n, errors.count, batch.points.len()), (8, 0, 40));
    assert_eq!(batch.gpus.len(), 4);
    let g = &batch.gpus[3];
    assert_eq!(
        (g.host.as_str(), g.uuid.as_str(), g.index),
        ("localhost", "localhost:gpu_3", Some(3))
    );
    assert!(batch.points.iter().all(|p| p.ts_ms == 7_000));
    assert_eq!(value(&batch, "DCGM_FI_DEV_FAN_SPEED"), Some(2500.0));

    let (batch, _, _) = decode(
        &testdata("harishb93_sample_gpu_data.csv"),
        DecodeOptions {
            default_host: Some("rack-1".into()),
            ingest_ms: 0,
        },
    );
    assert_eq!(batch.gpus[0].uuid.as_str(), "rack-1:gpu_0");
}

#[test]
fn nvidia_smi_query_gpu_capture_maps_known_metrics_and_skips_na() {
    let (batch, n, errors) = decode(
        &testdata("linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01__load__query_gpu.csv"),
        opts(),
    );
    assert_eq!((n, errors.count), (1, 0), "{:?}", errors.first);
    assert_eq!(batch.gpus.len(), 1);
    let g = &batch.gpus[0];
    assert_eq!(g.host.as_str(), "localhost", "hostname is [N/A]");
    assert_eq!(
        (g.uuid.as_str(), g.index, g.model.as_str()),
        (
            "GPU-00000000-0000-0000-0000-000000000000",
            Some(0),
            "NVIDIA H100 80GB HBM3"
        )
    );
    let labels: Vec<(&str, &str)> = g
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("driver_version", "590.48.01"),
            ("pci_bus_id", "00000000:00:09.0"),
            ("pstate", "P0"),
            ("serial", "0000000000000")
        ]
    );
    assert!(batch
        .points
        .iter()
        .all(|p| p.ts_ms == parse_timestamp(b"2026/07/14 08:12:53.353").unwrap()));
    assert_eq!(value(&batch, "DCGM_FI_DEV_GPU_UTIL"), Some(100.0));
    assert_eq!(value(&batch, "DCGM_FI_DEV_MEM_COPY_UTIL"), Some(11.0));
    assert_eq!(value(&batch, "DCGM_FI_DEV_FB_USED"), Some(19818.0));
    assert_eq!(value(&batch, "DCGM_FI_DEV_FB_TOTAL"), Some(81559.0));
    assert_eq!(value(&batch, "DCGM_FI_DEV_POWER_USAGE"), Some(631.95));
    assert_eq!(value(&batch, "DCGM_FI_DEV_SM_CLOCK"), Some(1980.0));
    assert_eq!(value(&batch, "DCGM_FI_DEV_GPU_TEMP"), Some(59.0));
    assert_eq!(value(&batch, "DCGM_FI_DEV_PCIE_LINK_GEN"), Some(5.0));
    assert_eq!(
        value(&batch, "DCGM_FI_DEV_FAN_SPEED"),
        None,
        "fan.speed is [N/A]"
    );
    // Unknown numeric columns are kept under their safe name; unknown text columns are not.
    assert_eq!(value(&batch, "clocks_max_sm"), Some(1980.0));
    assert_eq!(
        value(&batch, "clocks_event_reasons_counters_sw_power_cap"),
        Some(0.0)
    );
    assert_eq!(value(&batch, "persistence_mode"), None);
    assert_eq!(value(&batch, "module_power_draw_average"), None);
}

#[test]
fn other_nvidia_smi_captures_decode_cleanly() {
    let (batch, _, errors) = decode(
        &testdata("linux-x86_64__nvidia-l40s__595.80__idle__query_gpu.csv"),
        opts(),
    );
    assert_eq!(errors.count, 0, "{:?}", errors.first);
    assert_eq!(
        value(&batch, "DCGM_FI_DEV_MEMORY_TEMP"),
        None,
        "temperature.memory is N/A"
    );
    assert_eq!(value(&batch, "DCGM_FI_DEV_POWER_USAGE"), Some(144.97));

    let (batch, _, errors) = decode(
        &testdata("linux-x86_64__nvidia-h100-mig__590.48.01__idle__query_gpu.csv"),
        opts(),
    );
    assert_eq!(errors.count, 0, "{:?}", errors.first);
    assert!(value(&batch, "DCGM_FI_DEV_FB_USED").is_some());

    let (batch, n, errors) = decode(
        &testdata("linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01__load__compute_apps.csv"),
        opts(),
    );
    assert_eq!((n, errors.count), (3, 0), "{:?}", errors.first);
    assert_eq!(value(&batch, "used_gpu_memory"), Some(2566.0));
}

#[test]
fn bad_cells_reject_their_row_and_name_the_column() {
    let csv = "timestamp, gpu_id, utilization.gpu [%], mode, memory.used [MiB]\n\
               2024-01-01 12:00:01, 0, 50 %, Enabled, 100 MiB\n\
               2024-01-01 12:00:01, 1, busy, Enabled, 100 MiB\n\
               2024-01-01 12:00:01, 2, [Unknown Error], Disabled, 200 MiB\n\
               2024-01-01 12:00:01, two, 10 %, Enabled, 300 MiB\n\
               2024-01-01 12:00:01, 3, 10 %\n\
               yesterday, 4, 10 %, Enabled, 300 MiB\n";
    let (batch, n, errors) = decode(csv.as_bytes(), opts());
    assert_eq!(n, 6);
    let lines: Vec<u64> = errors.first.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 5, 6, 7]);
    assert!(
        errors.first[0].reason.contains("\"utilization.gpu [%]\"")
            && errors.first[0].reason.contains("busy")
    );
    assert!(errors.first[1].reason.contains("gpu_id \"two\""));
    assert!(errors.first[2].reason.contains("expected 5 fields"));
    assert!(errors.first[3].reason.contains("bad timestamp"));
    // Row 2: both metrics; row 4: utilization absent, memory kept. `mode` (text) never appears.
    assert_eq!(batch.points.len(), 3);
    assert!(batch.metrics.iter().all(|m| m.as_str() != "mode"));
}
