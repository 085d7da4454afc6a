//! Query-string parsing that names the parameter at fault and says what is accepted.

use crate::error::ApiError;
use gpufleet_core::time::{parse_duration_ms, parse_query_time};
use std::collections::HashMap;

/// Parsed query parameters of one request.
pub struct Params {
    map: HashMap<String, String>,
}

impl Params {
    /// Parses a raw query string; rejects parameters not in `allowed`.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut map = HashMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k).ok_or_else(|| ApiError::BadRequest(format!("query parameter name {k:?} is not valid percent-encoding")))?;
            let v = decode(v).ok_or_else(|| ApiError::BadRequest(format!("parameter '{k}': value is not valid percent-encoding")))?;
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::BadRequest(format!("unknown parameter '{k}' (allowed: {})", allowed.join(", "))));
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::BadRequest(format!("parameter '{k}' given twice; give it once (use commas for lists)")));
            }
        }
        Ok(Self { map })
    }

    /// A string parameter.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// A comma-separated list.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.str(name).map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()).unwrap_or_default()
    }

    /// A time: RFC 3339, epoch, `now`, or relative like `-1h`.
    pub fn time(&self, name: &str, now_ms: i64) -> Result<Option<i64>, ApiError> {
        self.str(name)
            .map(|s| parse_query_time(s, now_ms).map_err(|e| ApiError::BadRequest(format!("parameter '{name}': {e}; use RFC 3339 (2025-07-18T20:42:34Z), epoch seconds, 'now' or a relative time like -1h"))))
            .transpose()
    }

    /// A positive duration like `1m`.
    pub fn duration_ms(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.str(name)
            .map(|s| match parse_duration_ms(s) {
                Ok(d) if d > 0 => Ok(d),
                Ok(_) => Err(ApiError::BadRequest(format!("parameter '{name}': must be greater than zero"))),
                Err(why) => Err(ApiError::BadRequest(format!("parameter '{name}': {why} (e.g. 30s, 1m, 1h)"))),
            })
            .transpose()
    }

    /// A positive integer no larger than `max`.
    pub fn usize(&self, name: &str, max: usize) -> Result<Option<usize>, ApiError> {
        self.str(name)
            .map(|s| match s.parse::<usize>() {
                Ok(n) if n >= 1 && n <= max => Ok(n),
                _ => Err(ApiError::BadRequest(format!("parameter '{name}': must be an integer from 1 to {max}, got {s:?}"))),
            })
            .transpose()
    }

    /// One of a fixed set of words.
    pub fn one_of<'a>(&self, name: &str, choices: &[&'a str]) -> Result<Option<&'a str>, ApiError> {
        match self.str(name) {
            None => Ok(None),
            Some(s) => choices
                .iter()
                .find(|c| c.eq_ignore_ascii_case(s))
                .copied()
                .map(Some)
                .ok_or_else(|| ApiError::BadRequest(format!("parameter '{name}': {s:?} is not one of {}", choices.join(", ")))),
        }
    }
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unknown_and_bad_parameters() {
        let e = Params::parse(Some("metrik=x"), &["metric"]).err().unwrap();
        assert!(e.to_string().contains("unknown parameter 'metrik'"));
        let p = Params::parse(Some("start=yesterday&limit=0&step=1q"), &["start", "limit", "step"]).unwrap();
        assert!(p.time("start", 0).unwrap_err().to_string().contains("parameter 'start'"));
        assert!(p.usize("limit", 10).unwrap_err().to_string().contains("parameter 'limit'"));
        assert!(p.duration_ms("step").unwrap_err().to_string().contains("parameter 'step'"));
    }

    #[test]
    fn decodes_percent_and_relative_times() {
        let p = Params::parse(Some("start=2025-07-18T20%3A42%3A34Z&end=-1h&metric=A,B"), &["start", "end", "metric"]).unwrap();
        assert_eq!(p.time("start", 0).unwrap(), Some(1_752_871_354_000));
        assert_eq!(p.time("end", 7_200_000).unwrap(), Some(3_600_000));
        assert_eq!(p.list("metric"), vec!["A", "B"]);
        assert!(Params::parse(Some("a=%zz"), &["a"]).is_err());
        assert!(Params::parse(Some("a=1&a=2"), &["a"]).is_err());
    }
}
