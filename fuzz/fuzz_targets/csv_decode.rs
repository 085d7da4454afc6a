//! Fuzz target: the first line of the input is a CSV header, the rest its body. Decoding must
//! never panic, every batch it builds must be internally consistent, and every row error must
//! point at a line of the body.
#![no_main]

use gpufleet_core::BatchBuilder;
use gpufleet_telemetry::source::{CsvDecoder, DecodeOptions, RowErrors};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data
        .iter()
        .position(|&b| b == b'\n')
        .map_or(data.len(), |i| i + 1);
    let (header, body) = data.split_at(split);
    let opts = DecodeOptions {
        default_host: Some("fuzz-host".into()),
        ingest_ms: 1,
    };
    let Ok(mut decoder) = CsvDecoder::from_header(header, opts) else {
        return;
    };
    let mut out = BatchBuilder::new();
    let mut errors = RowErrors::default();
    let records = decoder.decode(body, 2, &mut out, &mut errors);
    let last_line = 2 + body.iter().filter(|&&b| b == b'\n').count() as u64;
    assert!(
        errors.count <= records,
        "{} errors for {records} records",
        errors.count
    );
    for e in &errors.first {
        assert!(
            (2..=last_line).contains(&e.line),
            "error line {} outside 2..={last_line}",
            e.line
        );
        assert!(!e.reason.is_empty());
    }
    // Decode again into the same (unfinished) builder: cached references must stay valid.
    let again = decoder.decode(body, 2, &mut out, &mut errors);
    assert_eq!(again, records);
    let batch = out.finish();
    if let Err(e) = batch.validate() {
        panic!("inconsistent batch: {e}");
    }
    // And once more after finish(): the decoder must notice the reset dictionaries.
    decoder.decode(body, 2, &mut out, &mut errors);
    if let Err(e) = out.finish().validate() {
        panic!("inconsistent batch after finish: {e}");
    }
});
