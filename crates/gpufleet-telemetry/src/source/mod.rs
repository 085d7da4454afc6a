//! CSV telemetry sources: bytes in, [`SampleBatch`](gpufleet_core::SampleBatch) points out.
//!
//! Two shapes are read, detected from the header line:
//! - [`CsvShape::DcgmLong`]: the DCGM-exporter long CSV
//!   (`timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw`),
//!   one row per point. Columns are found by name, so a reordered header works too.
//! - [`CsvShape::Wide`]: one row per GPU sample, any column set; each header goes through
//!   [`classify_column`](gpufleet_core::metric_names::classify_column). This covers
//!   `nvidia-smi --query-gpu=... --format=csv` output (units in headers and values, `[N/A]`).
//!
//! [`CsvDecoder`] turns complete records into points; [`CsvFileReader`] cuts a plain or gzip file
//! into chunks of complete records with constant memory. Bad rows never stop a decode: each one
//! becomes a [`RowError`] with its physical line number and a reason that says what to fix.
//!
//! CSV dialect (shared by the reader and the decoder, see `scan`): `,` separates fields, records end
//! at `\n` or `\r\n` outside quotes, a `"` opens a quoted field only at the start of a field (`""`
//! inside is one quote, newlines inside are data), a `"` anywhere else is an ordinary character.
//! Empty lines are skipped. A field that opens a quote and never closes it is a row error; decoding
//! resumes on the next physical line.
//!
//! This module depends on `gpufleet-core` only; it knows nothing about brokers or stores.

mod decoder;
mod labels;
mod long;
mod reader;
mod scan;
mod value;
mod wide;

pub use decoder::CsvDecoder;
pub use reader::{Chunk, CsvFileReader, MAX_RECORD_BYTES};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use thiserror::Error;

/// How rows are turned into samples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Host for rows that name none (wide CSVs without a host column); `localhost` when `None`.
    pub default_host: Option<String>,
    /// Timestamp (ms since the epoch) for rows without one.
    pub ingest_ms: i64,
}

/// One rejected row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// Physical 1-based line number in the file where the record starts.
    pub line: u64,
    /// What is wrong and what to fix.
    pub reason: String,
}

/// Rejected rows: all counted, the first [`RowErrors::KEEP`] kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowErrors {
    /// Number of rejected rows.
    pub count: u64,
    /// The first rejected rows, in order.
    pub first: Vec<RowError>,
}

impl RowErrors {
    /// How many errors are kept in [`RowErrors::first`].
    pub const KEEP: usize = 100;

    /// Counts an error, keeping it when fewer than [`Self::KEEP`] are kept.
    pub fn push(&mut self, error: RowError) {
        self.count += 1;
        if self.first.len() < Self::KEEP {
            self.first.push(error);
        }
    }

    /// Like [`Self::push`] but builds the reason only when it will be kept.
    pub(crate) fn push_with(&mut self, line: u64, reason: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.len() < Self::KEEP {
            self.first.push(RowError {
                line,
                reason: reason(),
            });
        }
    }
}

/// The layout of a CSV, detected from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsvShape {
    /// DCGM-exporter long CSV: one row per (timestamp, metric, GPU).
    DcgmLong,
    /// One row per GPU sample with one column per metric.
    Wide,
}

/// Why a source could not be read at all (row-level problems are [`RowError`]s instead).
#[derive(Debug, Error)]
pub enum SourceError {
    /// The header line cannot be used; the message names what is wrong.
    #[error("bad csv header: {0}")]
    BadHeader(String),
    /// The file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file starts with the gzip magic but its stream is corrupt or truncated.
    #[error("corrupt gzip stream in {}: {source}", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decompressor's error.
        #[source]
        source: std::io::Error,
    },
    /// One physical line is longer than [`MAX_RECORD_BYTES`], so it cannot be a CSV record.
    #[error("{}: line {line} is longer than {limit} bytes; is this a CSV file?", path.display())]
    LineTooLong {
        /// The file.
        path: PathBuf,
        /// Where the line starts.
        line: u64,
        /// The limit.
        limit: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_errors_count_all_keep_first_hundred() {
        let mut e = RowErrors::default();
        for line in 0..250 {
            e.push(RowError {
                line,
                reason: "x".into(),
            });
        }
        assert_eq!(e.count, 250);
        assert_eq!(e.first.len(), RowErrors::KEEP);
        assert_eq!(e.first[99].line, 99);
    }
}
