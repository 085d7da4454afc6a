//! `/proc/stat`: the aggregate `cpu` line and the number of `cpuN` lines.
//!
//! The aggregate line has grown with the kernel: 4 fields (user nice system idle) before 2.5.41,
//! 7 (+ iowait irq softirq) from 2.6.0, 8 (+ steal) from 2.6.11, 9 (+ guest) from 2.6.24 and 10
//! (+ guest_nice) from 2.6.33. Missing fields read as 0. `guest` and `guest_nice` are already
//! counted in `user` and `nice`, so they are kept but left out of the total.

use super::ParseError;
use crate::wire::CpuPercent;

const FILE: &str = "stat";

/// Cumulative CPU time since boot, in USER_HZ ticks, summed over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// User mode (includes guest).
    pub user: u64,
    /// Niced user mode (includes guest_nice).
    pub nice: u64,
    /// Kernel mode.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Waiting for I/O.
    pub iowait: u64,
    /// Hardware interrupts.
    pub irq: u64,
    /// Soft interrupts.
    pub softirq: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
    /// Running a guest (part of `user`).
    pub guest: u64,
    /// Running a niced guest (part of `nice`).
    pub guest_nice: u64,
    /// How many numeric fields the kernel wrote (4 to 10).
    pub fields: usize,
}

/// What the agent takes from `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// The aggregate `cpu` line.
    pub cpu: CpuTimes,
    /// Number of `cpuN` lines (online logical CPUs).
    pub cpus: u32,
}

/// Parses `/proc/stat`.
pub fn parse(text: &str) -> Result<Stat, ParseError> {
    let mut cpu = None;
    let mut cpus = 0u32;
    for (i, line) in text.lines().enumerate() {
        let mut it = line.split_ascii_whitespace();
        let Some(label) = it.next() else { continue };
        if label == "cpu" {
            cpu = Some(parse_cpu_fields(it, i + 1)?);
        } else if label.len() > 3 && label.starts_with("cpu") && label[3..].bytes().all(|b| b.is_ascii_digit()) {
            cpus += 1;
        }
    }
    let cpu = cpu.ok_or_else(|| ParseError::new(FILE, 0, "no aggregate `cpu` line"))?;
    Ok(Stat { cpu, cpus })
}

fn parse_cpu_fields<'a>(fields: impl Iterator<Item = &'a str>, line: usize) -> Result<CpuTimes, ParseError> {
    let mut v = [0u64; 10];
    let mut n = 0;
    for f in fields {
        if n == v.len() {
            // A future kernel may add fields; the first ten keep their meaning.
            break;
        }
        v[n] = f.parse().map_err(|_| ParseError::new(FILE, line, format!("cpu field {} is not a number: {f:?}", n + 1)))?;
        n += 1;
    }
    if n < 4 {
        return Err(ParseError::new(FILE, line, format!("cpu line has {n} fields, expected at least 4")));
    }
    Ok(CpuTimes {
        user: v[0],
        nice: v[1],
        system: v[2],
        idle: v[3],
        iowait: v[4],
        irq: v[5],
        softirq: v[6],
        steal: v[7],
        guest: v[8],
        guest_nice: v[9],
        fields: n,
    })
}

impl CpuTimes {
    fn modes(&self) -> [u64; 8] {
        [self.user, self.nice, self.system, self.idle, self.iowait, self.irq, self.softirq, self.steal]
    }

    /// Sum of the eight modes (guest time excluded: it is inside `user`/`nice`).
    pub fn total(&self) -> u64 {
        self.modes().iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// Percent by mode since boot (what a first sample can give). `None` when all are 0.
    pub fn percent_since_boot(&self) -> Option<CpuPercent> {
        percent(self.modes())
    }

    /// Percent by mode between `prev` and `self`. A counter that went backwards (iowait does on
    /// some NO_HZ kernels) counts as 0. `None` when no tick elapsed.
    pub fn percent_since(&self, prev: &CpuTimes) -> Option<CpuPercent> {
        let (a, b) = (self.modes(), prev.modes());
        let mut d = [0u64; 8];
        for i in 0..8 {
            d[i] = a[i].saturating_sub(b[i]);
        }
        percent(d)
    }
}

fn percent(d: [u64; 8]) -> Option<CpuPercent> {
    let total: u64 = d.iter().fold(0u64, |a, b| a.saturating_add(*b));
    if total == 0 {
        return None;
    }
    let p = |x: u64| x as f64 * 100.0 / total as f64;
    Some(CpuPercent {
        user: p(d[0]),
        nice: p(d[1]),
        system: p(d[2]),
        idle: p(d[3]),
        iowait: p(d[4]),
        irq: p(d[5]),
        softirq: p(d[6]),
        steal: p(d[7]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_counts_4_7_8_9_10_are_read_and_extra_fields_ignored() {
        for (line, fields, steal) in [
            ("cpu 1 2 3 4\n", 4, 0),
            ("cpu  1 2 3 4 5 6 7\n", 7, 0),
            ("cpu 1 2 3 4 5 6 7 8\n", 8, 8),
            ("cpu 1 2 3 4 5 6 7 8 9\n", 9, 8),
            ("cpu 1 2 3 4 5 6 7 8 9 10\n", 10, 8),
            ("cpu 1 2 3 4 5 6 7 8 9 10 11\n", 10, 8),
        ] {
            let s = parse(line).unwrap();
            assert_eq!(s.cpu.fields, fields, "{line}");
            assert_eq!(s.cpu.steal, steal, "{line}");
            assert_eq!(s.cpu.user, 1);
        }
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        assert_eq!(parse("intr 1\ncpu 1 2 x 4\n").unwrap_err().line, 2);
        assert!(parse("cpu 1 2 3\n").unwrap_err().reason.contains("3 fields"));
        assert!(parse("cpu0 1 2 3 4\n").unwrap_err().reason.contains("no aggregate"));
        assert!(parse("").is_err());
    }

    #[test]
    fn percent_from_two_samples_with_steal() {
        let a = parse("cpu 100 0 100 700 0 0 0 100 0 0\ncpu0 1 1 1 1\ncpu1 1 1 1 1\n").unwrap();
        let b = parse("cpu 200 0 150 900 50 0 0 150 80 0\n").unwrap();
        assert_eq!(a.cpus, 2);
        let p = b.cpu.percent_since(&a.cpu).unwrap();
        // deltas: user 100, system 50, idle 200, iowait 50, steal 50 → total 450 (guest not added)
        assert!((p.user - 100.0 * 100.0 / 450.0).abs() < 1e-9);
        assert!((p.steal - 50.0 * 100.0 / 450.0).abs() < 1e-9);
        let sum = p.user + p.nice + p.system + p.idle + p.iowait + p.irq + p.softirq + p.steal;
        assert!((sum - 100.0).abs() < 1e-9);
        assert!(b.cpu.percent_since(&b.cpu).is_none());
        let back = CpuTimes { iowait: 0, user: b.cpu.user + 10, ..b.cpu };
        let p = back.percent_since(&b.cpu).unwrap();
        assert_eq!((p.iowait, p.user), (0.0, 100.0));
    }
}
