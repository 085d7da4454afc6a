//! System test of issue 5's "with two server processes sharing PostgreSQL, each host is checked
//! once per cycle", with real processes: a simulated fleet (`gpufleet sim fleet --register`) and
//! two `gpufleet server --roles api,fleet` replicas on one PostgreSQL schema prefix.
//!
//! The design under test (`gpufleet-fleet/src/health_worker.rs`): each replica ticks every
//! `health_interval` and runs a cycle only while it holds the lease `fleet.health` (two intervals
//! long, renewed every tick) in the shared `<prefix>_meta.leases` table; the other replica skips.
//! So the test asserts, from the PostgreSQL health-check history (the ground truth, not the
//! replicas' own counters):
//! - the history splits into cycles (checks at most half an interval apart), and no cycle holds a
//!   host twice: a second replica checking at any phase offset would put two checks of a host
//!   within half an interval of each other (`the_cycle_split_catches_a_second_checker_at_any_offset`);
//! - every cycle after the hosts were registered holds every host (none missing), except one cut
//!   by the SIGKILL and the last one, which may still be in progress when the history is read;
//! - while the lease holder lives, the other replica did no check and skipped its ticks;
//! - after the holder is SIGKILLed the other replica takes the lease within a bounded number of
//!   its own ticks (the lease lasts two intervals) and the property holds on across the takeover;
//! - a cycle whose checks all hang for longer than the lease (no check finishes for ~7.4 s) keeps
//!   the lease, so the other replica does not start a second cycle over the same hosts (the
//!   holder used to renew only when a check finished);
//! - a holder whose lease is taken in the middle of a long cycle (a third holder written into
//!   the leases table) starts no new check in it, counts the loss (`cycles_lease_lost`), and while
//!   the lease is held elsewhere neither replica checks; once it is free the cycles go on.
//!
//! PostgreSQL must be running; when it is not, the test fails with the command that starts it.
//! The schemas it creates are dropped afterwards.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Simulated hosts.
const HOSTS: usize = 40;
/// `fleet.health_interval` of both replicas, ms.
const INTERVAL_MS: i64 = 2000;
/// Complete cycles to see before the kill and after the takeover.
const CYCLES_EACH_SIDE: usize = 3;
/// Ticks the surviving replica may skip after the kill: two while the dead holder's lease runs
/// out, one between reading its counter and the kill, one of slack.
const TAKEOVER_TICKS: u64 = 4;

fn now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

/// The PostgreSQL schemas of one run (`<prefix>_meta`, `_fleet`, `_metrics`, `_jobs`…), dropped
/// on drop.
struct Schemas {
    prefix: String,
}

impl Schemas {
    fn new() -> Schemas {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
        Schemas { prefix: format!("gft_replicas_{}_{nanos}", std::process::id()) }
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let list = format!("SELECT nspname FROM pg_namespace WHERE nspname LIKE '{}\\_%'", self.prefix);
        for schema in query(&list).unwrap_or_default().lines() {
            let _ = query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

/// Runs one SQL statement through `psql`; its rows, one a line, columns split by `|`.
fn query(sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([&test_postgres_url(), "-At", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .map_err(|e| format!("psql must be on PATH: {e}"))?;
    if !out.status.success() {
        return Err(format!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One `gpufleet server --roles api,fleet` replica, killed on drop.
struct Replica {
    child: KilledOnDrop,
    url: String,
}

impl Replica {
    fn start(schemas: &Schemas, data: &Path, health_timeout: &str, env: &[(&str, &str)]) -> Replica {
        let port = free_port();
        let child = Command::new(BIN)
            .args(["server", "--roles", "api,fleet", "--database", &test_postgres_url(), "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data)
            .env("GPUFLEET_DATABASE_SCHEMA_PREFIX", &schemas.prefix)
            .env("GPUFLEET_FLEET_HEALTH_INTERVAL", format!("{INTERVAL_MS}ms"))
            .env("GPUFLEET_FLEET_HEALTH_TIMEOUT", health_timeout)
            .env("GPUFLEET_FLEET_UNREACHABLE_AFTER", "4")
            .env("GPUFLEET_ADMIN_KEY", admin_key())
            .env("GPUFLEET_LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gpufleet server");
        let mut r = Replica { child: KilledOnDrop(child), url: format!("http://127.0.0.1:{port}") };
        wait_until(Duration::from_secs(60), "replica /health", || {
            if let Some(status) = r.child.0.try_wait().expect("replica status") {
                panic!("the replica exited before answering /health: {status} (its error is above)");
            }
            get(&format!("{}/health", r.url)).is_some()
        });
        r
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// This replica's `fleet.health` worker report.
    fn health_worker(&self) -> Option<serde_json::Value> {
        let v = get(&format!("{}/api/v1/fleet/workers/status", self.url))?;
        v["workers"].as_array()?.iter().find(|w| w["name"] == "fleet.health").cloned()
    }

    fn counter(&self, field: &str) -> Option<u64> {
        self.health_worker()?[field].as_u64()
    }

    /// Names of the registered hosts this replica lists.
    fn host_names(&self) -> Vec<String> {
        let hosts = get(&format!("{}/api/v1/hosts", self.url)).and_then(|v| v["hosts"].as_array().cloned()).unwrap_or_default();
        let mut names: Vec<String> = hosts.iter().filter(|h| h["registered"] == true).filter_map(|h| h["name"].as_str().map(str::to_owned)).collect();
        names.sort();
        names
    }

    fn kill9(&mut self) {
        self.child.kill9();
    }
}

/// Checks closer together than half an interval, with how many times each host appears.
#[derive(Debug)]
struct Cycle {
    first_ms: i64,
    last_ms: i64,
    per_host: BTreeMap<i64, u32>,
}

impl Cycle {
    fn duplicates(&self) -> Vec<(i64, u32)> {
        self.per_host.iter().filter(|(_, n)| **n > 1).map(|(h, n)| (*h, *n)).collect()
    }

    fn complete(&self, hosts: &[i64]) -> bool {
        hosts.iter().all(|h| self.per_host.get(h) == Some(&1)) && self.per_host.len() == hosts.len()
    }
}

/// The health-check history `(host_id, at_ms)`, oldest first.
fn history(prefix: &str) -> Result<Vec<(i64, i64)>, String> {
    let text = query(&format!("SELECT host_id, at_ms FROM {prefix}_fleet.health_checks ORDER BY at_ms, host_id"))?;
    text.lines()
        .map(|l| {
            let (h, at) = l.split_once('|').ok_or_else(|| format!("bad row {l:?}"))?;
            Ok((h.parse().map_err(|e| format!("{l:?}: {e}"))?, at.parse().map_err(|e| format!("{l:?}: {e}"))?))
        })
        .collect()
}

/// Splits the history where two checks are more than half an interval apart.
fn cycles(rows: &[(i64, i64)]) -> Vec<Cycle> {
    let mut out: Vec<Cycle> = Vec::new();
    for &(host, at) in rows {
        match out.last_mut() {
            Some(c) if at - c.last_ms <= INTERVAL_MS / 2 => {
                c.last_ms = at;
                *c.per_host.entry(host).or_default() += 1;
            }
            _ => out.push(Cycle { first_ms: at, last_ms: at, per_host: BTreeMap::from([(host, 1)]) }),
        }
    }
    out
}

/// Fails the test on a cycle that checked a host twice.
fn assert_no_duplicates(all: &[Cycle]) {
    for (i, c) in all.iter().enumerate() {
        assert!(c.duplicates().is_empty(), "cycle {i} at {} ms checked hosts twice (host, checks): {:?}", c.first_ms, c.duplicates());
    }
}

/// Complete cycles that started after `since_ms` (the history read now); fails the test as soon
/// as the history shows a host checked twice in a cycle.
fn complete_since(prefix: &str, hosts: &[i64], since_ms: i64) -> usize {
    let Ok(rows) = history(prefix) else { return 0 };
    let all = cycles(&rows);
    assert_no_duplicates(&all);
    all.iter().filter(|c| c.first_ms > since_ms && c.complete(hosts)).count()
}

/// `pid` of the replica holding the `fleet.health` lease (holder ids are `pid<PID>-<random>`).
fn lease_holder_pid(prefix: &str) -> Option<u32> {
    let holder = query(&format!("SELECT holder FROM {prefix}_meta.leases WHERE name = 'fleet.health'")).ok()?;
    holder.trim().strip_prefix("pid")?.split('-').next()?.parse().ok()
}

/// Two replicas on one schema prefix and a simulated fleet registered through the first; the
/// replica holding the lease first is `holder`. Fields drop in order: processes, then schemas.
struct Pair {
    _sim: KilledOnDrop,
    holder: Replica,
    standby: Replica,
    /// Host ids in the registry.
    hosts: Vec<i64>,
    _dir: tempfile::TempDir,
    schemas: Schemas,
}

impl Pair {
    fn start(health_timeout: &str, sim_args: &[&str], env: &[(&str, &str)]) -> Pair {
        require_postgres();
        let schemas = Schemas::new();
        let dir = tempfile::tempdir().unwrap();
        // One after the other: the first replica migrates the schemas and bootstraps the admin key.
        let a = Replica::start(&schemas, &dir.path().join("a"), health_timeout, env);
        let b = Replica::start(&schemas, &dir.path().join("b"), health_timeout, env);

        let mut sim = Command::new(BIN)
            .args(["sim", "fleet", "--hosts", &HOSTS.to_string(), "--json", "--register", &a.url])
            .args(sim_args)
            .env("GPUFLEET_API_KEY", admin_key())
            .env("GPUFLEET_LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn gpufleet sim fleet");
        let lines = BufReader::new(sim.stdout.take().unwrap()).lines().take(HOSTS);
        let mut names: Vec<String> =
            lines.map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap()["name"].as_str().unwrap().to_owned()).collect();
        names.sort();
        let sim = KilledOnDrop(sim);
        assert_eq!(names.len(), HOSTS);

        // Both replicas see the same registry (registered through the first one).
        wait_until(Duration::from_secs(60), "both replicas list every simulated host", || a.host_names() == names && b.host_names() == names);
        let hosts: Vec<i64> = query(&format!("SELECT id FROM {}_fleet.hosts ORDER BY id", schemas.prefix))
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(hosts.len(), HOSTS);

        // Which replica holds the lease decides who is expected to work.
        let mut holder_pid = None;
        wait_until(Duration::from_secs(30), "a replica holding the fleet.health lease", || {
            holder_pid = lease_holder_pid(&schemas.prefix);
            holder_pid.is_some()
        });
        let (holder, standby) = if holder_pid == Some(a.pid()) { (a, b) } else { (b, a) };
        assert_eq!(holder_pid, Some(holder.pid()), "the lease holder is one of the two replicas");
        Pair { _sim: sim, holder, standby, hosts, _dir: dir, schemas }
    }

    /// While the holder lives, the standby ticks, skips, and checks nothing.
    fn assert_standby_idle(&self) {
        let s = self.standby.health_worker().expect("standby's worker status");
        assert!(s["lease_held"] == false && s["checks_performed"] == 0 && s["cycles"] == 0, "the standby must not check while the holder lives: {s}");
        assert!(s["cycles_skipped"].as_u64() > Some(0), "the standby ticks and skips: {s}");
        assert_eq!(lease_holder_pid(&self.schemas.prefix), Some(self.holder.pid()), "the lease stayed with one replica");
    }
}

#[test]
fn two_replicas_on_postgres_check_each_host_once_per_cycle_across_a_sigkill_takeover() {
    let mut pair = Pair::start("1s", &[], &[]);
    let (prefix, hosts) = (pair.schemas.prefix.clone(), pair.hosts.clone());
    wait_until(Duration::from_secs(60), "complete cycles before the kill", || complete_since(&prefix, &hosts, 0) >= CYCLES_EACH_SIDE);
    let h = pair.holder.health_worker().expect("holder's worker status");
    assert!(h["lease_held"] == true && h["checks_performed"].as_u64() >= Some((CYCLES_EACH_SIDE * HOSTS) as u64), "holder: {h}");
    pair.assert_standby_idle();

    // SIGKILL the holder: no release, its lease must run out.
    let skipped_before = pair.standby.counter("cycles_skipped").unwrap();
    pair.holder.kill9();
    // Taken once the holder is reaped: every cycle it started began before this instant.
    let kill_ms = now_ms();
    let mut took_over = None;
    wait_until(Duration::from_secs(30), "the standby running cycles", || {
        took_over = pair.standby.health_worker().filter(|w| w["cycles"].as_u64() >= Some(1));
        took_over.is_some()
    });
    let took_over = took_over.unwrap();
    let skipped_after = took_over["cycles_skipped"].as_u64().unwrap();
    assert!(took_over["lease_held"] == true, "{took_over}");
    assert!(
        skipped_after - skipped_before <= TAKEOVER_TICKS,
        "the standby took over after {} skipped ticks (lease of 2 intervals; at most {TAKEOVER_TICKS} expected)",
        skipped_after - skipped_before
    );
    assert_eq!(lease_holder_pid(&prefix), Some(pair.standby.pid()));
    wait_until(Duration::from_secs(60), "complete cycles after the takeover", || complete_since(&prefix, &hosts, kill_ms) >= CYCLES_EACH_SIDE);
    let s = pair.standby.health_worker().unwrap();
    assert!(s["checks_performed"].as_u64() >= Some((CYCLES_EACH_SIDE * HOSTS) as u64), "the survivor did the work: {s}");

    // The ground truth: the history in PostgreSQL.
    let all = cycles(&history(&prefix).unwrap());
    let first_complete = all.iter().position(|c| c.complete(&hosts)).expect("a complete cycle");
    // The last cycle that started before the kill may have been cut by it (checks finishing near
    // the kill); one that ended well before it must be complete.
    let cut = all.iter().rposition(|c| c.first_ms <= kill_ms).filter(|&i| kill_ms - all[i].last_ms < INTERVAL_MS / 2);
    let last = all.len() - 1;
    let (mut before, mut after) = (0, 0);
    assert_no_duplicates(&all);
    for (i, c) in all.iter().enumerate() {
        let exempt = i < first_complete || Some(i) == cut || i == last;
        assert!(exempt || c.complete(&hosts), "cycle {i} at {} ms missed hosts: {} of {HOSTS} checked", c.first_ms, c.per_host.len());
        if c.complete(&hosts) {
            if c.first_ms < kill_ms {
                before += 1;
            } else {
                after += 1;
            }
        }
    }
    assert!(before >= CYCLES_EACH_SIDE && after >= CYCLES_EACH_SIDE, "complete cycles before/after the kill: {before}/{after}");
    let gap = all.iter().find(|c| c.first_ms > kill_ms).map(|c| c.first_ms - kill_ms);
    eprintln!(
        "fleet_replicas: {} cycles, {before} complete before the kill, {after} after; first cycle after the kill {gap:?} ms after it; {} ticks skipped meanwhile",
        all.len(),
        skipped_after - skipped_before
    );
}

/// A cycle whose checks all hang (every agent answers after 5 s, the timeout is 1.5 s, four tries
/// with backoff: no check finishes for ~7.4 s) outlasts the lease taken at its start (two
/// intervals, 4 s). The holder must keep its lease while the cycle runs, so the standby, ticking
/// every 2 s, never starts a cycle of its own over the same hosts.
#[test]
fn a_cycle_longer_than_its_lease_is_not_run_by_the_standby_too() {
    let pair = Pair::start("1500ms", &["--mix", "slow:5000=1"], &[]);
    let standby_idle = || {
        let s = pair.standby.health_worker();
        let idle = s.as_ref().is_some_and(|s| s["lease_held"] == false && s["checks_performed"] == 0 && s["cycles"] == 0);
        assert!(idle, "the standby took the lease and started a cycle while the holder's cycle ran: {s:?}");
    };
    wait_until(Duration::from_secs(60), "two cycles over the hanging hosts", || {
        standby_idle();
        pair.holder.counter("checks_performed").is_some_and(|n| n >= 2 * HOSTS as u64)
    });
    pair.assert_standby_idle();
    let rows = history(&pair.schemas.prefix).unwrap();
    let per_host = rows.iter().fold(BTreeMap::<i64, u32>::new(), |mut m, (h, _)| {
        *m.entry(*h).or_default() += 1;
        m
    });
    assert_eq!(per_host.len(), HOSTS, "every host checked");
    // Not vacuous: every check timed out (the agents did hang), so the first cycle of each host
    // went through all its tries without a finished check.
    let answered = query(&format!("SELECT count(*) FROM {}_fleet.health_checks WHERE state <> 'unreachable'", pair.schemas.prefix)).unwrap();
    assert_eq!(answered.trim(), "0", "every check must have timed out");
}

/// Rows in the health-check history.
fn history_rows(prefix: &str) -> u64 {
    query(&format!("SELECT count(*) FROM {prefix}_fleet.health_checks")).unwrap().trim().parse().unwrap()
}

/// Every agent hangs past the 1.5 s timeout, one try, two checks at once: a cycle over the 40
/// hosts lasts ~30 s. A third holder takes the `fleet.health` lease in the middle of it. The
/// holder notices at its next renewal (one interval) and starts no new check: of the ~36 hosts
/// left, only those in flight or started before the renewal are checked (at most a handful;
/// the bound asserted is half the fleet, which an uncut cycle exceeds many times over).
#[test]
fn a_holder_whose_lease_is_taken_mid_cycle_starts_no_new_check() {
    let env = [("GPUFLEET_FLEET_HEALTH_CONCURRENCY", "2"), ("GPUFLEET_FLEET_UNREACHABLE_AFTER", "1")];
    let pair = Pair::start("1500ms", &["--mix", "slow:5000=1"], &env);
    let prefix = pair.schemas.prefix.clone();
    wait_until(Duration::from_secs(60), "the holder in the middle of a cycle", || pair.holder.counter("checks_performed").is_some_and(|n| n >= 4));
    let cycles_before = pair.holder.counter("cycles").unwrap();
    let rows_before = history_rows(&prefix);
    let stolen = query(&format!(
        "UPDATE {prefix}_meta.leases SET holder = 'thief', expires_ms = {} WHERE name = 'fleet.health' RETURNING holder",
        now_ms() + 3_600_000
    ))
    .unwrap();
    assert_eq!(stolen.trim(), "thief", "the lease row was taken");

    // The holder notices the loss and ends the cycle after the checks in flight.
    wait_until(Duration::from_secs(60), "the holder to end its cycle after losing the lease", || {
        pair.holder.health_worker().is_some_and(|w| w["cycles_lease_lost"].as_u64() >= Some(1) && w["cycles"].as_u64() > Some(cycles_before))
    });
    let rows_cut = history_rows(&prefix);
    let after = rows_cut - rows_before;
    assert!(after < (HOSTS / 2) as u64, "the holder went on checking after losing the lease: {after} checks recorded after the steal");
    let h = pair.holder.health_worker().unwrap();
    assert!(h["lease_held"] == false && h["cycles_lease_lost"] == 1, "holder: {h}");

    // While the thief holds the lease both replicas tick, skip and check nothing.
    let (skipped_h, skipped_s) = (pair.holder.counter("cycles_skipped").unwrap(), pair.standby.counter("cycles_skipped").unwrap());
    wait_until(Duration::from_secs(30), "both replicas skipping two ticks", || {
        pair.holder.counter("cycles_skipped").is_some_and(|n| n >= skipped_h + 2) && pair.standby.counter("cycles_skipped").is_some_and(|n| n >= skipped_s + 2)
    });
    assert_eq!(history_rows(&prefix), rows_cut, "a check ran while a third holder held the lease");
    let s = pair.standby.health_worker().unwrap();
    assert!(s["checks_performed"] == 0 && s["cycles"] == 0, "standby: {s}");

    // Free again: a replica takes the lease at its next tick and the checks go on.
    query(&format!("DELETE FROM {prefix}_meta.leases WHERE holder = 'thief'")).unwrap();
    wait_until(Duration::from_secs(30), "checks after the lease was freed", || history_rows(&prefix) > rows_cut);
    eprintln!("fleet_replicas: {after} checks recorded after the lease was taken mid-cycle ({rows_before} before)");
}

/// The history of `runners` checkers, each checking every host once per interval from its own
/// phase offset (ms), over `n` intervals.
fn synthetic(offsets: &[i64], hosts: &[i64], n: i64) -> Vec<(i64, i64)> {
    let mut rows: Vec<(i64, i64)> =
        offsets.iter().flat_map(|&o| (0..n).flat_map(move |k| hosts.iter().enumerate().map(move |(i, &h)| (h, k * INTERVAL_MS + o + i as i64)))).collect();
    rows.sort_by_key(|&(h, at)| (at, h));
    rows
}

#[test]
fn the_cycle_split_catches_a_second_checker_at_any_offset() {
    let hosts: Vec<i64> = (1..=40).collect();
    let one = cycles(&synthetic(&[0], &hosts, 5));
    assert_eq!(one.len(), 5);
    assert!(one.iter().all(|c| c.complete(&hosts) && c.duplicates().is_empty()));
    // A second checker at any phase offset puts some host twice into one cycle.
    for offset in (0..INTERVAL_MS).step_by(50) {
        let two = cycles(&synthetic(&[0, offset], &hosts, 5));
        assert!(two.iter().any(|c| !c.duplicates().is_empty()), "offset {offset} ms went unnoticed");
    }
    // A host left out of a cycle shows as an incomplete cycle.
    let mut rows = synthetic(&[0], &hosts, 3);
    rows.retain(|&(h, at)| !(h == 7 && (INTERVAL_MS..2 * INTERVAL_MS).contains(&at)));
    let split = cycles(&rows);
    assert_eq!(split.iter().map(|c| c.complete(&hosts)).collect::<Vec<_>>(), [true, false, true]);
}
