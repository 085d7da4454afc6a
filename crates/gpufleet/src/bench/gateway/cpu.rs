//! CPU time of a process tree (the process and every descendant, all threads) read from
//! `/proc/<pid>/stat`, as the peer script's `cpu_ticks` does: on a shared two-core box the
//! CPU a proxy spends per request is steadier than its requests/s, which depend on how much of
//! the box the neighbours leave it.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Clock ticks per second (`getconf CLK_TCK`; 100 when that fails, the Linux default).
fn ticks_per_s() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t: &f64| t > 0.0)
            .unwrap_or(100.0)
    })
}

/// `(ppid, utime + stime)` from the text of `/proc/<pid>/stat` (the command name may hold
/// spaces and parentheses: fields are counted after the last `)`).
fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// CPU seconds used so far by `root` and all its descendants (processes that exited and were
/// reaped count in their parent's `cutime`, not here: the trees measured here live on).
pub(super) fn tree_cpu_s(root: u32) -> Result<f64> {
    let mut procs: HashMap<u32, (u32, u64)> = HashMap::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read: skip it.
        if let Some(stat) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            procs.insert(pid, stat);
        }
    }
    anyhow::ensure!(procs.contains_key(&root), "process {root} is gone");
    let mut ticks = 0u64;
    for (&pid, &(_, t)) in &procs {
        // Walk up at most 64 parents looking for the root.
        let mut cur = pid;
        for _ in 0..64 {
            if cur == root {
                ticks += t;
                break;
            }
            match procs.get(&cur) {
                Some(&(ppid, _)) if ppid != 0 && ppid != cur => cur = ppid,
                _ => break,
            }
        }
    }
    Ok(ticks as f64 / ticks_per_s())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_are_parsed() {
        let line =
            "4242 (we(ird) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat(line), Some((17, 325)));
        assert_eq!(parse_stat("12 (x) S"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(30);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let s = tree_cpu_s(std::process::id()).unwrap();
        assert!(s > 0.0, "{s}");
    }
}
