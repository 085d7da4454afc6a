//! Alert lifecycle tests with explicit time: pending → firing → resolved, dedupe, repeat,
//! severity changes, unknown data, silences, maintenance, built-ins, configuration.

use super::engine::{Change, Evaluation};
use super::*;
use crate::config::AlertsConfig;
use std::collections::BTreeMap;

const T: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn host(id: &str, state: HostHealth, metrics: &[(&str, f64)]) -> HostObservation {
    HostObservation {
        id: id.into(),
        name: format!("{id}-name"),
        groups: vec!["gpu".into()],
        state,
        metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect::<BTreeMap<_, _>>(),
        unhealthy_containers: Some(vec![]),
        ..HostObservation::default()
    }
}

fn obs(hosts: Vec<HostObservation>) -> Observations {
    Observations { hosts, missing_partitions: vec![], workers: Some(vec![]) }
}

fn rule(toml_src: &str) -> Rule {
    let c: RuleConfig = toml::from_str(toml_src).unwrap();
    c.validate().unwrap()
}

fn disk_rule() -> Rule {
    rule("name = \"disk\"\nmetric = \"disk_used_pct\"\nop = \">\"\nthreshold = 90\nfor = \"5m\"\nseverity = \"CRIT\"")
}

fn engine(rules: Vec<Rule>, builtins: Vec<Builtin>) -> AlertEngine {
    AlertEngine::new(rules, builtins, 4 * HOUR, 100)
}

fn kinds(e: &Evaluation) -> Vec<NoticeKind> {
    e.notices.iter().map(|n| n.kind).collect()
}

#[test]
fn pending_for_then_firing_then_resolved() {
    let mut e = engine(vec![disk_rule()], vec![]);
    let full = obs(vec![host("h1", HostHealth::Healthy, &[("disk_used_pct", 95.0)])]);
    let r = e.evaluate(T, &full);
    assert!(r.notices.is_empty());
    let a = e.active().next().unwrap().clone();
    assert_eq!((a.status, a.started_ms, a.severity), (AlertStatus::Pending, T, Severity::Crit));
    assert_eq!(a.id, format!("disk/h1/{T}"));
    assert!(matches!(&r.changes[..], [Change::Upsert(x)] if x.status == AlertStatus::Pending));
    // Not yet: 1 ms short of 5 minutes.
    assert!(e.evaluate(T + 5 * MIN - 1, &full).notices.is_empty());
    let r = e.evaluate(T + 5 * MIN, &full);
    assert_eq!(kinds(&r), [NoticeKind::Firing]);
    let a = &r.notices[0].alert;
    assert_eq!((a.status, a.fired_ms, a.value, a.notifications), (AlertStatus::Firing, Some(T + 5 * MIN), Some(95.0), 1));
    assert_eq!(a.message, "disk_used_pct is 95 on h1-name (> 90)");
    // Steady: nothing sent, nothing persisted.
    let r = e.evaluate(T + 6 * MIN, &full);
    assert!(r.notices.is_empty() && r.changes.is_empty(), "{r:?}");
    // Clears: resolved, sent, kept in history.
    let ok = obs(vec![host("h1", HostHealth::Healthy, &[("disk_used_pct", 50.0)])]);
    let r = e.evaluate(T + 7 * MIN, &ok);
    assert_eq!(kinds(&r), [NoticeKind::Resolved]);
    assert_eq!(r.notices[0].alert.resolved_ms, Some(T + 7 * MIN));
    assert_eq!(e.active().count(), 0);
    assert_eq!(e.history().next().unwrap().status, AlertStatus::Resolved);
    // A new breach is a new alert with a new id.
    e.evaluate(T + 8 * MIN, &full);
    assert_eq!(e.active().next().unwrap().id, format!("disk/h1/{}", T + 8 * MIN));
}

#[test]
fn pending_that_clears_is_dropped_silently() {
    let mut e = engine(vec![disk_rule()], vec![]);
    e.evaluate(T, &obs(vec![host("h1", HostHealth::Healthy, &[("disk_used_pct", 95.0)])]));
    let r = e.evaluate(T + MIN, &obs(vec![host("h1", HostHealth::Healthy, &[("disk_used_pct", 10.0)])]));
    assert!(r.notices.is_empty());
    assert_eq!(r.changes, vec![Change::Remove(format!("disk/h1/{T}"))]);
    assert_eq!(e.history().count(), 0);
}

#[test]
fn one_alert_per_rule_and_subject() {
    let mut e = engine(vec![rule("name = \"steal\"\nmetric = \"cpu_steal_pct\"\nthreshold = 1\nseverity = \"WARN\"")], vec![]);
    let o = obs(vec![host("h1", HostHealth::Healthy, &[("cpu_steal_pct", 3.0)]), host("h2", HostHealth::Healthy, &[("cpu_steal_pct", 4.0)])]);
    // for = 0: fires on the first evaluation.
    assert_eq!(kinds(&e.evaluate(T, &o)), [NoticeKind::Firing, NoticeKind::Firing]);
    assert!(e.evaluate(T + MIN, &o).notices.is_empty());
    assert_eq!(e.active().count(), 2);
    let subjects: Vec<&str> = e.active().map(|a| a.subject.as_str()).collect();
    assert_eq!(subjects, ["h1", "h2"]);
}

#[test]
fn repeat_interval_resends_a_firing_alert() {
    let mut e = engine(vec![rule("name = \"steal\"\nmetric = \"cpu_steal_pct\"\nthreshold = 1\nseverity = \"WARN\"")], vec![]);
    let o = obs(vec![host("h1", HostHealth::Healthy, &[("cpu_steal_pct", 3.0)])]);
    e.evaluate(T, &o);
    assert!(e.evaluate(T + 4 * HOUR - 1, &o).notices.is_empty());
    let r = e.evaluate(T + 4 * HOUR, &o);
    assert_eq!(kinds(&r), [NoticeKind::Repeat]);
    assert_eq!(r.notices[0].alert.notifications, 2);
    assert!(e.evaluate(T + 5 * HOUR, &o).notices.is_empty());
    assert_eq!(kinds(&e.evaluate(T + 8 * HOUR, &o)), [NoticeKind::Repeat]);
}

#[test]
fn builtin_steal_escalates_and_falls_back() {
    let mut e = engine(vec![], vec![Builtin::CpuSteal]);
    let at = |s: f64| obs(vec![host("h1", HostHealth::Healthy, &[("cpu_steal_pct", s)])]);
    assert!(e.evaluate(T, &at(7.0)).notices.is_empty()); // pending for 5 min
    let r = e.evaluate(T + 5 * MIN, &at(7.0));
    assert_eq!(kinds(&r), [NoticeKind::Firing]);
    assert_eq!(r.notices[0].alert.severity, Severity::Warn);
    let r = e.evaluate(T + 6 * MIN, &at(20.0));
    assert_eq!(kinds(&r), [NoticeKind::SeverityChanged]);
    assert_eq!(r.notices[0].alert.severity, Severity::Crit);
    assert_eq!(kinds(&e.evaluate(T + 7 * MIN, &at(6.0))), [NoticeKind::SeverityChanged]);
    assert_eq!(kinds(&e.evaluate(T + 8 * MIN, &at(5.0))), [NoticeKind::Resolved]);
}

#[test]
fn unknown_data_keeps_the_alert_and_a_gone_subject_resolves_it() {
    let mut e = engine(vec![disk_rule()], vec![Builtin::HostUnreachable]);
    let full = obs(vec![host("h1", HostHealth::Healthy, &[("disk_used_pct", 95.0)])]);
    e.evaluate(T, &full);
    e.evaluate(T + 5 * MIN, &full);
    // Unreachable: no metrics. The disk alert stays; the unreachable alert fires at once.
    let down = obs(vec![host("h1", HostHealth::Unreachable, &[])]);
    let r = e.evaluate(T + 6 * MIN, &down);
    assert_eq!(kinds(&r), [NoticeKind::Firing]);
    assert_eq!(r.notices[0].alert.rule, "host_unreachable");
    assert_eq!(r.notices[0].alert.message, "h1-name is unreachable: its agent did not answer");
    assert_eq!(e.active().filter(|a| a.status == AlertStatus::Firing).count(), 2);
    // Back with a fine disk: both resolve.
    let r = e.evaluate(T + 7 * MIN, &obs(vec![host("h1", HostHealth::Healthy, &[("disk_used_pct", 10.0)])]));
    assert_eq!(kinds(&r), [NoticeKind::Resolved, NoticeKind::Resolved]);
    // Removed from the registry: its alerts resolve.
    e.evaluate(T + 8 * MIN, &full);
    e.evaluate(T + 13 * MIN, &full);
    let r = e.evaluate(T + 14 * MIN, &obs(vec![]));
    assert_eq!(kinds(&r), [NoticeKind::Resolved]);
}

fn silence(matchers: &[(&str, &str)], start: i64, end: i64) -> Silence {
    let req = NewSilence {
        matchers: matchers.iter().map(|(l, v)| Matcher { label: (*l).into(), value: (*v).into(), negate: false }).collect(),
        starts_ms: Some(start),
        ends_ms: Some(end),
        duration: None,
        created_by: "ops".into(),
        comment: "planned".into(),
    };
    req.validate(start).unwrap()
}

#[test]
fn silence_suppresses_then_sends_when_it_ends() {
    let mut e = engine(vec![], vec![Builtin::HostUnreachable]);
    let s = silence(&[("host", "h1"), ("rule", "host_unreachable")], T, T + HOUR);
    let sid = s.id.clone();
    e.add_silence(s);
    let down = obs(vec![host("h1", HostHealth::Unreachable, &[]), host("h2", HostHealth::Unreachable, &[])]);
    let r = e.evaluate(T, &down);
    // Only h2 is sent.
    assert_eq!(r.notices.len(), 1);
    assert_eq!(r.notices[0].alert.subject, "h2");
    let h1 = e.active().find(|a| a.subject == "h1").unwrap();
    assert_eq!((h1.status, &h1.suppressed), (AlertStatus::Firing, &Some(Suppression::Silence { id: sid })));
    assert!(e.evaluate(T + HOUR - 1, &down).notices.is_empty());
    // The silence ended while h1 still fires: sent now.
    let r = e.evaluate(T + HOUR, &down);
    assert_eq!(kinds(&r), [NoticeKind::Firing]);
    assert_eq!(r.notices[0].alert.subject, "h1");
    assert_eq!(r.notices[0].alert.suppressed, None);
    assert_eq!(e.prune_silences(T + HOUR).len(), 1);
    assert!(e.silences().is_empty());
}

#[test]
fn an_alert_silenced_all_along_resolves_quietly() {
    let mut e = engine(vec![], vec![Builtin::HostUnreachable]);
    e.add_silence(silence(&[("group", "gpu")], T, T + HOUR));
    e.evaluate(T, &obs(vec![host("h1", HostHealth::Unreachable, &[])]));
    let r = e.evaluate(T + MIN, &obs(vec![host("h1", HostHealth::Healthy, &[])]));
    assert!(r.notices.is_empty());
    assert_eq!(e.history().next().unwrap().status, AlertStatus::Resolved);
}

#[test]
fn maintenance_suppresses() {
    let mut e = engine(vec![], vec![Builtin::HostUnreachable]);
    let mut h = host("h1", HostHealth::Unreachable, &[]);
    h.maintenance = true;
    assert!(e.evaluate(T, &obs(vec![h.clone()])).notices.is_empty());
    assert_eq!(e.active().next().unwrap().suppressed, Some(Suppression::Maintenance));
    // Out of maintenance and still down: sent.
    h.maintenance = false;
    assert_eq!(kinds(&e.evaluate(T + MIN, &obs(vec![h]))), [NoticeKind::Firing]);
}

#[test]
fn builtins_fire_on_their_conditions() {
    let mut e = engine(vec![], Builtin::ALL.to_vec());
    let mut crit = host("h1", HostHealth::Critical, &[("cpu_steal_pct", 0.5)]);
    crit.critical_reasons = vec!["disk:/data 97 % used".into()];
    let mut filling = host("h2", HostHealth::Healthy, &[("cpu_steal_pct", 0.5)]);
    filling.disk_outlook = Some(DiskOutlook { mount: "/data".into(), days_to_90: Some(3.2) });
    let mut flapping = host("h3", HostHealth::Degraded, &[("cpu_steal_pct", 0.5)]);
    flapping.unhealthy_containers = Some(vec!["inference".into()]);
    let o = Observations {
        hosts: vec![crit, filling, flapping],
        missing_partitions: vec!["host_metrics_2025_07".into()],
        workers: Some(vec![WorkerObservation { name: "health".into(), failing: true, detail: "boom".into() }]),
    };
    let r = e.evaluate(T, &o);
    let mut fired: Vec<(String, String)> = r.notices.iter().map(|n| (n.alert.rule.clone(), n.alert.subject.clone())).collect();
    fired.sort();
    assert_eq!(
        fired,
        [
            ("disk_full_soon".to_owned(), "h2".to_owned()),
            ("host_critical".into(), "h1".into()),
            ("partition_missing".into(), "partition:host_metrics_2025_07".into()),
            ("worker_failing".into(), "worker:health".into()),
        ]
    );
    let msg = |rule: &str| r.notices.iter().find(|n| n.alert.rule == rule).unwrap().alert.message.clone();
    assert_eq!(msg("host_critical"), "h1-name is critical: disk:/data 97 % used");
    assert_eq!(msg("disk_full_soon"), "disk /data on h2-name reaches 90 % in 3 days at its 7-day trend");
    // The container alert waits 2 minutes.
    assert_eq!(kinds(&e.evaluate(T + 2 * MIN, &o)), [NoticeKind::Firing]);
    // Workers not observed: the worker alert stays. Partition created: resolved.
    let o2 = Observations { missing_partitions: vec![], workers: None, ..o.clone() };
    let r = e.evaluate(T + 3 * MIN, &o2);
    assert_eq!(r.notices.iter().map(|n| (n.kind, n.alert.rule.as_str())).collect::<Vec<_>>(), [(NoticeKind::Resolved, "partition_missing")]);
    assert!(e.active().any(|a| a.rule == "worker_failing"));
}

#[test]
fn selectors_and_state_rules() {
    let r = rule("name = \"train-down\"\nstate = \"unreachable\"\nseverity = \"WARN\"\ngroups = [\"training\"]");
    let mut e = engine(vec![r], vec![]);
    let mut a = host("a", HostHealth::Unreachable, &[]);
    a.groups = vec!["training".into()];
    let b = host("b", HostHealth::Unreachable, &[]);
    let r = e.evaluate(T, &obs(vec![a, b]));
    assert_eq!(r.notices.len(), 1);
    assert_eq!(r.notices[0].alert.subject, "a");
    assert_eq!(r.notices[0].alert.message, "a-name is unreachable");
    let ne = rule("name = \"not-healthy\"\nstate = \"healthy\"\nop = \"!=\"\nseverity = \"WARN\"\nhosts = [\"c-name\"]");
    let mut e = engine(vec![ne], vec![]);
    assert_eq!(e.evaluate(T, &obs(vec![host("c", HostHealth::Degraded, &[]), host("d", HostHealth::Degraded, &[])])).notices.len(), 1);
}

#[test]
fn rule_configuration_errors_name_the_rule_and_field() {
    let err = |src: &str| toml::from_str::<RuleConfig>(src).unwrap().validate().unwrap_err().to_string();
    assert_eq!(err("name = \"x\"\nmetric = \"m\"\nseverity = \"WARN\""), "alert rule \"x\": threshold a metric rule needs a threshold");
    assert!(err("name = \"x\"\nmetric = \"m\"\nstate = \"healthy\"\nthreshold = 1\nseverity = \"WARN\"").contains("not both"));
    assert!(err("name = \"x\"\nstate = \"gone\"\nseverity = \"WARN\"").contains("unknown host state"));
    assert!(err("name = \"x\"\nstate = \"healthy\"\nop = \">\"\nseverity = \"WARN\"").contains("takes == or !="));
    assert!(err("name = \"x\"\nmetric = \"m\"\nthreshold = 1\nfor = \"soon\"\nseverity = \"WARN\"").contains("for"));
    assert!(err("name = \"host_unreachable\"\nstate = \"healthy\"\nseverity = \"WARN\"").contains("built-in"));
    assert!(err("name = \"a b\"\nstate = \"healthy\"\nseverity = \"WARN\"").contains("name"));
    assert!(toml::from_str::<RuleConfig>("name = \"x\"\nmetric = \"m\"\nthreshold = 1\nseverity = \"INFO\"").is_err());
    assert!(toml::from_str::<RuleConfig>("name = \"x\"\nmetric = \"m\"\nthreshold = 1\nseverity = \"WARN\"\nwhen = 1").is_err());
}

#[test]
fn alerts_section_parses_and_validates() {
    let src = r#"
interval = "15s"
repeat_interval = "1h"
disable_builtin = ["cpu_steal"]

[[rules]]
name = "gpu-hot"
metric = "gpu_temperature_c"
op = ">="
threshold = 85
for = "2m"
severity = "CRIT"
hosts = ["gpu-07"]

[[notifiers]]
kind = "webhook"
name = "ops"
url = "http://127.0.0.1:9/hook"

[[notifiers]]
kind = "telegram"
name = "tg"
token = "123:abc"
chat_id = "-100"
"#;
    let cfg: AlertsConfig = toml::from_str(src).unwrap();
    let s = cfg.validate().unwrap();
    assert_eq!(s.interval, std::time::Duration::from_secs(15));
    assert!(!s.builtins.contains(&Builtin::CpuSteal));
    assert_eq!(s.builtins.len(), Builtin::ALL.len() - 1);
    assert_eq!(s.rules[0].for_, std::time::Duration::from_secs(120));
    assert_eq!(s.rules[0].condition, rule::Condition::Metric { metric: "gpu_temperature_c".into(), op: Op::Ge, threshold: 85.0 });
    assert_eq!(format!("{:?}", s.notifiers[1]), "NotifierConfig(telegram:tg)");
    let bad = AlertsConfig { disable_builtin: vec!["nope".into()], ..AlertsConfig::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("unknown built-in rule"));
    let bad = AlertsConfig { repeat_interval: "1s".into(), ..AlertsConfig::default() };
    assert!(bad.validate().unwrap_err().to_string().starts_with("alerts.repeat_interval"));
    assert!(toml::from_str::<AlertsConfig>("[[notifiers]]\nkind = \"webhook\"\nname = \"x\"\nurl = \"http://a\"\ntoken = \"t\"").is_err());
    assert!(toml::from_str::<AlertsConfig>("[[notifiers]]\nkind = \"pager\"\nname = \"x\"").is_err());
    let dup = "[[notifiers]]\nkind = \"slack\"\nname = \"x\"\nurl = \"http://a\"\n[[notifiers]]\nkind = \"slack\"\nname = \"x\"\nurl = \"http://b\"";
    assert!(toml::from_str::<AlertsConfig>(dup).unwrap().validate().unwrap_err().to_string().contains("two notifiers"));
}

#[test]
fn silence_requests_are_checked() {
    let m = |l: &str, v: &str, negate: bool| Matcher { label: l.into(), value: v.into(), negate };
    let req = |matchers: Vec<Matcher>, ends: Option<i64>, duration: Option<&str>| NewSilence {
        matchers,
        starts_ms: None,
        ends_ms: ends,
        duration: duration.map(Into::into),
        created_by: String::new(),
        comment: String::new(),
    };
    let s = req(vec![m("host", "h1", false)], None, Some("2h")).validate(T).unwrap();
    assert_eq!((s.starts_ms, s.ends_ms, s.id.len()), (T, T + 2 * HOUR, 16));
    assert!(s.active(T) && !s.active(T + 2 * HOUR));
    let err = |r: NewSilence| r.validate(T).unwrap_err().to_string();
    assert!(err(req(vec![], None, Some("1h"))).contains("at least one matcher"));
    assert!(err(req(vec![m("pod", "x", false)], None, Some("1h"))).contains("unknown label"));
    assert!(err(req(vec![m("host", "x", true)], None, Some("1h"))).contains("equality"));
    assert!(err(req(vec![m("host", "x", false)], None, None)).contains("give ends_ms or duration"));
    assert!(err(req(vec![m("host", "x", false)], Some(T - 1), None)).contains("after the start"));
    assert!(err(req(vec![m("host", "x", false)], None, Some("100d"))).contains("90 days"));
    // Negated matchers.
    let mut e = engine(vec![], vec![Builtin::HostUnreachable]);
    let mut s = silence(&[("rule", "host_unreachable")], T, T + HOUR);
    s.matchers.push(m("host", "h1", true));
    e.add_silence(s);
    let r = e.evaluate(T, &obs(vec![host("h1", HostHealth::Unreachable, &[]), host("h2", HostHealth::Unreachable, &[])]));
    assert_eq!(r.notices.iter().map(|n| n.alert.subject.as_str()).collect::<Vec<_>>(), ["h1"]);
}

async fn store_suite(store: std::sync::Arc<dyn AlertStore>) {
    let settings = AlertsConfig { repeat_interval: "4h".into(), ..AlertsConfig::default() }.validate().unwrap();
    let svc = AlertService::open(&settings, store.clone(), T).await.unwrap();
    let down = obs(vec![host("h1", HostHealth::Unreachable, &[]), host("h2", HostHealth::Unreachable, &[])]);
    let (n, stored) = svc.evaluate(T, &down).await;
    stored.unwrap();
    assert_eq!(n.len(), 2);
    let s = svc
        .create_silence(NewSilence { matchers: vec![Matcher { label: "host".into(), value: "h9".into(), negate: false }], starts_ms: None, ends_ms: None, duration: Some("1h".into()), created_by: "me".into(), comment: String::new() }, T)
        .await
        .unwrap();
    // h2 recovers.
    svc.evaluate(T + MIN, &obs(vec![host("h1", HostHealth::Unreachable, &[]), host("h2", HostHealth::Healthy, &[])])).await.1.unwrap();

    // A restart: active alerts, silences and history come back; nothing is sent twice.
    let svc2 = AlertService::open(&settings, store.clone(), T + 2 * MIN).await.unwrap();
    let all = svc2.alerts(&AlertQuery::default()).await.unwrap();
    let summary: Vec<(&str, AlertStatus)> = all.iter().map(|a| (a.subject.as_str(), a.status)).collect();
    assert_eq!(summary, [("h1", AlertStatus::Firing), ("h2", AlertStatus::Resolved)]);
    assert_eq!(svc2.silences(T + 2 * MIN, false), vec![s.clone()]);
    let (n, _) = svc2.evaluate(T + 3 * MIN, &obs(vec![host("h1", HostHealth::Unreachable, &[]), host("h2", HostHealth::Healthy, &[])])).await;
    assert!(n.is_empty(), "{n:?}");
    assert_eq!(svc2.firing(), 1);
    let only_resolved = svc2.alerts(&AlertQuery { status: Some(AlertStatus::Resolved), ..AlertQuery::default() }).await.unwrap();
    assert_eq!(only_resolved.len(), 1);
    let for_h1 = svc2.alerts(&AlertQuery { host: Some("h1".into()), ..AlertQuery::default() }).await.unwrap();
    assert_eq!(for_h1.len(), 1);
    // Silences: delete, then not found; an ended one is pruned from the store.
    svc2.delete_silence(&s.id).await.unwrap();
    assert!(matches!(svc2.delete_silence(&s.id).await, Err(AlertError::SilenceNotFound(_))));
    let short = svc2
        .create_silence(NewSilence { matchers: vec![Matcher { label: "host".into(), value: "h9".into(), negate: false }], starts_ms: None, ends_ms: None, duration: Some("1m".into()), created_by: String::new(), comment: String::new() }, T + 3 * MIN)
        .await
        .unwrap();
    assert_eq!(svc2.silences(T + 3 * MIN, false).len(), 1);
    svc2.evaluate(T + 10 * MIN, &obs(vec![])).await.1.unwrap();
    assert!(svc2.silences(T + 10 * MIN, true).is_empty());
    assert!(!store.delete_silence(&short.id).await.unwrap());
    // Host gone: h1 resolved too.
    assert_eq!(store.history(10).await.unwrap().len(), 2);
    assert!(store.load(T + 10 * MIN, 10).await.unwrap().active.is_empty());
}

#[tokio::test]
async fn memory_store_restores_after_restart() {
    store_suite(std::sync::Arc::new(MemoryAlertStore::default())).await;
}

#[tokio::test]
async fn sqlite_store_restores_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.db");
    let store = SqliteAlertStore::open(&path, 1000).await.unwrap();
    store_suite(std::sync::Arc::new(store.clone())).await;
    store.close().await;
    // History is capped on disk.
    let capped = SqliteAlertStore::open(&path, 1).await.unwrap();
    let mut e = engine(vec![], vec![Builtin::HostUnreachable]);
    let mut changes = e.evaluate(T + HOUR, &obs(vec![host("h3", HostHealth::Unreachable, &[])])).changes;
    changes.extend(e.evaluate(T + HOUR + MIN, &obs(vec![])).changes);
    capped.apply(&changes).await.unwrap();
    let h = capped.history(10).await.unwrap();
    assert_eq!(h.iter().map(|a| a.subject.as_str()).collect::<Vec<_>>(), ["h3"]);
    capped.close().await;
}
