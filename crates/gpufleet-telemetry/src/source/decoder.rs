//! [`CsvDecoder`]: header detection, the record loop and the caches that keep the hot path free of
//! allocation (GPU description, metric name and timestamp by raw bytes).

use super::long::LongLayout;
use super::scan::{blank_line_len, field_string, split_record, Field, JUNK_AFTER_QUOTE};
use super::wide::WideLayout;
use super::{CsvShape, DecodeOptions, RowErrors, SourceError};
use gpufleet_core::BatchBuilder;
use rustc_hash::FxHashMap;

/// A cache holds at most this many GPU or metric keys; past that it starts over.
const CACHE_LIMIT: usize = 1 << 16;

/// The column plan for one of the two shapes.
#[derive(Debug)]
enum Layout {
    Long(LongLayout),
    Wide(WideLayout),
}

/// Decodes CSV records of one header into [`BatchBuilder`] points.
///
/// The decoder remembers which GPU and metric references it handed out in the builder it was last
/// given. Pass the same builder to consecutive calls, or one that is empty (for example right after
/// [`BatchBuilder::finish`]); a builder whose length changed behind the decoder's back also makes it
/// forget, so references never point into the wrong dictionaries.
#[derive(Debug)]
pub struct CsvDecoder {
    layout: Layout,
    names: Vec<String>,
    opts: DecodeOptions,
    fields: Vec<Field>,
    cache: Cache,
}

impl CsvDecoder {
    /// Reads the header line (a trailing `\r\n` or `\n` and a UTF-8 byte-order mark are allowed)
    /// and detects the shape: a `metric_name` column means DCGM long CSV, anything else is wide.
    pub fn from_header(header: &[u8], opts: DecodeOptions) -> Result<CsvDecoder, SourceError> {
        let header = header.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(header);
        if header.iter().all(u8::is_ascii_whitespace) {
            return Err(SourceError::BadHeader(
                "the header line is empty; the first line must name the columns".into(),
            ));
        }
        let mut fields = Vec::new();
        let split = split_record(header, 0, &mut fields);
        if split.unterminated {
            return Err(SourceError::BadHeader(
                "the header has a quoted column name without its closing quote".into(),
            ));
        }
        let names: Vec<String> = fields
            .iter()
            .map(|f| field_string(header, f).trim().to_owned())
            .collect();
        let layout = if names.iter().any(|n| n.eq_ignore_ascii_case("metric_name")) {
            Layout::Long(LongLayout::from_names(&names)?)
        } else {
            Layout::Wide(WideLayout::from_names(&names)?)
        };
        let metric_slots = match &layout {
            Layout::Wide(w) => w.metric_count(),
            Layout::Long(_) => 0,
        };
        Ok(CsvDecoder {
            layout,
            names,
            opts,
            fields: Vec::with_capacity(fields.len() + 1),
            cache: Cache::new(metric_slots),
        })
    }

    /// The detected shape.
    pub fn shape(&self) -> CsvShape {
        match self.layout {
            Layout::Long(_) => CsvShape::DcgmLong,
            Layout::Wide(_) => CsvShape::Wide,
        }
    }

    /// Decodes complete CSV records (no header) whose first physical line is `first_line`. Appends
    /// samples to `out`; bad rows go to `errors` with their line number and a reason that says
    /// what to fix; the rest flows on. Returns the number of records seen (good + bad, excluding
    /// blank lines).
    pub fn decode(
        &mut self,
        body: &[u8],
        first_line: u64,
        out: &mut BatchBuilder,
        errors: &mut RowErrors,
    ) -> u64 {
        let Self {
            layout,
            names,
            opts,
            fields,
            cache,
        } = self;
        cache.sync(out);
        let mut pos = 0;
        let mut line = first_line;
        let mut records = 0u64;
        while pos < body.len() {
            let blank = blank_line_len(body, pos);
            if blank > 0 {
                pos += blank;
                line = line.saturating_add(1);
                continue;
            }
            let split = split_record(body, pos, fields);
            records += 1;
            if split.unterminated {
                errors.push_with(line, || {
                    "unterminated quoted field: a field starts with '\"' but has no closing quote (double any quote inside a quoted field)"
                        .into()
                });
                pos = memchr::memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i + 1);
                line = line.saturating_add(1);
                continue;
            }
            let row_line = line;
            pos = split.next;
            line = line.saturating_add(1 + split.extra_lines);
            if split.junk {
                let col = fields
                    .iter()
                    .position(|f| f.flags & JUNK_AFTER_QUOTE != 0)
                    .unwrap_or(0);
                errors.push_with(row_line, || {
                    format!(
                        "column {}: text after the closing quote; quote the whole field",
                        column_name(names, col)
                    )
                });
                continue;
            }
            let result = match layout {
                Layout::Long(l) => l.decode_row(body, fields, opts, cache, out),
                Layout::Wide(w) => w.decode_row(body, fields, opts, cache, out),
            };
            if let Err(reason) = result {
                errors.push_with(row_line, || reason);
            }
        }
        cache.builder_len = out.len();
        records
    }
}

/// The row error for a record whose field count differs from the header's.
pub(crate) fn check_field_count(names: &[String], found: usize) -> Result<(), String> {
    if found == names.len() {
        return Ok(());
    }
    Err(format!("expected {} fields as in the header, found {found}", names.len()))
}

/// The header name of column `i`, or its 1-based position when the header has fewer columns.
pub(crate) fn column_name(names: &[String], i: usize) -> String {
    match names.get(i) {
        Some(n) => format!("{n:?}"),
        None => format!("#{}", i + 1),
    }
}

/// Raw-bytes caches. GPU and metric references are only valid for the builder they came from.
#[derive(Debug)]
pub(crate) struct Cache {
    /// `out.len()` when the last decode returned.
    builder_len: usize,
    /// The GPU key being looked up (filled by the layouts).
    pub(crate) gpu_key: Vec<u8>,
    last_gpu_key: Vec<u8>,
    last_gpu: Option<u32>,
    gpus: FxHashMap<Box<[u8]>, u32>,
    metrics: FxHashMap<Box<[u8]>, u32>,
    /// Wide CSV: the metric reference of each metric column.
    pub(crate) column_metrics: Vec<Option<u32>>,
    last_ts: Vec<u8>,
    last_ts_ms: Option<i64>,
}

impl Cache {
    fn new(metric_slots: usize) -> Self {
        Cache {
            builder_len: 0,
            gpu_key: Vec::with_capacity(512),
            last_gpu_key: Vec::with_capacity(512),
            last_gpu: None,
            gpus: FxHashMap::default(),
            metrics: FxHashMap::default(),
            column_metrics: vec![None; metric_slots],
            last_ts: Vec::with_capacity(32),
            last_ts_ms: None,
        }
    }

    /// Forgets builder references unless `out` is the builder of the last call, untouched since.
    fn sync(&mut self, out: &BatchBuilder) {
        if out.is_empty() || out.len() != self.builder_len {
            self.last_gpu = None;
            self.gpus.clear();
            self.metrics.clear();
            self.column_metrics.iter_mut().for_each(|m| *m = None);
        }
    }

    /// Epoch milliseconds of a timestamp field; `ingest_ms` when it is empty.
    #[inline]
    pub(crate) fn timestamp(&mut self, raw: &[u8], ingest_ms: i64) -> Result<i64, String> {
        if let Some(ms) = self.last_ts_ms {
            if self.last_ts == raw {
                return Ok(ms);
            }
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(ingest_ms);
        }
        let ms =
            gpufleet_core::time::parse_timestamp(raw).map_err(|e| format!("bad timestamp: {e}"))?;
        self.last_ts.clear();
        self.last_ts.extend_from_slice(raw);
        self.last_ts_ms = Some(ms);
        Ok(ms)
    }

    /// The GPU reference cached for [`Self::gpu_key`].
    #[inline]
    pub(crate) fn gpu_lookup(&mut self) -> Option<u32> {
        if let Some(g) = self.last_gpu {
            if self.gpu_key == self.last_gpu_key {
                return Some(g);
            }
        }
        let g = *self.gpus.get(&self.gpu_key[..])?;
        std::mem::swap(&mut self.gpu_key, &mut self.last_gpu_key);
        self.last_gpu = Some(g);
        Some(g)
    }

    /// Remembers `gpu` as the reference for [`Self::gpu_key`].
    pub(crate) fn gpu_insert(&mut self, gpu: u32) {
        if self.gpus.len() >= CACHE_LIMIT {
            self.gpus.clear();
        }
        self.gpus.insert(self.gpu_key.as_slice().into(), gpu);
        std::mem::swap(&mut self.gpu_key, &mut self.last_gpu_key);
        self.last_gpu = Some(gpu);
    }

    /// The metric reference cached for a raw metric name.
    #[inline]
    pub(crate) fn metric_lookup(&self, raw: &[u8]) -> Option<u32> {
        self.metrics.get(raw).copied()
    }

    /// Remembers `metric` as the reference for a raw metric name.
    pub(crate) fn metric_insert(&mut self, raw: &[u8], metric: u32) {
        if self.metrics.len() >= CACHE_LIMIT {
            self.metrics.clear();
        }
        self.metrics.insert(raw.into(), metric);
    }
}
