//! One-line `/proc` files: `loadavg`, `uptime`, and the `oom_kill` counter of `vmstat`.

use super::ParseError;

/// Parses `/proc/loadavg` (`0.12 0.51 0.30 1/142 13881`): the three load averages.
pub fn parse_loadavg(text: &str) -> Result<[f64; 3], ParseError> {
    let mut it = text.split_ascii_whitespace();
    let mut out = [0.0; 3];
    for (i, slot) in out.iter_mut().enumerate() {
        let f = it.next().ok_or_else(|| ParseError::new("loadavg", 1, format!("expected 3 load averages, found {i}")))?;
        *slot = f.parse().map_err(|_| ParseError::new("loadavg", 1, format!("load average {} is not a number: {f:?}", i + 1)))?;
    }
    Ok(out)
}

/// Parses `/proc/uptime` (`455.80 599.97`): seconds since boot.
pub fn parse_uptime(text: &str) -> Result<f64, ParseError> {
    let f = text.split_ascii_whitespace().next().ok_or_else(|| ParseError::new("uptime", 1, "empty file"))?;
    let v: f64 = f.parse().map_err(|_| ParseError::new("uptime", 1, format!("uptime is not a number: {f:?}")))?;
    if !v.is_finite() || v < 0.0 {
        return Err(ParseError::new("uptime", 1, format!("uptime out of range: {f:?}")));
    }
    Ok(v)
}

/// What the agent reads from `/proc/vmstat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmStat {
    /// Processes killed by the OOM killer since boot; `None` before kernel 4.13.
    pub oom_kill: Option<u64>,
}

/// Parses `/proc/vmstat` (`name value` lines).
pub fn parse_vmstat(text: &str) -> Result<VmStat, ParseError> {
    let mut out = VmStat::default();
    for (i, line) in text.lines().enumerate() {
        let mut it = line.split_ascii_whitespace();
        if it.next() == Some("oom_kill") {
            let v = it.next().unwrap_or("");
            out.oom_kill = Some(v.parse().map_err(|_| ParseError::new("vmstat", i + 1, format!("oom_kill is not a number: {v:?}")))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_uptime_vmstat() {
        assert_eq!(parse_loadavg("0.12 0.51 0.30 1/142 13881\n").unwrap(), [0.12, 0.51, 0.30]);
        assert!(parse_loadavg("0.1 0.2\n").is_err());
        assert!(parse_loadavg("0.1 x 0.3\n").unwrap_err().reason.contains("2"));
        assert_eq!(parse_uptime("455.80 599.97\n").unwrap(), 455.8);
        assert!(parse_uptime("").is_err());
        assert!(parse_uptime("-1 0").is_err());
        assert_eq!(parse_vmstat("pgfault 1\noom_kill 3\n").unwrap().oom_kill, Some(3));
        assert_eq!(parse_vmstat("pgfault 1\n").unwrap().oom_kill, None);
        assert_eq!(parse_vmstat("a 1\noom_kill -\n").unwrap_err().line, 2);
    }
}
