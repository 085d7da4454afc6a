//! Numeric columns compressed with pco: whole columns for indexes ([`put_i64s`], [`put_f64s`])
//! and paged chunks for data ([`write_chunk`], [`ChunkReader`]) where one chunk's metadata (bins,
//! mode, delta order) is shared by many small pages that can each be decoded alone.
//!
//! Float columns are first tried as decimals ([`to_decimal`]): when every value is `m / 10^k`
//! for one `k ≤ 9`, the integer mantissas are compressed instead. pco then sees the true integer
//! structure (utilisation steps, MiB counters, 3-decimal watts), which compresses much better
//! than the float bit patterns, and decoding reproduces every value bit for bit.

use super::agg::{decimal, is_decimal_of, MAX_DEC, POW10, POW10_I};
use super::bin::{put_bytes, Reader};
use crate::StoreError;
use pco::standalone::{simple_compress, simple_decompress};
use pco::wrapped::{ChunkDecompressor, FileCompressor, FileDecompressor};
use pco::{ChunkConfig, DecompressorScratch, PagingSpec};

const MAX_MANTISSA: i64 = 1 << 53;
const TAG_I64: u8 = 254;
const TAG_F64: u8 = 255;

fn pco_err(what: &str, e: pco::errors::PcoError) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// Mantissas and the common decimal exponent of a float column, when every value has one.
pub(crate) fn to_decimal(vals: &[f64]) -> Option<(Vec<i64>, u8)> {
    let mut k = 0u8;
    let mut out = Vec::with_capacity(vals.len());
    for &v in vals {
        let x = (v * POW10[k as usize]).round();
        if x.abs() < MAX_MANTISSA as f64 && is_decimal_of(v, x as i64, k) {
            out.push(x as i64);
            continue;
        }
        let (m, vk) = decimal(v)?;
        if vk <= k {
            let m = m
                .checked_mul(POW10_I[(k - vk) as usize])
                .filter(|m| m.abs() < MAX_MANTISSA)?;
            if !is_decimal_of(v, m, k) {
                return None;
            }
            out.push(m);
            continue;
        }
        let f = POW10_I[(vk - k) as usize];
        for o in out.iter_mut() {
            *o = o.checked_mul(f).filter(|m| m.abs() < MAX_MANTISSA)?;
        }
        k = vk;
        out.push(m);
    }
    debug_assert!(k <= MAX_DEC);
    Some((out, k))
}

/// Appends a whole i64 column (length-prefixed pco bytes; the reader must know the count).
pub(crate) fn put_i64s(out: &mut Vec<u8>, vals: &[i64]) -> Result<(), StoreError> {
    if vals.is_empty() {
        put_bytes(out, &[]);
        return Ok(());
    }
    let c = simple_compress(vals, &ChunkConfig::default())
        .map_err(|e| pco_err("compressing an index column", e))?;
    put_bytes(out, &c);
    Ok(())
}

/// Reads a column written by [`put_i64s`] holding `n` values.
pub(crate) fn get_i64s(r: &mut Reader<'_>, n: usize) -> Result<Vec<i64>, StoreError> {
    let b = r.bytes()?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let v: Vec<i64> = simple_decompress(b).map_err(|e| pco_err("index column", e))?;
    if v.len() != n {
        return Err(StoreError::Corrupt(format!(
            "index column holds {} values, expected {n}",
            v.len()
        )));
    }
    Ok(v)
}

/// Appends a whole f64 column: a tag byte (decimal exponent, or 255 for raw floats) then pco bytes.
pub(crate) fn put_f64s(out: &mut Vec<u8>, vals: &[f64]) -> Result<(), StoreError> {
    if let Some((m, k)) = to_decimal(vals) {
        out.push(k);
        return put_i64s(out, &m);
    }
    out.push(TAG_F64);
    let c = simple_compress(vals, &ChunkConfig::default())
        .map_err(|e| pco_err("compressing an index column", e))?;
    put_bytes(out, &c);
    Ok(())
}

/// Reads a column written by [`put_f64s`] holding `n` values.
pub(crate) fn get_f64s(r: &mut Reader<'_>, n: usize) -> Result<Vec<f64>, StoreError> {
    let tag = r.u8()?;
    if tag == TAG_F64 {
        let b = r.bytes()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let v: Vec<f64> = simple_decompress(b).map_err(|e| pco_err("index column", e))?;
        if v.len() != n {
            return Err(StoreError::Corrupt(format!(
                "index column holds {} values, expected {n}",
                v.len()
            )));
        }
        return Ok(v);
    }
    if tag > MAX_DEC {
        return Err(StoreError::Corrupt(format!("bad float column tag {tag}")));
    }
    let p = POW10[tag as usize];
    Ok(get_i64s(r, n)?.into_iter().map(|m| m as f64 / p).collect())
}

/// How a paged chunk stores its numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Plain integers.
    I64,
    /// Floats stored as decimal mantissas with this exponent.
    Dec(u8),
    /// Floats stored as floats.
    F64,
}

impl Kind {
    /// One-byte tag.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Kind::I64 => TAG_I64,
            Kind::Dec(k) => k,
            Kind::F64 => TAG_F64,
        }
    }
    /// Inverse of [`Self::tag`].
    pub(crate) fn from_tag(t: u8) -> Result<Self, StoreError> {
        match t {
            TAG_I64 => Ok(Kind::I64),
            TAG_F64 => Ok(Kind::F64),
            k if k <= MAX_DEC => Ok(Kind::Dec(k)),
            _ => Err(StoreError::Corrupt(format!("bad chunk kind {t}"))),
        }
    }
}

/// Numbers to write as one chunk.
pub(crate) enum Data<'a> {
    /// Integers (timestamps, counts).
    I64(&'a [i64]),
    /// Values.
    F64(&'a [f64]),
}

/// Where a chunk was written inside the file buffer.
#[derive(Clone, Debug)]
pub(crate) struct Written {
    /// Storage kind.
    pub(crate) kind: Kind,
    /// Offset of the chunk metadata.
    pub(crate) meta_off: u64,
    /// Length of the chunk metadata; pages follow it back to back.
    pub(crate) meta_len: u32,
    /// Byte length of each page.
    pub(crate) page_lens: Vec<u32>,
}

/// The pco file header every data file carries once.
pub(crate) fn file_header() -> Result<Vec<u8>, StoreError> {
    FileCompressor::default()
        .write_header(Vec::new())
        .map_err(|e| pco_err("pco header", e))
}

/// Parses the header written by [`file_header`].
pub(crate) fn read_file_header(b: &[u8]) -> Result<FileDecompressor, StoreError> {
    Ok(FileDecompressor::new(b)
        .map_err(|e| pco_err("pco header", e))?
        .0)
}

/// Appends one chunk of `data` split into pages of the given (non-zero) sizes.
pub(crate) fn write_chunk(
    out: &mut Vec<u8>,
    data: Data<'_>,
    pages: &[usize],
) -> Result<Written, StoreError> {
    let cfg = ChunkConfig::default().with_paging_spec(PagingSpec::Exact(pages.to_vec()));
    let fc = FileCompressor::default();
    let (kind, cc) = match data {
        Data::I64(v) => (Kind::I64, fc.chunk_compressor(v, &cfg)),
        Data::F64(v) => match to_decimal(v) {
            Some((m, k)) => (Kind::Dec(k), fc.chunk_compressor(&m, &cfg)),
            None => (Kind::F64, fc.chunk_compressor(v, &cfg)),
        },
    };
    let mut cc = cc.map_err(|e| pco_err("compressing a chunk", e))?;
    let meta_off = out.len() as u64;
    cc.write_meta(&mut *out)
        .map_err(|e| pco_err("writing chunk metadata", e))?;
    let meta_len = (out.len() as u64 - meta_off) as u32;
    let mut page_lens = Vec::with_capacity(pages.len());
    for i in 0..pages.len() {
        let before = out.len();
        cc.write_page(i, &mut *out)
            .map_err(|e| pco_err("writing a page", e))?;
        page_lens.push((out.len() - before) as u32);
    }
    Ok(Written {
        kind,
        meta_off,
        meta_len,
        page_lens,
    })
}

/// A chunk's decoded metadata, kept in memory so a page decodes with one read.
#[derive(Clone, Debug)]
pub(crate) enum ChunkReader {
    /// Integer or decimal-mantissa chunk.
    Int(ChunkDecompressor<i64>, Kind),
    /// Float chunk.
    Float(ChunkDecompressor<f64>),
}

fn decode_i64(cd: &ChunkDecompressor<i64>, page: &[u8], n: usize) -> Result<Vec<i64>, StoreError> {
    let mut scratch = DecompressorScratch::default();
    let mut pd = cd
        .page_decompressor_with_scratch(page, n, &mut scratch)
        .map_err(|e| pco_err("page", e))?;
    let mut out = vec![0i64; n];
    pd.read(&mut out).map_err(|e| pco_err("page", e))?;
    Ok(out)
}

fn decode_f64(cd: &ChunkDecompressor<f64>, page: &[u8], n: usize) -> Result<Vec<f64>, StoreError> {
    let mut scratch = DecompressorScratch::default();
    let mut pd = cd
        .page_decompressor_with_scratch(page, n, &mut scratch)
        .map_err(|e| pco_err("page", e))?;
    let mut out = vec![0f64; n];
    pd.read(&mut out).map_err(|e| pco_err("page", e))?;
    Ok(out)
}

impl ChunkReader {
    /// Parses chunk metadata.
    pub(crate) fn open(fd: &FileDecompressor, kind: Kind, meta: &[u8]) -> Result<Self, StoreError> {
        Ok(match kind {
            Kind::I64 | Kind::Dec(_) => ChunkReader::Int(
                fd.chunk_decompressor(meta)
                    .map_err(|e| pco_err("chunk metadata", e))?
                    .0,
                kind,
            ),
            Kind::F64 => ChunkReader::Float(
                fd.chunk_decompressor(meta)
                    .map_err(|e| pco_err("chunk metadata", e))?
                    .0,
            ),
        })
    }

    /// Decodes a page of `n` integers (mantissas for a decimal chunk).
    pub(crate) fn read_i64(&self, page: &[u8], n: usize) -> Result<Vec<i64>, StoreError> {
        match self {
            ChunkReader::Int(cd, _) => decode_i64(cd, page, n),
            ChunkReader::Float(_) => Err(StoreError::Corrupt(
                "float chunk where integers were expected".into(),
            )),
        }
    }

    /// Decodes a page of `n` values.
    pub(crate) fn read_f64(&self, page: &[u8], n: usize) -> Result<Vec<f64>, StoreError> {
        match self {
            ChunkReader::Int(cd, Kind::Dec(k)) => {
                let p = POW10[*k as usize];
                Ok(decode_i64(cd, page, n)?
                    .into_iter()
                    .map(|m| m as f64 / p)
                    .collect())
            }
            ChunkReader::Int(cd, _) => Ok(decode_i64(cd, page, n)?
                .into_iter()
                .map(|m| m as f64)
                .collect()),
            ChunkReader::Float(cd) => decode_f64(cd, page, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_columns_rescale_to_the_widest_exponent() {
        let (m, k) = to_decimal(&[1.0, 512.347, 2.5, -0.001]).unwrap();
        assert_eq!(k, 3);
        assert_eq!(m, vec![1000, 512_347, 2500, -1]);
        assert!(to_decimal(&[1.0, std::f64::consts::E]).is_none());
        assert!(to_decimal(&[-0.0]).is_none());
    }

    #[test]
    fn whole_columns_round_trip() {
        let mut out = Vec::new();
        put_i64s(&mut out, &[5, 6, 7]).unwrap();
        put_f64s(&mut out, &[0.5, 512.347]).unwrap();
        put_f64s(&mut out, &[f64::NAN, -0.0, 1e300]).unwrap();
        put_i64s(&mut out, &[]).unwrap();
        let mut r = Reader::new(&out, "t");
        assert_eq!(get_i64s(&mut r, 3).unwrap(), vec![5, 6, 7]);
        assert_eq!(get_f64s(&mut r, 2).unwrap(), vec![0.5, 512.347]);
        let raw = get_f64s(&mut r, 3).unwrap();
        assert!(raw[0].is_nan() && raw[1].to_bits() == (-0.0f64).to_bits() && raw[2] == 1e300);
        assert!(get_i64s(&mut r, 0).unwrap().is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn pages_decode_alone() {
        let vals: Vec<f64> = (0..1000).map(|i| f64::from(i % 37) + 0.25).collect();
        let mut out = file_header().unwrap();
        let hdr_len = out.len();
        let w = write_chunk(&mut out, Data::F64(&vals), &[400, 600]).unwrap();
        assert_eq!(w.kind, Kind::Dec(2));
        let fd = read_file_header(&out[..hdr_len]).unwrap();
        let m0 = w.meta_off as usize;
        let cr = ChunkReader::open(&fd, w.kind, &out[m0..m0 + w.meta_len as usize]).unwrap();
        let p1 = m0 + w.meta_len as usize + w.page_lens[0] as usize;
        let page = &out[p1..p1 + w.page_lens[1] as usize];
        assert_eq!(cr.read_f64(page, 600).unwrap(), vals[400..].to_vec());
    }
}
