//! Fuzz target: `codec::decode` on arbitrary bytes must never panic; whatever it accepts must be a
//! consistent batch that survives an encode/decode round trip unchanged.
#![no_main]

use gpufleet_core::codec::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = decode(data) else {
        return;
    };
    if let Err(e) = batch.validate() {
        panic!("decode accepted an inconsistent batch: {e}");
    }
    let bytes = encode(&batch);
    let back = match decode(&bytes) {
        Ok(b) => b,
        Err(e) => panic!("re-encoded batch does not decode: {e}"),
    };
    // Compare through the encoding: f64 NaN != NaN, but its bits survive.
    assert_eq!(encode(&back), bytes, "round trip changed the batch");
    assert_eq!(back.points.len(), batch.points.len());
    assert_eq!(back.gpus, batch.gpus);
    assert_eq!(back.metrics, batch.metrics);
});
