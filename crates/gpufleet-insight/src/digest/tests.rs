//! Digest tests: the numbers, the action rules in priority order, ordering, renderers, the
//! weekly schedule and the worker under paused time.

use super::worker::{next_slot, DigestSchedule, DigestSource, DigestWorker};
use super::*;
use crate::config::DigestConfig;
use crate::notify::{Message, Notifier, NotifyError, Notifiers, RetryPolicy};
use crate::score::{score, ScoreInput};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

const DAY: i64 = 86_400_000;
// 2023-11-13T00:00:00Z, a Monday.
const MONDAY: i64 = 1_699_833_600_000;
const GIB: f64 = (1u64 << 30) as f64;

fn series(vals: &[f64]) -> Vec<(i64, f64)> {
    vals.iter().enumerate().map(|(i, v)| (MONDAY + i as i64 * DAY, *v)).collect()
}

fn input(host: &str) -> DigestInput {
    DigestInput { host_id: host.into(), host: host.into(), steal: series(&[1.0, 2.0, 3.0]), disk_used: series(&[40.0, 42.0, 45.5]), swap_used: series(&[0.0, 5e8, 1e8]), containers_unhealthy: series(&[0.0, 2.0, 1.0]), ..DigestInput::default() }
}

#[test]
fn numbers_of_a_week() {
    let d = host_digest(&DigestInput { freed_bytes: Some(3 << 30), ..input("a") });
    assert_eq!(d.steal_avg_pct, Some(2.0));
    assert_eq!(d.disk_used_pct, Some(45.5));
    assert_eq!(d.disk_change_pct, Some(5.5));
    assert_eq!(d.swap_peak_bytes, Some(5e8));
    assert_eq!(d.unhealthy_containers_max, Some(2));
    assert_eq!(d.freed_bytes, Some(3 << 30));
    assert_eq!(d.top_action, None);
    let empty = host_digest(&DigestInput::default());
    assert_eq!((empty.steal_avg_pct, empty.disk_used_pct, empty.swap_peak_bytes), (None, None, None));
}

#[test]
fn actions_follow_their_priority() {
    let all = DigestInput {
        disk_used: series(&[80.0, 86.0]),
        unhealthy_now: vec!["web".into()],
        steal: series(&[9.0]),
        swap_used: series(&[2.0 * GIB]),
        ..input("a")
    };
    let a = |i: &DigestInput| host_digest(i).top_action.map(|a| (a.priority, a.text));
    assert_eq!(a(&all), Some((1, "Free disk space: disk at 86 %".to_owned())));
    let soon = DigestInput { disk_used: series(&[70.0, 80.0]), disk_days_to_90: Some(2.4), ..all.clone() };
    assert_eq!(a(&soon), Some((1, "Free disk space: disk at 80 %, reaches 90 % in 2 days".to_owned())));
    let no_disk = DigestInput { disk_used: series(&[50.0]), ..all.clone() };
    assert_eq!(a(&no_disk), Some((2, "Fix unhealthy containers: web".to_owned())));
    let steal = DigestInput { unhealthy_now: vec![], ..no_disk.clone() };
    assert_eq!(a(&steal).unwrap().0, 3);
    assert!(a(&steal).unwrap().1.ends_with("steal averaged 9.0 %"));
    let swap = DigestInput { steal: series(&[4.9]), ..steal.clone() };
    assert_eq!(a(&swap), Some((4, "Add memory or lower the load: swap peaked at 2.0 GiB".to_owned())));
    let card = score("a", &ScoreInput { steal_percent: Some(1.0), ..ScoreInput::default() }, MONDAY);
    let by_score = DigestInput { swap_used: series(&[0.0]), score: Some(card), ..swap.clone() };
    let (p, text) = a(&by_score).unwrap();
    assert_eq!(p, 5);
    assert!(text.starts_with("Free memory or add RAM: no sample"), "{text}");
}

#[test]
fn hosts_with_actions_come_first_and_renderers_show_them() {
    let card = |steal: f64| score("x", &ScoreInput { steal_percent: Some(steal), ..ScoreInput::default() }, MONDAY);
    let calm = input("calm");
    let full = DigestInput { disk_used: series(&[90.0, 91.0]), score: Some(card(1.0)), ..input("full|disk") };
    let d = build(MONDAY - 7 * DAY, MONDAY, &[calm, full]);
    assert_eq!(d.hosts.iter().map(|h| h.host.as_str()).collect::<Vec<_>>(), ["full|disk", "calm"]);
    assert_eq!(d.hosts_with_actions, 1);
    assert_eq!(d.fleet_score, Some(30.0));
    assert_eq!(title(&d), "gpufleet weekly digest 2023-11-06 – 2023-11-13: 2 hosts, fleet score 30/100, 1 with something to do");
    let text = render_text(&d, 1);
    assert!(text.contains("full|disk (score 30)\n  steal 2.0 % · disk 91 % (+1.0 pts) · freed – · swap peak 476.8 MiB · unhealthy containers 2\n  → Free disk space: disk at 91 %"), "{text}");
    assert!(text.ends_with("… and 1 more hosts"));
    let md = render_markdown(&d);
    assert!(md.contains("| full\\|disk | 30 | 2.0 % | 91 % | +1.0 |"), "{md}");
    assert_eq!(md.lines().count(), 6);
    let json = render_json(&d);
    assert_eq!(json["hosts"][0]["top_action"]["priority"], 1);
    let m = message(&d);
    assert_eq!(m.title, title(&d));
    assert_eq!(m.payload["kind"], "digest");
}

#[test]
fn the_schedule_is_the_next_weekday_and_hour() {
    let mon8 = DigestSchedule { weekday: 0, hour: 8 };
    assert_eq!(next_slot(MONDAY, &mon8), MONDAY + 8 * 3_600_000);
    assert_eq!(next_slot(MONDAY + 8 * 3_600_000, &mon8), MONDAY + 7 * DAY + 8 * 3_600_000);
    let sun23 = DigestSchedule { weekday: 6, hour: 23 };
    assert_eq!(next_slot(MONDAY, &sun23), MONDAY + 6 * DAY + 23 * 3_600_000);
    let cfg = DigestConfig { weekday: "Fri".into(), hour: 7, ..DigestConfig::default() };
    assert_eq!(cfg.validate().unwrap(), Some(DigestSchedule { weekday: 4, hour: 7 }));
    assert!(DigestConfig { weekday: "someday".into(), ..DigestConfig::default() }.validate().is_err());
    assert!(DigestConfig { hour: 24, ..DigestConfig::default() }.validate().is_err());
    assert_eq!(DigestConfig { enabled: false, ..DigestConfig::default() }.validate().unwrap(), None);
}

struct Weeks(Mutex<Vec<(i64, i64)>>);

#[async_trait]
impl DigestSource for Weeks {
    async fn digest_inputs(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DigestInput>, crate::source::SourceError> {
        self.0.lock().push((from_ms, to_ms));
        Ok(vec![input("a")])
    }
}

#[derive(Debug, Default)]
struct Sink(Mutex<Vec<Message>>);

#[async_trait]
impl Notifier for Sink {
    fn name(&self) -> &str {
        "sink"
    }
    fn kind(&self) -> &'static str {
        "test"
    }
    async fn send_once(&self, msg: &Message, _: Duration) -> Result<(), NotifyError> {
        self.0.lock().push(msg.clone());
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_worker_sends_once_a_week() {
    let start_wall = MONDAY + 9 * 3_600_000; // Monday 09:00, just after the slot.
    let start = tokio::time::Instant::now();
    let clock: crate::Clock = Arc::new(move || start_wall + i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX));
    let weeks = Arc::new(Weeks(Mutex::new(Vec::new())));
    let sink = Arc::new(Sink::default());
    let notifiers = Notifiers::from_parts(vec![(sink.clone() as Arc<dyn Notifier>, RetryPolicy::default())]);
    let worker = DigestWorker::new(DigestSchedule { weekday: 0, hour: 8 }, weeks.clone(), notifiers, clock);
    let mut sup = gpufleet_runtime::Supervisor::new(gpufleet_runtime::Shutdown::new());
    let status = sup.status_handle();
    sup.spawn(worker);
    // Paused time jumps to the next two Monday 08:00 slots.
    for _ in 0..10_000 {
        if weeks.0.lock().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let got = weeks.0.lock().clone();
    let slot1 = MONDAY + 7 * DAY + 8 * 3_600_000;
    assert_eq!(got, vec![(slot1 - 7 * DAY, slot1), (slot1, slot1 + 7 * DAY)]);
    assert_eq!(sink.0.lock().len(), 2);
    assert!(sink.0.lock()[0].title.starts_with("gpufleet weekly digest 2023-11-13 – 2023-11-20: 1 hosts"));
    assert_eq!(status.snapshot()[0].successes, 2);
    sup.shutdown(Duration::from_secs(1)).await;
}
