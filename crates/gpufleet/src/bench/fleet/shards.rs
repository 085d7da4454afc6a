//! The simulated fleet of `bench fleet`, split over several `gpufleet sim fleet` child processes
//! (shards) on contiguous port ranges, so no process needs more descriptors than the hard
//! `RLIMIT_NOFILE` allows: a shard of H hosts holds H listeners plus up to H kept-alive
//! connections, and with the limit at 20,000 one process of 10,000 hosts had to evict idle
//! connections (clients reconnected). Host `i` of the whole fleet is `sim-host-<i>` on
//! `127.0.0.1:<base_port + i>` whatever shard serves it, so a checker sweeping contiguous ports
//! (the asyncio baseline) and the registry see one fleet.

use super::super::proc::ChildProc;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The running shards and the hosts they serve, in index order.
pub(super) struct Shards {
    procs: Vec<ChildProc>,
    /// `(name, agent_url)` of every host.
    pub(super) hosts: Vec<(String, String)>,
}

/// `(first index, hosts)` of each shard: `hosts` split into `ceil(hosts / per_shard)` shards of
/// nearly equal size.
pub(super) fn plan(hosts: usize, per_shard: usize) -> Vec<(usize, usize)> {
    let shards = hosts.div_ceil(per_shard.max(1)).max(1);
    let (base, extra) = (hosts / shards, hosts % shards);
    let mut out = Vec::with_capacity(shards);
    let mut first = 0;
    for s in 0..shards {
        let n = base + usize::from(s < extra);
        out.push((first, n));
        first += n;
    }
    out
}

impl Shards {
    /// Starts the shards of `hosts` hosts from `base_port` (at most `per_shard` hosts each) and
    /// waits until every one has listed its hosts (they listen by then).
    pub(super) async fn start(exe: &Path, hosts: usize, base_port: u16, per_shard: usize) -> Result<Shards> {
        let plan = plan(hosts, per_shard);
        let mut procs = Vec::with_capacity(plan.len());
        let mut outs = Vec::with_capacity(plan.len());
        for (s, (first, n)) in plan.iter().enumerate() {
            let port = usize::from(base_port) + first;
            let mut cmd = Command::new(exe);
            cmd.args(["sim", "fleet", "--json", "--hosts", &n.to_string(), "--base-port", &port.to_string(), "--seed", &(s + 1).to_string()])
                .env("GPUFLEET_LOG_LEVEL", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let mut p = ChildProc::spawn_graceful(&mut cmd, format!("gpufleet sim fleet (shard {s})"))?;
            outs.push(p.take_stdout().context("sim fleet stdout")?);
            procs.push(p);
        }
        let mut all = Vec::with_capacity(hosts);
        for (out, (first, n)) in outs.into_iter().zip(plan) {
            let urls: Vec<String> = tokio::task::spawn_blocking(move || {
                BufReader::new(out)
                    .lines()
                    .take(n)
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(&l?).map_err(std::io::Error::other)?;
                        Ok(v["agent_url"].as_str().unwrap_or_default().to_owned())
                    })
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .await??;
            if urls.len() != n {
                bail!("a simulated fleet shard listed {} of {n} hosts", urls.len());
            }
            all.extend(urls.into_iter().enumerate().map(|(i, url)| (format!("sim-host-{:05}", first + i), url)));
        }
        Ok(Shards { procs, hosts: all })
    }

    /// Processes serving the fleet.
    pub(super) fn count(&self) -> usize {
        self.procs.len()
    }

    /// Fails when a shard has exited.
    pub(super) fn ensure_running(&mut self) -> Result<()> {
        self.procs.iter_mut().try_for_each(ChildProc::ensure_running)
    }

    /// Stops every shard (SIGTERM, bounded wait).
    pub(super) async fn stop(mut self) {
        for p in &mut self.procs {
            let _ = p.terminate(Duration::from_secs(10), |_| {}).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn shards_cover_every_host_once_and_stay_under_the_bound() {
        assert_eq!(plan(10_000, 5_000), vec![(0, 5_000), (5_000, 5_000)]);
        assert_eq!(plan(10_001, 5_000), vec![(0, 3_334), (3_334, 3_334), (6_668, 3_333)]);
        assert_eq!(plan(7, 5_000), vec![(0, 7)]);
        assert_eq!(plan(3, 0), vec![(0, 1), (1, 1), (2, 1)]);
    }
}
