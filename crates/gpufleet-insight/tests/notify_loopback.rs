//! The notifiers against a real loopback receiver: bodies as each receiver expects them, retries
//! after failures and timeouts, no retry of a client error, no token in errors or `Debug`, and the
//! queue worker under a supervisor.

mod common;

use common::{closed_port, eventually, receiver, Misbehave};
use gpufleet_insight::alert::{Alert, AlertStatus, Notice, NoticeKind, Severity};
use gpufleet_insight::notify::{deliver, Message, Notifier, NotifierConfig, Notifiers, NotifyQueue, RetryPolicy};
use gpufleet_runtime::{Shutdown, Supervisor};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "123456:SECRET-token-value";

fn alert_notice() -> Notice {
    Notice {
        kind: NoticeKind::Firing,
        alert: Alert {
            id: "host_unreachable/7/1".into(),
            rule: "host_unreachable".into(),
            subject: "7".into(),
            host: Some("7".into()),
            host_name: Some("gpu-07".into()),
            groups: vec!["gpu".into()],
            severity: Severity::Crit,
            status: AlertStatus::Firing,
            value: None,
            message: "gpu-07 is unreachable: its agent did not answer".into(),
            started_ms: 1_700_000_000_000,
            fired_ms: Some(1_700_000_000_000),
            resolved_ms: None,
            last_notified_ms: Some(1_700_000_000_000),
            notifications: 1,
            suppressed: None,
            updated_ms: 1_700_000_000_000,
        },
    }
}

fn config(toml_src: &str) -> NotifierConfig {
    toml::from_str(toml_src).unwrap()
}

fn fast(policy: RetryPolicy) -> RetryPolicy {
    RetryPolicy { base: Duration::from_millis(10), max: Duration::from_millis(50), ..policy }
}

fn build(c: &NotifierConfig) -> (Arc<dyn Notifier>, RetryPolicy) {
    let (n, p) = c.build(reqwest::Client::new()).unwrap();
    (n, fast(p))
}

#[tokio::test]
async fn webhook_slack_and_telegram_bodies() {
    let rx = receiver(0, None).await;
    let hook = config(&format!("kind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\nheaders = {{ \"X-Team\" = \"ml\" }}", rx.url("/hook")));
    let slack = config(&format!("kind = \"slack\"\nname = \"slack\"\nurl = \"{}\"", rx.url("/slack")));
    let tg = config(&format!("kind = \"telegram\"\nname = \"tg\"\ntoken = \"{TOKEN}\"\nchat_id = \"-100\"\napi_base = \"{}\"", rx.url("")));
    let notifiers = Notifiers::from_parts(vec![build(&hook), build(&slack), build(&tg)]);
    let msg = Message::from_notice(&alert_notice());
    let reports = notifiers.send_all(&msg).await;
    assert!(reports.iter().all(|r| r.error.is_none() && r.attempts == 1), "{reports:?}");

    let got = rx.rec.accepted();
    assert_eq!(got.len(), 3);
    let by_path = |p: &str| got.iter().find(|(path, _)| path == p).map(|(_, b)| b.clone()).unwrap_or_else(|| panic!("nothing at {p}: {got:?}"));
    let w = by_path("/hook");
    assert_eq!(w["kind"], "alert");
    assert_eq!(w["notice"], "firing");
    assert_eq!(w["alert"]["rule"], "host_unreachable");
    assert_eq!(w["alert"]["host_name"], "gpu-07");
    assert_eq!(w["severity"], "CRIT");
    assert_eq!(w["title"], "[CRIT] gpu-07: host_unreachable");
    let s = by_path("/slack");
    assert!(s["text"].as_str().unwrap().starts_with("[CRIT] gpu-07: host_unreachable\ngpu-07 is unreachable"));
    assert_eq!(s["blocks"][0]["type"], "header");
    assert_eq!(s["blocks"][0]["text"]["text"], "[CRIT] gpu-07: host_unreachable");
    assert_eq!(s["blocks"][1]["text"]["type"], "mrkdwn");
    let t = by_path(&format!("/bot{TOKEN}/sendMessage"));
    assert_eq!(t["chat_id"], "-100");
    assert!(t["text"].as_str().unwrap().contains("gpu-07 is unreachable"));
    assert_eq!(t["disable_web_page_preview"], true);
}

#[tokio::test]
async fn failures_are_retried_until_accepted() {
    let rx = receiver(2, Some(Misbehave::Fail)).await;
    let (n, p) = build(&config(&format!("kind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\nretries = 3", rx.url("/hook"))));
    let (attempts, r) = deliver(n.as_ref(), &Message::from_notice(&alert_notice()), &p).await;
    r.unwrap();
    assert_eq!(attempts, 3);
    assert_eq!(rx.rec.calls(), 3);
    assert_eq!(rx.rec.accepted().len(), 1);

    // Fewer retries than failures: gives up with the receiver's status.
    let rx = receiver(5, Some(Misbehave::Fail)).await;
    let (n, p) = build(&config(&format!("kind = \"slack\"\nname = \"s\"\nurl = \"{}\"\nretries = 1", rx.url("/slack"))));
    let (attempts, r) = deliver(n.as_ref(), &Message::from_notice(&alert_notice()), &p).await;
    assert_eq!(attempts, 2);
    assert_eq!(r.unwrap_err().to_string(), "s: receiver answered HTTP 500");
    assert!(rx.rec.accepted().is_empty());
}

#[tokio::test]
async fn a_hung_receiver_times_out_and_the_retry_gets_through() {
    let rx = receiver(1, Some(Misbehave::Hang)).await;
    let (n, p) = build(&config(&format!("kind = \"telegram\"\nname = \"tg\"\ntoken = \"{TOKEN}\"\nchat_id = \"1\"\napi_base = \"{}\"\ntimeout = \"300ms\"", rx.url(""))));
    let (attempts, r) = deliver(n.as_ref(), &Message::from_notice(&alert_notice()), &p).await;
    r.unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(rx.rec.accepted().len(), 1);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_tokens_never_show() {
    let rx = receiver(10, Some(Misbehave::BadRequest)).await;
    let tg = config(&format!("kind = \"telegram\"\nname = \"tg\"\ntoken = \"{TOKEN}\"\nchat_id = \"1\"\napi_base = \"{}\"", rx.url("")));
    let (n, p) = build(&tg);
    let (attempts, r) = deliver(n.as_ref(), &Message::from_notice(&alert_notice()), &p).await;
    assert_eq!(attempts, 1);
    let e = r.unwrap_err().to_string();
    assert_eq!(e, "tg: receiver answered HTTP 400: Bad Request: chat not found");
    assert!(!format!("{n:?}").contains("SECRET"), "{n:?}");
    assert!(!format!("{tg:?}").contains("SECRET"));

    // Connection refused: the transport error carries no URL, so no token.
    let port = closed_port().await;
    let (n, p) = build(&config(&format!("kind = \"telegram\"\nname = \"tg\"\ntoken = \"{TOKEN}\"\nchat_id = \"1\"\napi_base = \"http://127.0.0.1:{port}\"\nretries = 1")));
    let (attempts, r) = deliver(n.as_ref(), &Message::from_notice(&alert_notice()), &p).await;
    assert_eq!(attempts, 2);
    let e = r.unwrap_err();
    assert!(e.retryable());
    let text = format!("{e} / {e:?}");
    assert!(!text.contains("SECRET") && !text.contains("sendMessage"), "{text}");
    let slack = config("kind = \"slack\"\nname = \"s\"\nurl = \"https://hooks.slack.com/services/T000/B000/SECRETPART\"");
    assert_eq!(format!("{slack:?}"), "NotifierConfig(slack:s)");
    let (n, _) = build(&slack);
    assert!(!format!("{n:?}").contains("SECRETPART"));
}

#[tokio::test]
async fn configuration_is_checked_before_building() {
    let bad = |src: &str| config(src).check().unwrap_err();
    assert!(bad("kind = \"webhook\"\nname = \"w\"\nurl = \"ftp://x\"").contains("http(s)"));
    assert!(bad("kind = \"telegram\"\nname = \"t\"\ntoken = \"a/b\"\nchat_id = \"1\"").contains("token"));
    assert!(bad("kind = \"telegram\"\nname = \"t\"\ntoken = \"ab\"\nchat_id = \"\"").contains("chat_id"));
    assert!(bad("kind = \"slack\"\nname = \"s\"\nurl = \"http://a\"\ntimeout = \"0s\"").contains("timeout"));
    assert!(bad("kind = \"webhook\"\nname = \"w\"\nurl = \"http://a\"\nheaders = { \"bad header\" = \"v\" }").contains("header"));
    let good = config("kind = \"telegram\"\nname = \"t\"\ntoken = \"ab\"\nchat_id = \"1\"");
    assert_eq!(good.policy().unwrap().attempts, 4);
    assert!(Notifiers::build(&[good]).is_ok());
}

#[tokio::test]
async fn the_queue_worker_delivers_under_a_supervisor() {
    let rx = receiver(1, Some(Misbehave::Fail)).await;
    let (n, p) = build(&config(&format!("kind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"", rx.url("/hook"))));
    let (queue, worker) = NotifyQueue::new(16, Notifiers::from_parts(vec![(n, p)]));
    let reports = worker.last_reports();
    let mut sup = Supervisor::new(Shutdown::new());
    sup.spawn(worker);
    let notices: Vec<Notice> = (0..12).map(|i| Notice { alert: Alert { subject: format!("h{i}"), ..alert_notice().alert }, ..alert_notice() }).collect();
    for m in Message::from_notices(&notices) {
        assert!(queue.push(m));
    }
    // 10 individual messages and one summary of the other 2.
    let got = eventually(10, "11 accepted messages", || {
        let rec = rx.rec.clone();
        async move { (rec.accepted().len() == 11).then(|| rec.accepted()) }
    })
    .await;
    let summary = &got.last().unwrap().1;
    assert_eq!(summary["kind"], "alert_summary");
    assert_eq!(summary["title"], "2 more alert notifications: 2 firing, 0 resolved");
    assert_eq!(rx.rec.calls(), 12, "one failure retried");
    assert_eq!(queue.stats().queued.load(std::sync::atomic::Ordering::Relaxed), 11);
    eventually(5, "all 11 counted delivered", || {
        let d = queue.stats().delivered.load(std::sync::atomic::Ordering::Relaxed);
        async move { (d == 11).then_some(()) }
    })
    .await;
    assert!(reports.lock().iter().all(|r| r.error.is_none()));
    sup.shutdown(Duration::from_secs(5)).await;
}
