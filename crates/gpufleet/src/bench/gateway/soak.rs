//! `bench gateway --soak SECONDS`: gpufleet alone under 64 connections for a long run, its
//! resident memory (`VmRSS`) sampled every [`SAMPLE_EVERY`]; the report gives the first, last
//! and largest sample and the least-squares slope over the second half of the run in MB per
//! minute (steady memory: about zero once pools and caches are warm).

use super::procs::ChildProc;
use super::wrk;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

/// Interval between two RSS samples.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Connections of the soak run.
pub(super) const CONNS: u32 = 64;
const POLL: Duration = Duration::from_millis(100);

/// One RSS sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Sample {
    /// Seconds since the measured run started.
    pub(super) t_s: f64,
    /// Resident set size, MB (10^6 bytes).
    pub(super) rss_mb: f64,
}

/// What a soak run found.
#[derive(Debug)]
pub(super) struct SoakReport {
    pub(super) seconds: u64,
    pub(super) samples: Vec<Sample>,
    pub(super) wrk: wrk::WrkResult,
    pub(super) peak_mb: f64,
}

/// `VmRSS` of a live process, MB.
fn vm_rss_mb(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb: u64 = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .with_context(|| format!("{path} has no VmRSS line"))?;
    Ok(kb as f64 * 1024.0 / 1e6)
}

/// Loads `url` (served by `gateway`) at [`CONNS`] connections for `seconds` after `warmup_s`,
/// sampling the gateway's RSS at the start and every [`SAMPLE_EVERY`].
pub(super) fn run(
    gateway: &mut ChildProc,
    script: &Path,
    url: &str,
    warmup_s: u64,
    seconds: u64,
) -> Result<SoakReport> {
    if warmup_s > 0 {
        let (st, _) = wrk::finish(wrk::start(script, url, CONNS, warmup_s, false)?, warmup_s)?;
        anyhow::ensure!(st.success(), "wrk warm-up failed: {st}");
    }
    let mut load = wrk::start(script, url, CONNS, seconds, true)?;
    let mut out = load.take_stdout().context("wrk's stdout")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds) + wrk::GRACE;
    let mut samples = Vec::new();
    let mut next = started;
    let status = loop {
        if let Some(st) = load.try_exited()? {
            break st;
        }
        let now = Instant::now();
        if now >= next {
            gateway.ensure_running()?;
            let rss_mb = vm_rss_mb(gateway.pid())?;
            let t_s = now.duration_since(started).as_secs_f64();
            eprintln!("  soak t={t_s:>6.0} s  gpufleet RSS {rss_mb:.1} MB");
            samples.push(Sample { t_s, rss_mb });
            next += SAMPLE_EVERY;
        }
        if now >= deadline {
            bail!("wrk did not finish the soak run in time; killed it");
        }
        std::thread::sleep(POLL);
    };
    // The state after the load: one last sample.
    gateway.ensure_running()?;
    samples.push(Sample {
        t_s: started.elapsed().as_secs_f64(),
        rss_mb: vm_rss_mb(gateway.pid())?,
    });
    let mut text = String::new();
    out.read_to_string(&mut text)?;
    anyhow::ensure!(status.success(), "wrk failed ({status}): {}", text.trim());
    Ok(SoakReport {
        seconds,
        samples,
        wrk: wrk::parse(&text)?,
        peak_mb: super::procs::vm_hwm_mb(gateway.pid())?,
    })
}

/// Least-squares slope of RSS over time for the samples in the second half of the run, in MB
/// per minute; `None` with fewer than two such samples.
pub(super) fn slope_mb_per_min(samples: &[Sample], seconds: u64) -> Option<f64> {
    let half = seconds as f64 / 2.0;
    let pts: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= half).collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mt = pts.iter().map(|s| s.t_s).sum::<f64>() / n;
    let mr = pts.iter().map(|s| s.rss_mb).sum::<f64>() / n;
    let var: f64 = pts.iter().map(|s| (s.t_s - mt).powi(2)).sum();
    if var == 0.0 {
        return None;
    }
    let cov: f64 = pts.iter().map(|s| (s.t_s - mt) * (s.rss_mb - mr)).sum();
    Some(cov / var * 60.0)
}

impl SoakReport {
    /// Prints the report (text or one JSON object).
    pub(super) fn print(&self, json_out: bool) -> Result<()> {
        let first = self.samples.first().map_or(0.0, |s| s.rss_mb);
        let last = self.samples.last().map_or(0.0, |s| s.rss_mb);
        let max = self.samples.iter().map(|s| s.rss_mb).fold(0.0, f64::max);
        let slope = slope_mb_per_min(&self.samples, self.seconds);
        if json_out {
            let out = json!({
                "soak_seconds": self.seconds, "connections": CONNS,
                "sample_every_s": SAMPLE_EVERY.as_secs(),
                "rps": self.wrk.rps, "p50_ms": self.wrk.p50_ms, "p99_ms": self.wrk.p99_ms,
                "non_2xx": self.wrk.non_2xx, "socket_errors": self.wrk.socket_errors,
                "rss_first_mb": first, "rss_last_mb": last, "rss_max_mb": max,
                "rss_peak_vmhwm_mb": self.peak_mb,
                "rss_slope_mb_per_min_second_half": slope,
                "samples": self.samples.iter().map(|s| json!({"t_s": s.t_s, "rss_mb": s.rss_mb})).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        println!(
            "gpufleet soak: {} s at {CONNS} connections, RSS every {} s ({} samples)",
            self.seconds,
            SAMPLE_EVERY.as_secs(),
            self.samples.len()
        );
        println!(
            "  load: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, non-2xx {}, socket errors {}",
            self.wrk.rps,
            self.wrk.p50_ms,
            self.wrk.p99_ms,
            self.wrk.non_2xx,
            self.wrk.socket_errors
        );
        println!(
            "  RSS first {first:.1} MB, last {last:.1} MB, max {max:.1} MB (VmHWM {:.1} MB)",
            self.peak_mb
        );
        match slope {
            Some(s) => println!("  RSS slope over the second half: {s:+.3} MB/min"),
            None => println!("  RSS slope: too few samples in the second half"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_s: f64, rss_mb: f64) -> Sample {
        Sample { t_s, rss_mb }
    }

    #[test]
    fn the_slope_uses_only_the_second_half() {
        // Growth early (warming up), flat later: the second half's slope is zero.
        let samples = [
            s(0.0, 10.0),
            s(10.0, 20.0),
            s(20.0, 25.0),
            s(30.0, 25.0),
            s(40.0, 25.0),
        ];
        assert_eq!(slope_mb_per_min(&samples, 40), Some(0.0));
        // 1 MB per 10 s = 6 MB/min.
        let rising = [s(20.0, 1.0), s(30.0, 2.0), s(40.0, 3.0)];
        let got = slope_mb_per_min(&rising, 40).unwrap();
        assert!((got - 6.0).abs() < 1e-9, "{got}");
        assert_eq!(slope_mb_per_min(&[s(30.0, 1.0)], 40), None);
    }

    #[test]
    fn rss_of_this_process_is_read() {
        let mb = vm_rss_mb(std::process::id()).unwrap();
        assert!(mb > 0.1, "{mb}");
    }
}
