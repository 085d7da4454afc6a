//! Little binary helpers shared by the WAL, the catalog and the file indexes: LEB128 varints,
//! zigzag, length-prefixed strings, CRC-framed records and a bounds-checked reader that turns
//! every short read into [`StoreError::Corrupt`] instead of a panic.

use crate::StoreError;

/// Appends an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag-maps a signed integer so small magnitudes stay small.
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends a signed varint (zigzag).
pub(crate) fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

/// Appends a length-prefixed UTF-8 string.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Appends a length-prefixed byte string.
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Size of a record frame header: payload length (u32 LE) then CRC-32 of the payload (u32 LE).
pub(crate) const FRAME_HEADER: usize = 8;

/// Starts a framed record in `out`; finish it with [`end_frame`].
pub(crate) fn begin_frame(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    at
}

/// Writes the length and CRC of the record begun at `at`.
pub(crate) fn end_frame(out: &mut [u8], at: usize) {
    let payload = &out[at + FRAME_HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Splits a log of framed records. Returns the payloads that are whole and intact and the
/// offset where the valid prefix ends (less than `buf.len()` when the tail is torn or corrupt).
pub(crate) fn read_frames(buf: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while buf.len() - pos >= FRAME_HEADER {
        let len = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]);
        let start = pos + FRAME_HEADER;
        if buf.len() - start < len {
            break;
        }
        let payload = &buf[start..start + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push(payload);
        pos = start + len;
    }
    (out, pos)
}

/// A bounds-checked cursor over bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; `what` names the structure in error messages.
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    fn corrupt(&self, why: &str) -> StoreError {
        StoreError::Corrupt(format!("{} at byte {}: {why}", self.what, self.pos))
    }

    /// True when every byte was consumed.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() - self.pos < n {
            return Err(self.corrupt("truncated"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    /// An unsigned varint.
    pub(crate) fn varint(&mut self) -> Result<u64, StoreError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(self.corrupt("varint overflow"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.corrupt("varint too long"))
    }

    /// A varint that must fit in u32.
    pub(crate) fn u32v(&mut self) -> Result<u32, StoreError> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| self.corrupt("value out of range"))
    }

    /// A varint used as a count of items each at least `min_bytes` long; refuses counts the
    /// remaining bytes cannot hold, so hostile input cannot force huge allocations.
    pub(crate) fn count(&mut self, min_bytes: usize) -> Result<usize, StoreError> {
        let v = self.varint()? as usize;
        if v.saturating_mul(min_bytes.max(1)) > self.buf.len() - self.pos {
            return Err(self.corrupt("count larger than the data"));
        }
        Ok(v)
    }

    /// A varint count of compressed items (which may take less than a byte each), capped at
    /// 2^28 so a damaged index cannot ask for absurd allocations.
    pub(crate) fn n_items(&mut self) -> Result<usize, StoreError> {
        let v = self.varint()?;
        if v > 1 << 28 {
            return Err(self.corrupt("item count too large"));
        }
        Ok(v as usize)
    }

    /// A signed (zigzag) varint.
    pub(crate) fn ivarint(&mut self) -> Result<i64, StoreError> {
        Ok(unzigzag(self.varint()?))
    }

    /// A little-endian f64.
    pub(crate) fn f64(&mut self) -> Result<f64, StoreError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// A length-prefixed byte string.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let n = self.count(1)?;
        self.take(n)
    }

    /// A length-prefixed UTF-8 string.
    pub(crate) fn str(&mut self) -> Result<&'a str, StoreError> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| self.corrupt("invalid utf-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_strings_round_trip() {
        let mut out = Vec::new();
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            put_varint(&mut out, v);
        }
        put_ivarint(&mut out, -5);
        put_str(&mut out, "héllo");
        let mut r = Reader::new(&out, "test");
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(r.varint().unwrap(), v);
        }
        assert_eq!(r.ivarint().unwrap(), -5);
        assert_eq!(r.str().unwrap(), "héllo");
        assert!(r.is_empty());
        assert!(r.u8().is_err());
    }

    #[test]
    fn frames_stop_at_a_torn_or_corrupt_tail() {
        let mut out = Vec::new();
        for p in [&b"one"[..], b"two", b"three"] {
            let at = begin_frame(&mut out);
            out.extend_from_slice(p);
            end_frame(&mut out, at);
        }
        let whole = out.len();
        let (frames, end) = read_frames(&out);
        assert_eq!(frames, vec![&b"one"[..], b"two", b"three"]);
        assert_eq!(end, whole);
        let (frames, end) = read_frames(&out[..whole - 2]);
        assert_eq!(frames.len(), 2);
        assert_eq!(end, whole - 13);
        out[whole - 1] ^= 0xff;
        assert_eq!(read_frames(&out).0.len(), 2);
    }

    #[test]
    fn hostile_counts_are_refused() {
        let mut out = Vec::new();
        put_varint(&mut out, 1 << 40);
        assert!(Reader::new(&out, "t").count(1).is_err());
    }
}
