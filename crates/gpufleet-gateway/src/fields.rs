//! The routing fields of a request body (`model`, `stream`, `async`, `priority`, `endpoint`):
//! [`routing`] reads them with a scan of the top-level object. The gateway parses a body only as
//! far as routing needs; the other values (`messages`, `input`, …) are skipped by their
//! structure (strings, brackets), not validated — the backend reads and validates them. Whatever
//! the scan does not take as given (an escape in a key or a routing value, a routing field twice,
//! a routing value of another type, bytes that are not JSON structure, a body that is not an
//! object) goes to serde_json, which reads it the same way or says what is wrong.
//!
//! Why: serde_json walked and validated every value of every body — about 2,000 of the ~21,500
//! instructions of a proxied chat completion (callgrind, `docs/benchmarks.md`).

use crate::proxy::Endpoint;
use serde::de::value::StrDeserializer;
use serde::Deserialize;
use std::borrow::Cow;

/// The routing fields, borrowed from the body where no escape forces a copy.
#[derive(Deserialize, Debug, Default, PartialEq)]
pub(crate) struct Routing<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed")]
    pub(crate) model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    #[serde(default, rename = "async")]
    pub(crate) run_async: Option<bool>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    pub(crate) priority: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) endpoint: Option<Endpoint>,
}

/// An optional string borrowed from the body unless it has escapes (serde borrows a `Cow` only
/// as a field of its own, not inside an `Option`).
fn borrowed<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Field<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Field<'a>>::deserialize(d)?.map(|f| f.0))
}

/// The routing fields of `body`, or serde_json's error.
pub(crate) fn routing(body: &[u8]) -> Result<Routing<'_>, serde_json::Error> {
    match scan(body) {
        Some(r) => Ok(r),
        None => serde_json::from_slice(body),
    }
}

/// Deepest nesting the scan follows (deeper bodies go to serde_json).
const MAX_DEPTH: u32 = 64;

/// The scan: `None` wherever serde_json should decide.
fn scan(b: &[u8]) -> Option<Routing<'_>> {
    let mut s = Scan { b, i: 0 };
    let mut r = Routing::default();
    let mut seen = 0u8;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            let key = s.plain_string()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let bit = match key {
                b"model" => 1,
                b"stream" => 2,
                b"async" => 4,
                b"priority" => 8,
                b"endpoint" => 16,
                _ => 0,
            };
            if bit != 0 {
                if seen & bit != 0 {
                    return None; // serde_json: "duplicate field"
                }
                seen |= bit;
            }
            match bit {
                1 => r.model = s.opt_str()?.map(Cow::Borrowed),
                2 => r.stream = s.opt_bool()?,
                4 => r.run_async = s.opt_bool()?,
                8 => r.priority = s.opt_str()?.map(Cow::Borrowed),
                16 => {
                    // The enum's own serde names: an unknown one goes to serde_json for its error.
                    r.endpoint = match s.opt_str()? {
                        None => None,
                        Some(name) => Some(Endpoint::deserialize(StrDeserializer::<serde::de::value::Error>::new(name)).ok()?),
                    }
                }
                _ => s.skip_value()?,
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == b.len()).then_some(r)
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string without escapes or control characters (its bytes, quotes excluded). A plain
    /// loop: these strings are short, shorter than a vectorised search takes to set up.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.next()? {
                b'"' => return Some(&self.b[start..self.i - 1]),
                b'\\' | 0..=0x1f => return None,
                _ => {}
            }
        }
    }

    /// `null` or a plain string (valid UTF-8).
    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        if self.literal(b"null") {
            return Some(None);
        }
        Some(Some(std::str::from_utf8(self.plain_string()?).ok()?))
    }

    /// `null`, `true` or `false`.
    fn opt_bool(&mut self) -> Option<Option<bool>> {
        if self.literal(b"null") {
            Some(None)
        } else if self.literal(b"true") {
            Some(Some(true))
        } else if self.literal(b"false") {
            Some(Some(false))
        } else {
            None
        }
    }

    /// Takes `word` if it is next and ends there.
    fn literal(&mut self, word: &[u8]) -> bool {
        let end = self.i + word.len();
        let ends = !matches!(self.b.get(end), Some(c) if c.is_ascii_alphanumeric());
        if self.b.get(self.i..end) == Some(word) && ends {
            self.i = end;
            true
        } else {
            false
        }
    }

    /// Skips one value by its structure: a string (escapes honoured), an object or array
    /// (brackets matched, strings inside skipped whole), or a scalar (up to the next delimiter).
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => self.skip_nested(),
            _ => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    if !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'a'..=b'z') {
                        return None;
                    }
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }

    /// Skips a string: the first bytes one by one (most strings here are short), the rest of a
    /// long one (a prompt) with a vectorised search.
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        let mut short = 16u32;
        loop {
            if short == 0 {
                let at = memchr::memchr2(b'"', b'\\', self.b.get(self.i..)?)?;
                self.i += at;
            }
            short = short.saturating_sub(1);
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => {
                    self.next()?; // the escaped byte
                }
                _ => {}
            }
        }
    }

    /// An object or array: brackets must match (a bit per level: 1 = object).
    fn skip_nested(&mut self) -> Option<()> {
        let mut stack = 0u64;
        let mut depth = 0u32;
        loop {
            match self.peek()? {
                b'"' => {
                    self.skip_string()?;
                    continue;
                }
                c @ (b'{' | b'[') => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    stack = stack << 1 | u64::from(c == b'{');
                    depth += 1;
                }
                c @ (b'}' | b']') => {
                    if stack & 1 != u64::from(c == b'}') {
                        return None;
                    }
                    stack >>= 1;
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return Some(());
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests;
