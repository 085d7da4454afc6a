//! `/proc/meminfo`: the memory and swap figures the agent reports, in bytes.
//!
//! Values are `kB` (KiB) in the file. `MemAvailable` exists since 3.14; before that it is
//! estimated as `MemFree + Buffers + Cached` (documented approximation; it over-counts
//! unreclaimable cache). `SwapCached` is kept because it tells swap that is really in use from
//! swap that merely still holds a copy.

use super::ParseError;
use std::collections::HashMap;

const FILE: &str = "meminfo";

/// Memory figures in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemFree`.
    pub free: u64,
    /// `MemAvailable`, or the pre-3.14 estimate.
    pub available: u64,
    /// True when `available` was estimated (no `MemAvailable` line).
    pub available_estimated: bool,
    /// `Buffers`.
    pub buffers: u64,
    /// `Cached`.
    pub cached: u64,
    /// `SwapTotal`.
    pub swap_total: u64,
    /// `SwapFree`.
    pub swap_free: u64,
    /// `SwapCached`.
    pub swap_cached: u64,
}

impl MemInfo {
    /// `SwapTotal − SwapFree`.
    pub fn swap_used(&self) -> u64 {
        self.swap_total.saturating_sub(self.swap_free)
    }
}

/// Parses `/proc/meminfo`.
pub fn parse(text: &str) -> Result<MemInfo, ParseError> {
    let mut values: HashMap<&str, u64> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, rest)) = line.split_once(':') else {
            return Err(ParseError::new(FILE, i + 1, format!("no `:` in {line:?}")));
        };
        let mut it = rest.split_ascii_whitespace();
        let Some(num) = it.next() else {
            return Err(ParseError::new(FILE, i + 1, format!("{key} has no value")));
        };
        let n: u64 = num.parse().map_err(|_| ParseError::new(FILE, i + 1, format!("{key} value is not a number: {num:?}")))?;
        let scale = match it.next() {
            None => 1,
            Some("kB") => 1024,
            Some(unit) => return Err(ParseError::new(FILE, i + 1, format!("{key} has unknown unit {unit:?}"))),
        };
        values.insert(key.trim(), n.saturating_mul(scale));
    }
    let get = |k: &str| values.get(k).copied();
    let need = |k: &'static str| get(k).ok_or_else(|| ParseError::new(FILE, 0, format!("missing {k}")));
    let total = need("MemTotal")?;
    let free = need("MemFree")?;
    let buffers = get("Buffers").unwrap_or(0);
    let cached = get("Cached").unwrap_or(0);
    let (available, available_estimated) = match get("MemAvailable") {
        Some(a) => (a, false),
        None => ((free + buffers + cached).min(total), true),
    };
    Ok(MemInfo {
        total,
        free,
        available,
        available_estimated,
        buffers,
        cached,
        swap_total: get("SwapTotal").unwrap_or(0),
        swap_free: get("SwapFree").unwrap_or(0),
        swap_cached: get("SwapCached").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kb_are_bytes_and_available_is_estimated_when_missing() {
        let m = parse("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 20 kB\nSwapCached: 5 kB\nSwapTotal: 50 kB\nSwapFree: 30 kB\nHugePages_Total: 0\n").unwrap();
        assert_eq!(m.total, 1_024_000);
        assert_eq!(m.available, 130 * 1024);
        assert!(m.available_estimated);
        assert_eq!(m.swap_used(), 20 * 1024);
        assert_eq!(m.swap_cached, 5 * 1024);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(parse("MemTotal: x kB\n").unwrap_err().line, 1);
        assert!(parse("MemFree: 1 kB\n").unwrap_err().reason.contains("MemTotal"));
        assert!(parse("garbage\n").is_err());
        assert!(parse("MemTotal: 1 MB\n").unwrap_err().reason.contains("unit"));
    }
}
