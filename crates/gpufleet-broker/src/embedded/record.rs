//! The frame shared by segment files and ack files, and the scanner that replays a file on open.
//!
//! A frame is `[body length: u32 LE][CRC32 of body: u32 LE][body]`. A zero-length body is invalid,
//! so a zero-filled region never parses as frames.
//!
//! The scanner decides what a bad frame means: at the end of the file it is a *torn tail* (a write
//! that a crash cut short; the caller truncates it), anywhere else it is corruption and an error
//! naming the file and byte position.

use crate::BrokerError;
use std::{fs::File, os::unix::fs::FileExt, path::Path};

/// Bytes before the body of a frame.
pub(crate) const FRAME_HEADER: u64 = 8;

/// How much of a file the scanner reads at a time.
const SCAN_CHUNK: usize = 1 << 20;

/// Appends a frame whose body is the concatenation of `parts`.
pub(crate) fn push_frame(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    buf.extend_from_slice(&frame_header(len as u32, parts));
    for p in parts {
        buf.extend_from_slice(p);
    }
}

/// The 8 header bytes of a frame whose body is the concatenation of `parts` (`len` bytes in all).
pub(crate) fn frame_header(len: u32, parts: &[&[u8]]) -> [u8; 8] {
    let mut crc = crc32fast::Hasher::new();
    for p in parts {
        crc.update(p);
    }
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..].copy_from_slice(&crc.finalize().to_le_bytes());
    header
}

/// Result of parsing one frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A valid frame: its body and its total size in bytes.
    Valid { body: &'a [u8], size: u64 },
    /// The buffer ends before the frame does.
    Incomplete,
    /// Zero length or checksum mismatch.
    Bad(&'static str),
}

/// Parses the frame at the start of `buf`.
pub(crate) fn parse_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < FRAME_HEADER as usize {
        return Frame::Incomplete;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 {
        return Frame::Bad("zero-length record");
    }
    let Some(body) = buf.get(FRAME_HEADER as usize..FRAME_HEADER as usize + len) else {
        return Frame::Incomplete;
    };
    if crc32fast::hash(body) != crc {
        return Frame::Bad("checksum mismatch");
    }
    Frame::Valid {
        body,
        size: FRAME_HEADER + len as u64,
    }
}

/// How a scan ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every byte up to the end of the file belongs to a valid frame.
    Clean { end: u64 },
    /// A bad or partial frame at the end of the file starts at `at`.
    Torn { at: u64, why: &'static str },
}

/// Calls `on_frame(position, body)` for every frame from `start` to the end of `file`.
///
/// A bad frame that reaches (or passes) the end of the file, or is followed only by zero bytes, is
/// reported as [`ScanEnd::Torn`]. A bad frame followed by other data, or a body `on_frame` rejects,
/// is [`BrokerError::Corrupt`] naming `path` and the byte position.
pub(crate) fn scan_file(
    file: &File,
    path: &Path,
    start: u64,
    mut on_frame: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<ScanEnd, BrokerError> {
    let io_err = |source| BrokerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut window = Window {
        file,
        file_len,
        buf: Vec::new(),
        start: 0,
    };
    let mut pos = start;
    while pos < file_len {
        let head = window.get(pos, FRAME_HEADER as usize).map_err(io_err)?;
        if head.len() < FRAME_HEADER as usize {
            return Ok(ScanEnd::Torn {
                at: pos,
                why: "partial record header",
            });
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as u64;
        let frame_end = pos + FRAME_HEADER + len;
        if len > 0 && frame_end > file_len {
            return Ok(ScanEnd::Torn {
                at: pos,
                why: "record extends past the end of the file",
            });
        }
        let frame = window
            .get(pos, (FRAME_HEADER + len) as usize)
            .map_err(io_err)?;
        match parse_frame(frame) {
            Frame::Valid { body, size } => {
                on_frame(pos, body).map_err(|why| corrupt(path, pos, &why))?;
                pos += size;
            }
            Frame::Incomplete => {
                return Ok(ScanEnd::Torn {
                    at: pos,
                    why: "partial record",
                })
            }
            Frame::Bad(why) => {
                if frame_end == file_len || window.zeros_from(pos).map_err(io_err)? {
                    return Ok(ScanEnd::Torn { at: pos, why });
                }
                return Err(corrupt(path, pos, why));
            }
        }
    }
    Ok(ScanEnd::Clean { end: pos })
}

/// The error for unreadable data at `pos` in `path`.
pub(crate) fn corrupt(path: &Path, pos: u64, why: &str) -> BrokerError {
    BrokerError::Corrupt(format!("{} at byte {pos}: {why}", path.display()))
}

/// A read buffer over part of a file.
struct Window<'f> {
    file: &'f File,
    file_len: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    start: u64,
}

impl Window<'_> {
    /// Up to `n` bytes at `pos` (fewer only at the end of the file).
    fn get(&mut self, pos: u64, n: usize) -> std::io::Result<&[u8]> {
        let available = (self.file_len - pos).min(n as u64) as usize;
        let cached =
            pos >= self.start && pos + available as u64 <= self.start + self.buf.len() as u64;
        if !cached {
            let want = (self.file_len - pos).min(available.max(SCAN_CHUNK) as u64) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(&self.buf[from..from + available])
    }

    /// Whether every byte from `pos` to the end of the file is zero.
    fn zeros_from(&mut self, mut pos: u64) -> std::io::Result<bool> {
        while pos < self.file_len {
            let chunk = self.get(pos, SCAN_CHUNK)?;
            if chunk.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            pos += chunk.len() as u64;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let file = f.reopen().unwrap();
        (f, file)
    }

    fn frames(bodies: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        for b in bodies {
            push_frame(&mut buf, &[b]);
        }
        buf
    }

    fn bodies_of(bytes: &[u8]) -> (Result<ScanEnd, BrokerError>, Vec<Vec<u8>>) {
        let (tmp, file) = file_with(bytes);
        let mut seen = Vec::new();
        let end = scan_file(&file, tmp.path(), 0, |_, body| {
            seen.push(body.to_vec());
            Ok(())
        });
        (end, seen)
    }

    #[test]
    fn round_trips_frames() {
        let buf = frames(&[b"one", b"two", b"three"]);
        let (end, seen) = bodies_of(&buf);
        assert_eq!(
            end.unwrap(),
            ScanEnd::Clean {
                end: buf.len() as u64
            }
        );
        assert_eq!(
            seen,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
    }

    #[test]
    fn partial_last_frame_is_torn() {
        let buf = frames(&[b"one", b"two"]);
        let cut = buf.len() - 2;
        let (end, seen) = bodies_of(&buf[..cut]);
        assert_eq!(
            end.unwrap(),
            ScanEnd::Torn {
                at: 11,
                why: "record extends past the end of the file"
            }
        );
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn bad_checksum_in_last_frame_is_torn() {
        let mut buf = frames(&[b"one", b"two"]);
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        let (end, _) = bodies_of(&buf);
        assert!(matches!(end.unwrap(), ScanEnd::Torn { at: 11, .. }));
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let mut buf = frames(&[b"one"]);
        buf.extend_from_slice(&[0u8; 100]);
        let (end, seen) = bodies_of(&buf);
        assert!(matches!(end.unwrap(), ScanEnd::Torn { at: 11, .. }));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn bad_checksum_in_the_middle_is_an_error() {
        let mut buf = frames(&[b"one", b"two", b"three"]);
        buf[FRAME_HEADER as usize] ^= 0xff;
        let (end, seen) = bodies_of(&buf);
        let err = end.unwrap_err().to_string();
        assert!(err.contains("at byte 0"), "{err}");
        assert!(seen.is_empty());
    }

    #[test]
    fn rejected_body_is_an_error() {
        let buf = frames(&[b"one"]);
        let (tmp, file) = file_with(&buf);
        let err = scan_file(&file, tmp.path(), 0, |_, _| Err("nope".into())).unwrap_err();
        assert!(err.to_string().contains("nope"));
    }
}
