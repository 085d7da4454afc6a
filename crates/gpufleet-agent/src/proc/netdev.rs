//! `/proc/net/dev`: cumulative bytes received and sent per interface.
//!
//! Two header lines (they contain `|`), then `iface: rx_bytes rx_packets … tx_bytes …` with 8
//! receive and 8 transmit columns. Old kernels wrote no space after the colon (`eth0:123`), so
//! the split is on the colon.

use super::ParseError;

const FILE: &str = "net/dev";

/// Byte counters of one interface since boot (or since the driver loaded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetCounters {
    /// Interface name.
    pub iface: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

/// Parses `/proc/net/dev`.
pub fn parse(text: &str) -> Result<Vec<NetCounters>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.contains('|') || line.trim().is_empty() {
            continue;
        }
        let Some((iface, rest)) = line.split_once(':') else {
            return Err(ParseError::new(FILE, i + 1, format!("no `:` after the interface name in {line:?}")));
        };
        let cols: Vec<&str> = rest.split_ascii_whitespace().collect();
        if cols.len() < 16 {
            return Err(ParseError::new(FILE, i + 1, format!("{} has {} counters, expected 16", iface.trim(), cols.len())));
        }
        let num = |j: usize| cols[j].parse::<u64>().map_err(|_| ParseError::new(FILE, i + 1, format!("counter {} of {} is not a number: {:?}", j + 1, iface.trim(), cols[j])));
        out.push(NetCounters { iface: iface.trim().to_owned(), rx_bytes: num(0)?, tx_bytes: num(8)? });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_format_without_space_after_colon() {
        let t = "Inter-|   Receive\n face |bytes\n  eth0:1234 5 0 0 0 0 0 0 99 3 0 0 0 0 0 0\n";
        assert_eq!(parse(t).unwrap(), vec![NetCounters { iface: "eth0".into(), rx_bytes: 1234, tx_bytes: 99 }]);
    }

    #[test]
    fn short_or_bad_lines_are_errors() {
        assert_eq!(parse("h|\nh|\neth0: 1 2 3\n").unwrap_err().line, 3);
        assert!(parse("eth0: 1 2 3 4 5 6 7 8 x 1 1 1 1 1 1 1\n").unwrap_err().reason.contains("counter 9"));
        assert!(parse("eth0 1 2\n").is_err());
    }
}
