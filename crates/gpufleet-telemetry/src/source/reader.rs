//! [`CsvFileReader`]: a plain or gzip CSV file cut into [`Chunk`]s of complete records.
//!
//! Gzip is recognised by its magic bytes (`1f 8b`), not by the file name; concatenated gzip
//! members are read as one stream. Memory stays bounded whatever the file size: the reader holds
//! one chunk (at most `max_rows` records) plus one read block. A record may span lines (quoted
//! newlines) but not more than [`MAX_RECORD_BYTES`]; a quote that stays open that long is taken to
//! be a stray one, and its first line is handed on alone so the decoder rejects it and the rest of
//! the file is read normally.

use super::scan::{blank_line_len, record_end};
use super::SourceError;
use flate2::read::MultiGzDecoder;
use memchr::{memchr, memchr_iter};
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

/// The largest record (header included) the reader accepts.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// How much is read from the file at a time.
const READ_BLOCK: usize = 1 << 20;

/// Complete CSV records cut from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Physical 1-based line number of the first byte of `bytes`.
    pub first_line: u64,
    /// Records in `bytes` (blank lines not counted).
    pub rows: u64,
    /// The records, each with its line ending (the last one may lack it at end of file).
    pub bytes: Vec<u8>,
}

/// Reads a CSV file chunk by chunk.
pub struct CsvFileReader {
    path: PathBuf,
    input: Box<dyn Read + Send>,
    gzip: bool,
    header: Vec<u8>,
    /// Unconsumed bytes; always starts at a record boundary.
    pending: Vec<u8>,
    /// Line number of `pending[0]`.
    next_line: u64,
    eof: bool,
}

impl std::fmt::Debug for CsvFileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvFileReader")
            .field("path", &self.path)
            .field("gzip", &self.gzip)
            .field("next_line", &self.next_line)
            .finish_non_exhaustive()
    }
}

impl CsvFileReader {
    /// Opens a plain or gzip CSV file and reads its header line (leading blank lines and a UTF-8
    /// byte-order mark are skipped).
    pub fn open(path: &Path) -> Result<CsvFileReader, SourceError> {
        let io_err = |source| SourceError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let mut magic = Vec::with_capacity(2);
        (&mut file)
            .take(2)
            .read_to_end(&mut magic)
            .map_err(io_err)?;
        let gzip = magic == [0x1f, 0x8b];
        let raw = Cursor::new(magic).chain(file);
        let input: Box<dyn Read + Send> = if gzip {
            Box::new(MultiGzDecoder::new(raw))
        } else {
            Box::new(raw)
        };
        let mut reader = CsvFileReader {
            path: path.to_owned(),
            input,
            gzip,
            header: Vec::new(),
            pending: Vec::new(),
            next_line: 1,
            eof: false,
        };
        reader.read_header()?;
        Ok(reader)
    }

    /// The header record, without its line ending.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// The physical line number the next chunk starts at.
    pub fn next_line(&self) -> u64 {
        self.next_line
    }

    fn read_header(&mut self) -> Result<(), SourceError> {
        loop {
            if self.pending.starts_with(b"\xEF\xBB\xBF") && self.next_line == 1 {
                self.pending.drain(..3);
            }
            let blank = blank_line_len(&self.pending, 0);
            if blank > 0 {
                self.pending.drain(..blank);
                self.next_line += 1;
                continue;
            }
            let end = if self.pending.is_empty() {
                None
            } else {
                record_end(&self.pending, 0).map(|(end, _)| end)
            };
            let end = match end {
                Some(end) => end,
                None if self.eof => self.pending.len(),
                None => {
                    if self.pending.len() > MAX_RECORD_BYTES {
                        return Err(self.too_long(0));
                    }
                    self.read_more()?;
                    continue;
                }
            };
            if end == 0 {
                return Err(SourceError::BadHeader(format!(
                    "{} is empty; the first line must be a CSV header",
                    self.path.display()
                )));
            }
            let rest = self.pending.split_off(end);
            let mut header = std::mem::replace(&mut self.pending, rest);
            self.next_line += memchr_iter(b'\n', &header).count() as u64;
            while header.last().is_some_and(|&c| c == b'\n' || c == b'\r') {
                header.pop();
            }
            self.header = header;
            return Ok(());
        }
    }

    /// The next chunk of at most `max_rows` records (at least one), or `None` at end of file.
    pub fn next_chunk(&mut self, max_rows: usize) -> Result<Option<Chunk>, SourceError> {
        let max_rows = max_rows.max(1) as u64;
        let mut scan = 0;
        let mut rows = 0u64;
        let mut lines = 0u64;
        while rows < max_rows {
            if scan >= self.pending.len() {
                if self.eof {
                    break;
                }
                self.read_more()?;
                continue;
            }
            let blank = blank_line_len(&self.pending, scan);
            if blank > 0 {
                scan += blank;
                lines += 1;
                continue;
            }
            match record_end(&self.pending, scan) {
                Some((next, extra_lines)) => {
                    scan = next;
                    rows += 1;
                    lines += 1 + extra_lines;
                }
                None if self.eof => {
                    lines += memchr_iter(b'\n', &self.pending[scan..]).count() as u64;
                    scan = self.pending.len();
                    rows += 1;
                }
                None if self.pending.len() - scan > MAX_RECORD_BYTES => {
                    // A quote opened and never closed: hand on its first line alone, last.
                    let Some(i) = memchr(b'\n', &self.pending[scan..]) else {
                        let line = self.next_line
                            + memchr_iter(b'\n', &self.pending[..scan]).count() as u64;
                        return Err(SourceError::LineTooLong {
                            path: self.path.clone(),
                            line,
                            limit: MAX_RECORD_BYTES,
                        });
                    };
                    scan += i + 1;
                    rows += 1;
                    lines += 1;
                    break;
                }
                None => self.read_more()?,
            }
        }
        if scan == 0 {
            return Ok(None);
        }
        let mut rest = Vec::with_capacity(scan.max(READ_BLOCK) + READ_BLOCK);
        rest.extend_from_slice(&self.pending[scan..]);
        self.pending.truncate(scan);
        let bytes = std::mem::replace(&mut self.pending, rest);
        let first_line = self.next_line;
        self.next_line += lines;
        if rows == 0 {
            // Only blank lines were left.
            return Ok(None);
        }
        Ok(Some(Chunk {
            first_line,
            rows,
            bytes,
        }))
    }

    fn read_more(&mut self) -> Result<(), SourceError> {
        loop {
            match (&mut self.input)
                .take(READ_BLOCK as u64)
                .read_to_end(&mut self.pending)
            {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) if self.gzip => {
                    return Err(SourceError::Gzip {
                        path: self.path.clone(),
                        source,
                    })
                }
                Err(source) => {
                    return Err(SourceError::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
    }

    fn too_long(&self, at: usize) -> SourceError {
        let line = self.next_line + memchr_iter(b'\n', &self.pending[..at]).count() as u64;
        SourceError::LineTooLong {
            path: self.path.clone(),
            line,
            limit: MAX_RECORD_BYTES,
        }
    }
}
