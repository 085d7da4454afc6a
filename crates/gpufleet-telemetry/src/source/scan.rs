//! CSV record and field scanning, shared by the decoder and the file reader so both agree on
//! where a record ends.
//!
//! Rules: `,` separates fields; a record ends at `\n` (a `\r` before it is dropped) outside
//! quotes; a `"` opens a quoted field only as the first byte of a field, `""` inside it is one
//! quote and newlines inside are data; text between a closing quote and the next separator is kept
//! but flagged ([`JUNK_AFTER_QUOTE`]); a `"` anywhere else is an ordinary byte.

use memchr::{memchr, memchr2, memchr_iter};

/// The field was quoted; `start..end` excludes the quotes.
pub(crate) const QUOTED: u8 = 1;
/// The quoted field contains `""` escapes.
pub(crate) const ESCAPED: u8 = 2;
/// Text follows the closing quote before the separator (`"a"b,`).
pub(crate) const JUNK_AFTER_QUOTE: u8 = 4;

/// Where one field lies in the buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Field {
    /// First byte of the field, including an opening quote.
    pub(crate) raw_start: usize,
    /// First byte of the content.
    pub(crate) start: usize,
    /// End of the content (exclusive).
    pub(crate) end: usize,
    /// End of the field, including a closing quote and any text after it (exclusive).
    pub(crate) raw_end: usize,
    /// [`QUOTED`], [`ESCAPED`], [`JUNK_AFTER_QUOTE`].
    pub(crate) flags: u8,
}

/// What [`split_record`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Split {
    /// Where the next record starts.
    pub(crate) next: usize,
    /// Newlines inside quoted fields (the record spans `1 + extra_lines` physical lines).
    pub(crate) extra_lines: u64,
    /// A quoted field never closed before the end of the buffer.
    pub(crate) unterminated: bool,
    /// Some field has text after its closing quote ([`JUNK_AFTER_QUOTE`]).
    pub(crate) junk: bool,
}

/// The length of a blank line (`\n` or `\r\n`) starting at `pos`, or 0 when the line is not blank.
#[inline]
pub(crate) fn blank_line_len(buf: &[u8], pos: usize) -> usize {
    match buf.get(pos) {
        Some(b'\n') => 1,
        Some(b'\r') if buf.get(pos + 1) == Some(&b'\n') => 2,
        _ => 0,
    }
}

/// Splits the record starting at `pos` into `fields` (cleared first).
#[inline]
pub(crate) fn split_record(buf: &[u8], pos: usize, fields: &mut Vec<Field>) -> Split {
    fields.clear();
    let len = buf.len();
    let mut p = pos;
    let mut extra_lines = 0u64;
    let mut junk = false;
    loop {
        if p < len && buf[p] == b'"' {
            let raw_start = p;
            let start = p + 1;
            let mut q = start;
            let mut flags = QUOTED;
            let end = loop {
                match memchr(b'"', &buf[q..]) {
                    None => {
                        return Split {
                            next: len,
                            extra_lines,
                            unterminated: true,
                            junk: false,
                        }
                    }
                    Some(i) => {
                        let c = q + i;
                        if c + 1 < len && buf[c + 1] == b'"' {
                            flags |= ESCAPED;
                            q = c + 2;
                        } else {
                            break c;
                        }
                    }
                }
            };
            if memchr(b'\n', &buf[start..end]).is_some() {
                extra_lines += memchr_iter(b'\n', &buf[start..end]).count() as u64;
            }
            p = end + 1;
            let mut field = Field {
                raw_start,
                start,
                end,
                raw_end: p,
                flags,
            };
            match buf.get(p) {
                None => {
                    fields.push(field);
                    return Split {
                        next: len,
                        extra_lines,
                        unterminated: false,
                        junk,
                    };
                }
                Some(b',') => {
                    fields.push(field);
                    p += 1;
                }
                Some(b'\n') => {
                    fields.push(field);
                    return Split {
                        next: p + 1,
                        extra_lines,
                        unterminated: false,
                        junk,
                    };
                }
                Some(b'\r') if buf.get(p + 1) == Some(&b'\n') => {
                    fields.push(field);
                    return Split {
                        next: p + 2,
                        extra_lines,
                        unterminated: false,
                        junk,
                    };
                }
                Some(_) => {
                    field.flags |= JUNK_AFTER_QUOTE;
                    junk = true;
                    match memchr2(b',', b'\n', &buf[p..]) {
                        None => {
                            field.raw_end = strip_cr(buf, p, len);
                            fields.push(field);
                            return Split {
                                next: len,
                                extra_lines,
                                unterminated: false,
                                junk,
                            };
                        }
                        Some(i) => {
                            let at = p + i;
                            if buf[at] == b',' {
                                field.raw_end = at;
                                fields.push(field);
                                p = at + 1;
                            } else {
                                field.raw_end = strip_cr(buf, p, at);
                                fields.push(field);
                                return Split {
                                    next: at + 1,
                                    extra_lines,
                                    unterminated: false,
                                    junk,
                                };
                            }
                        }
                    }
                }
            }
        } else {
            match memchr2(b',', b'\n', &buf[p..]) {
                None => {
                    let end = strip_cr(buf, p, len);
                    fields.push(Field {
                        raw_start: p,
                        start: p,
                        end,
                        raw_end: end,
                        flags: 0,
                    });
                    return Split {
                        next: len,
                        extra_lines,
                        unterminated: false,
                        junk,
                    };
                }
                Some(i) => {
                    let at = p + i;
                    if buf[at] == b',' {
                        fields.push(Field {
                            raw_start: p,
                            start: p,
                            end: at,
                            raw_end: at,
                            flags: 0,
                        });
                        p = at + 1;
                    } else {
                        let end = strip_cr(buf, p, at);
                        fields.push(Field {
                            raw_start: p,
                            start: p,
                            end,
                            raw_end: end,
                            flags: 0,
                        });
                        return Split {
                            next: at + 1,
                            extra_lines,
                            unterminated: false,
                            junk,
                        };
                    }
                }
            }
        }
    }
}

/// `end`, less one when the byte before it (at or after `start`) is `\r`.
#[inline]
fn strip_cr(buf: &[u8], start: usize, end: usize) -> usize {
    if end > start && buf[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

/// Finds the end of the record starting at `pos` without splitting fields: the index just past its
/// terminating `\n` and the number of newlines inside quoted fields, or `None` when `buf` ends
/// before the record does (more bytes are needed, or, at end of input, the record is the last
/// one). Same rules as [`split_record`].
pub(crate) fn record_end(buf: &[u8], pos: usize) -> Option<(usize, u64)> {
    let mut p = pos;
    let mut extra_lines = 0u64;
    loop {
        let at = p + memchr2(b'"', b'\n', &buf[p..])?;
        if buf[at] == b'\n' {
            return Some((at + 1, extra_lines));
        }
        if at != pos && buf[at - 1] != b',' {
            // A quote inside an unquoted field (or after a closing quote) is an ordinary byte.
            p = at + 1;
            continue;
        }
        let mut q = at + 1;
        loop {
            let c = q + memchr(b'"', &buf[q..])?;
            match buf.get(c + 1) {
                // The next byte decides whether this is `""` or a closing quote.
                None => return None,
                Some(b'"') => q = c + 2,
                Some(_) => {
                    if memchr(b'\n', &buf[at + 1..c]).is_some() {
                        extra_lines += memchr_iter(b'\n', &buf[at + 1..c]).count() as u64;
                    }
                    p = c + 1;
                    break;
                }
            }
        }
    }
}

/// The content of a field with `""` unescaped (junk after a closing quote is dropped).
pub(crate) fn unescape<'a>(buf: &'a [u8], f: &Field) -> std::borrow::Cow<'a, [u8]> {
    let s = &buf[f.start..f.end];
    if f.flags & ESCAPED == 0 {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        out.push(s[i]);
        i += if s[i] == b'"' && s.get(i + 1) == Some(&b'"') {
            2
        } else {
            1
        };
    }
    std::borrow::Cow::Owned(out)
}

/// The unescaped content of a field as a string (invalid UTF-8 replaced).
pub(crate) fn field_string(buf: &[u8], f: &Field) -> String {
    match unescape(buf, f) {
        std::borrow::Cow::Borrowed(b) => String::from_utf8_lossy(b).into_owned(),
        std::borrow::Cow::Owned(v) => String::from_utf8(v)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> (Vec<String>, Split) {
        let mut f = Vec::new();
        let r = split_record(s.as_bytes(), 0, &mut f);
        (f.iter().map(|f| field_string(s.as_bytes(), f)).collect(), r)
    }

    #[test]
    fn plain_and_quoted_fields() {
        let (f, r) = split("a,\"b,c\",\"d\"\"e\",\n");
        assert_eq!(f, ["a", "b,c", "d\"e", ""]);
        assert_eq!(
            r,
            Split {
                next: 16,
                extra_lines: 0,
                unterminated: false,
                junk: false
            }
        );
    }

    #[test]
    fn crlf_and_eof() {
        assert_eq!(split("a,b\r\nx").0, ["a", "b"]);
        assert_eq!(split("a,\"b\"\r\nx").1.next, 7);
        assert_eq!(split("a,b\r").0, ["a", "b"]);
        assert_eq!(split("a,b,").0, ["a", "b", ""]);
    }

    #[test]
    fn embedded_newlines_are_counted() {
        let (f, r) = split("\"x\ny\nz\",1\nnext");
        assert_eq!(f, ["x\ny\nz", "1"]);
        assert_eq!(r.extra_lines, 2);
        assert_eq!(r.next, 10);
    }

    #[test]
    fn unterminated_and_junk() {
        assert!(split("a,\"bc\nd,e").1.unterminated);
        let mut f = Vec::new();
        split_record(b"\"a\"b,c\n", 0, &mut f);
        assert_eq!(f[0].flags & JUNK_AFTER_QUOTE, JUNK_AFTER_QUOTE);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn record_end_agrees_with_split() {
        let cases: &[&str] = &[
            "a,b\nc",
            "\"a\nb\",c\nd",
            "a\"b,c\nd",
            "\"a\"x\"y,\"q\nr\"\nz",
            "\"a\"\"\nb\"\n",
            ",\"\"\n",
            "x,\"\"\"\"\n",
        ];
        for c in cases {
            let mut f = Vec::new();
            let s = split_record(c.as_bytes(), 0, &mut f);
            assert_eq!(
                record_end(c.as_bytes(), 0),
                Some((s.next, s.extra_lines)),
                "{c:?}"
            );
        }
        assert_eq!(record_end(b"a,\"b", 0), None);
        assert_eq!(
            record_end(b"a,\"b\"", 0),
            None,
            "a closing quote at the end needs one more byte"
        );
        assert_eq!(record_end(b"a,b", 0), None);
    }

    #[test]
    fn blank_lines() {
        assert_eq!(blank_line_len(b"\nx", 0), 1);
        assert_eq!(blank_line_len(b"\r\nx", 0), 2);
        assert_eq!(blank_line_len(b"\rx", 0), 0);
        assert_eq!(blank_line_len(b"x", 0), 0);
    }
}
