//! Watchdog decisions with explicit time: the streak, the threshold, cooldown, stopped on
//! purpose, maintenance and opt-in.

use super::*;
use gpufleet_agent::wire::ContainerState;

const T: i64 = 1_700_000_000_000;
const S: i64 = 1000;
const MIN: i64 = 60 * S;

fn c(health: Option<&str>, state: &str) -> ContainerState {
    ContainerState {
        id: "id-inference".into(),
        name: "inference".into(),
        image: String::new(),
        state: state.into(),
        health: health.map(Into::into),
        health_log: vec![],
        restart_count: 0,
        oom_killed: false,
        exit_code: None,
        stopped_on_purpose: false,
    }
}

fn host(containers: Vec<ContainerState>) -> WatchedHost {
    WatchedHost { id: "1".into(), name: "gpu-01".into(), groups: vec!["gpu".into()], maintenance: false, opted_in: true, agent_url: "http://127.0.0.1:1".into(), containers }
}

fn dog() -> Watchdog {
    Watchdog::new(WatchdogSettings::default())
}

fn restarts(d: &[Decision]) -> usize {
    d.iter().filter(|d| matches!(d, Decision::Restart { .. })).count()
}

#[test]
fn restarts_after_three_consecutive_failures() {
    let mut w = dog();
    let bad = host(vec![c(Some("unhealthy"), "running")]);
    assert!(w.observe(T, &bad).is_empty());
    assert!(w.observe(T + 30 * S, &bad).is_empty());
    assert_eq!(w.streak("1", "inference"), 2);
    let d = w.observe(T + 60 * S, &bad);
    assert_eq!(d, vec![Decision::Restart { host_id: "1".into(), container_id: "id-inference".into(), container: "inference".into(), failures: 3 }]);
    assert_eq!(w.streak("1", "inference"), 0);
}

#[test]
fn healthy_resets_and_starting_keeps_the_streak() {
    let mut w = dog();
    let bad = host(vec![c(Some("unhealthy"), "running")]);
    w.observe(T, &bad);
    w.observe(T + S, &bad);
    w.observe(T + 2 * S, &host(vec![c(Some("healthy"), "running")]));
    assert_eq!(w.streak("1", "inference"), 0);
    w.observe(T + 3 * S, &bad);
    w.observe(T + 4 * S, &bad);
    // Restarting and starting are no evidence either way.
    assert!(w.observe(T + 5 * S, &host(vec![c(Some("starting"), "restarting")])).is_empty());
    assert_eq!(w.streak("1", "inference"), 2);
    assert_eq!(restarts(&w.observe(T + 6 * S, &bad)), 1);
    // No health check and running: reset.
    w.observe(T + 7 * S, &bad);
    w.observe(T + 8 * S, &host(vec![c(None, "running")]));
    assert_eq!(w.streak("1", "inference"), 0);
}

#[test]
fn the_health_log_counts_failures_the_engine_already_saw() {
    assert_eq!(trailing(&["exit 0: ok", "exit 1: no", "exit 7: no"]), 2);
    assert_eq!(trailing(&["exit 1: no", "exit 0: ok"]), 0);
    assert_eq!(trailing(&["garbage", "exit 2: x"]), 1);
    let mut w = dog();
    let mut con = c(Some("unhealthy"), "running");
    con.health_log = vec!["exit 1: a".into(), "exit 1: b".into(), "exit 1: c".into()];
    assert_eq!(restarts(&w.observe(T, &host(vec![con]))), 1);
}

fn trailing(lines: &[&str]) -> u32 {
    decide::trailing_failures(&lines.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
}

#[test]
fn at_most_one_restart_per_cooldown() {
    let mut w = dog();
    let bad = host(vec![c(Some("unhealthy"), "running")]);
    let mut at = Vec::new();
    let mut skipped_until = None;
    // Unhealthy every 30 s for 2 hours.
    for i in 0..240 {
        let now = T + i * 30 * S;
        for d in w.observe(now, &bad) {
            match d {
                Decision::Restart { .. } => at.push(now),
                Decision::Skip { reason: SkipReason::Cooldown { until_ms }, .. } => skipped_until = Some(until_ms),
                other => panic!("{other:?}"),
            }
        }
    }
    // At 60 s, then at the first observation 30 min after each restart.
    assert_eq!(at, vec![T + MIN, T + 31 * MIN, T + 61 * MIN, T + 91 * MIN]);
    assert!(at.windows(2).all(|p| p[1] - p[0] >= 30 * MIN));
    assert_eq!(skipped_until, Some(T + 121 * MIN));
}

#[test]
fn stopped_on_purpose_and_maintenance_are_left_alone() {
    let mut w = dog();
    let mut stopped = c(Some("unhealthy"), "exited");
    stopped.stopped_on_purpose = true;
    let h = host(vec![stopped]);
    w.observe(T, &h);
    w.observe(T + S, &h);
    let d = w.observe(T + 2 * S, &h);
    assert!(matches!(&d[..], [Decision::Skip { reason: SkipReason::StoppedOnPurpose, failures: 3, .. }]), "{d:?}");

    let mut w = dog();
    let mut h = host(vec![c(Some("unhealthy"), "running")]);
    h.maintenance = true;
    for i in 0..5 {
        let d = w.observe(T + i * S, &h);
        assert_eq!(restarts(&d), 0);
    }
    assert!(matches!(&w.observe(T + 5 * S, &h)[..], [Decision::Skip { reason: SkipReason::Maintenance, .. }]));
    // Out of maintenance and still failing: restarted at once.
    h.maintenance = false;
    assert_eq!(restarts(&w.observe(T + 6 * S, &h)), 1);
}

#[test]
fn only_opted_in_hosts_are_watched() {
    let settings = WatchdogSettings { groups: vec!["train".into()], hosts: vec!["gpu-09".into()], ..WatchdogSettings::default() };
    let mut w = Watchdog::new(settings.clone());
    let mut h = host(vec![c(Some("unhealthy"), "running")]);
    h.opted_in = false;
    for i in 0..5 {
        assert!(w.observe(T + i * S, &h).is_empty());
    }
    assert_eq!(w.streak("1", "inference"), 0);
    assert!(settings.opted_in(&WatchedHost { groups: vec!["train".into()], ..h.clone() }));
    assert!(settings.opted_in(&WatchedHost { name: "gpu-09".into(), ..h.clone() }));
    assert!(settings.opted_in(&WatchedHost { opted_in: true, ..h.clone() }));
    assert!(!settings.opted_in(&h));
}

#[test]
fn a_container_that_goes_away_is_forgotten() {
    let mut w = dog();
    let bad = host(vec![c(Some("unhealthy"), "running")]);
    w.observe(T, &bad);
    w.observe(T + S, &host(vec![]));
    assert_eq!(w.streak("1", "inference"), 0);
}

#[test]
fn configuration_is_checked() {
    let cfg: crate::config::WatchdogConfig = toml::from_str("groups = [\"gpu\"]\nfailures = 5\ncooldown = \"1h\"").unwrap();
    let s = cfg.validate().unwrap();
    assert_eq!((s.failures, s.cooldown, s.interval), (5, std::time::Duration::from_secs(3600), std::time::Duration::from_secs(30)));
    let bad = |src: &str| toml::from_str::<crate::config::WatchdogConfig>(src).unwrap().validate().unwrap_err();
    assert!(bad("failures = 0").starts_with("watchdog.failures"));
    assert!(bad("cooldown = \"later\"").starts_with("watchdog.cooldown"));
    assert!(bad("interval = \"10ms\"").starts_with("watchdog.interval"));
    assert!(toml::from_str::<crate::config::WatchdogConfig>("retries = 1").is_err());
}
