//! The binary wire form of a [`SampleBatch`]: the payload of a telemetry broker message.
//!
//! Layout (all integers LEB128 varints unless noted):
//! `"GFB1"` · gpu count · per gpu (host, uuid, index+1 or 0, device, model, label count, (key, value)…)
//! · metric count · metric names · point count · per point (gpu ref, metric ref,
//! zigzag timestamp delta from the previous point in ms, value as 8 bytes little-endian).
//! Strings are a varint length then UTF-8 bytes. Decoding never trusts a length beyond the bytes
//! that remain, so hostile input cannot make it allocate or panic.

use crate::ids::{GpuUuid, HostName, MetricName};
use crate::sample::{GpuDesc, Point, SampleBatch};
use thiserror::Error;

const MAGIC: &[u8; 4] = b"GFB1";

/// Why a payload could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    /// The payload does not start with the batch magic.
    #[error("not a sample batch (bad magic)")]
    BadMagic,
    /// The payload ended in the middle of a field.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// A varint was longer than 10 bytes.
    #[error("malformed varint at byte {0}")]
    BadVarint(usize),
    /// A string was not UTF-8.
    #[error("invalid utf-8 at byte {0}")]
    BadUtf8(usize),
    /// A point referenced a dictionary entry that does not exist.
    #[error("point {0} references a missing dictionary entry")]
    DanglingRef(usize),
    /// Bytes were left after the last point.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Encodes a batch. The output can be fed to [`decode`].
pub fn encode(batch: &SampleBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + batch.gpus.len() * 96 + batch.points.len() * 12);
    out.extend_from_slice(MAGIC);
    put_varint(&mut out, batch.gpus.len() as u64);
    for g in &batch.gpus {
        put_str(&mut out, g.host.as_str());
        put_str(&mut out, g.uuid.as_str());
        put_varint(&mut out, g.index.map_or(0, |i| u64::from(i) + 1));
        put_str(&mut out, &g.device);
        put_str(&mut out, &g.model);
        put_varint(&mut out, g.labels.len() as u64);
        for (k, v) in &g.labels {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
    }
    put_varint(&mut out, batch.metrics.len() as u64);
    for m in &batch.metrics {
        put_str(&mut out, m.as_str());
    }
    put_varint(&mut out, batch.points.len() as u64);
    let mut prev = 0i64;
    for p in &batch.points {
        put_varint(&mut out, u64::from(p.gpu));
        put_varint(&mut out, u64::from(p.metric));
        put_varint(&mut out, zigzag(p.ts_ms.wrapping_sub(prev)));
        prev = p.ts_ms;
        out.extend_from_slice(&p.value.to_le_bytes());
    }
    out
}

/// Decodes a batch produced by [`encode`].
pub fn decode(buf: &[u8]) -> Result<SampleBatch, CodecError> {
    let mut r = Reader { buf, pos: 0 };
    if r.take(4)? != MAGIC {
        return Err(CodecError::BadMagic);
    }
    // Each GPU needs at least 6 bytes, each metric 1, each point 11: cap reservations by that.
    let n_gpus = r.len(6)?;
    let mut gpus = Vec::with_capacity(n_gpus);
    for _ in 0..n_gpus {
        let host = HostName::new(r.str()?);
        let uuid = GpuUuid::new(r.str()?);
        let index = match r.varint()? {
            0 => None,
            i => Some(u32::try_from(i - 1).map_err(|_| CodecError::BadVarint(r.pos))?),
        };
        let device = r.str()?.to_owned();
        let model = r.str()?.to_owned();
        let n_labels = r.len(2)?;
        let mut labels = Vec::with_capacity(n_labels);
        for _ in 0..n_labels {
            let k = r.str()?.to_owned();
            let v = r.str()?.to_owned();
            labels.push((k, v));
        }
        gpus.push(GpuDesc { host, uuid, index, device, model, labels });
    }
    let n_metrics = r.len(1)?;
    let mut metrics = Vec::with_capacity(n_metrics);
    for _ in 0..n_metrics {
        metrics.push(MetricName::new(r.str()?));
    }
    let n_points = r.len(11)?;
    let mut points = Vec::with_capacity(n_points);
    let mut prev = 0i64;
    for i in 0..n_points {
        let gpu = r.varint()?;
        let metric = r.varint()?;
        if gpu >= gpus.len() as u64 || metric >= metrics.len() as u64 {
            return Err(CodecError::DanglingRef(i));
        }
        let ts_ms = prev.wrapping_add(unzigzag(r.varint()?));
        prev = ts_ms;
        let raw = r.take(8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(raw);
        points.push(Point { gpu: gpu as u32, metric: metric as u32, ts_ms, value: f64::from_le_bytes(b) });
    }
    if r.pos != buf.len() {
        return Err(CodecError::Trailing(buf.len() - r.pos));
    }
    Ok(SampleBatch { gpus, metrics, points })
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(CodecError::Truncated(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn varint(&mut self) -> Result<u64, CodecError> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(CodecError::Truncated(self.pos))?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(CodecError::BadVarint(start));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::BadVarint(start))
    }
    /// A count whose every element needs at least `min_each` bytes.
    fn len(&mut self, min_each: usize) -> Result<usize, CodecError> {
        let at = self.pos;
        let n = self.varint()?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_each as u64) > remaining {
            return Err(CodecError::Truncated(at));
        }
        Ok(n as usize)
    }
    fn str(&mut self) -> Result<&'a str, CodecError> {
        let n = self.len(1)?;
        let at = self.pos;
        std::str::from_utf8(self.take(n)?).map_err(|_| CodecError::BadUtf8(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::BatchBuilder;
    use proptest::prelude::*;

    fn sample_batch() -> SampleBatch {
        let mut b = BatchBuilder::new();
        let g = b.gpu(&GpuDesc {
            host: "h1".into(),
            uuid: "GPU-1".into(),
            index: Some(3),
            device: "nvidia3".into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            labels: vec![("pod".into(), "job-1".into())],
        });
        let m = b.metric(&"DCGM_FI_DEV_GPU_UTIL".into());
        b.push(g, m, 1_700_000_000_000, 87.5);
        b.push(g, m, 1_699_999_999_000, -1.25);
        b.finish()
    }

    #[test]
    fn round_trip() {
        let b = sample_batch();
        assert_eq!(decode(&encode(&b)).unwrap(), b);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode(&sample_batch());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
        }
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let mut bytes = MAGIC.to_vec();
        put_varint(&mut bytes, u64::MAX >> 1);
        assert_eq!(decode(&bytes), Err(CodecError::Truncated(4)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&data);
            let _ = decode(&data);
            let _ = decode(&with_magic);
        }

        #[test]
        fn round_trip_any_points(pts in proptest::collection::vec((any::<i64>(), any::<f64>()), 0..64)) {
            let mut b = BatchBuilder::new();
            let g = b.gpu(&GpuDesc { host: "h".into(), uuid: "u".into(), index: None, device: String::new(), model: String::new(), labels: vec![] });
            let m = b.metric(&"m".into());
            for (t, v) in &pts { b.push(g, m, *t, *v); }
            let batch = b.finish();
            let back = decode(&encode(&batch)).unwrap();
            prop_assert_eq!(back.points.len(), batch.points.len());
            for (a, b) in back.points.iter().zip(&batch.points) {
                prop_assert_eq!(a.ts_ms, b.ts_ms);
                prop_assert_eq!(a.value.to_bits(), b.value.to_bits());
            }
        }
    }
}
