//! Behaviour of the Redis backend beyond the conformance suite, on the shared test server: a dead
//! consumer's messages move to a live one (in another broker instance, as in another process), a
//! waiting fetch does not hold up other calls, a nack ends a waiting fetch, acked entries are
//! trimmed, and an absent server is reported without the password.

mod common;

use bytes::Bytes;
use common::redis_support::{config, free_port, raw, CleanBroker, RedisServer};
use gpufleet_broker::{Broker, BrokerError, MessageId, RedisBroker};
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

fn names() -> (TopicName, GroupName) {
    (TopicName::new("jobs"), GroupName::new("workers"))
}

fn payloads(n: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("msg-{i}"))).collect()
}

/// Polls until the server at `url` (a test's own) has a client blocked in a command, so a fetch
/// that has not returned is inside its blocking read.
async fn wait_until_blocked(url: &str) {
    let mut conn = raw(url);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query(&mut conn)
            .expect("INFO");
        if info.lines().any(|l| l.trim() == "blocked_clients:1") {
            return;
        }
        assert!(Instant::now() < deadline, "the fetch never blocked: {info}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A broker on a Redis server of the test's own (so its blocked clients are the test's).
async fn own_server_broker(dir: &std::path::Path) -> (RedisServer, Arc<RedisBroker>, String) {
    let server = RedisServer::start(dir, "--port", &["--save", ""]).await;
    let url = server.url("", false);
    let cfg = config(&url, "gftest-own", Duration::from_secs(60), 5);
    let broker = RedisBroker::connect(cfg)
        .await
        .expect("connect to own redis-server");
    (server, Arc::new(broker), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_messages_move_to_a_live_consumer() {
    let visibility = Duration::from_secs(2);
    let a = CleanBroker::connect("claim", visibility, 5).await;
    // A second broker on the same keys, as a second process would have.
    let b = RedisBroker::connect(config(a.url(), a.prefix(), visibility, 5))
        .await
        .expect("second broker");
    let (t, g) = names();
    a.create_group(&t, &g).await.expect("create_group");
    let ids = a.publish(&t, &payloads(10)).await.expect("publish");

    let held = a
        .fetch(
            &t,
            &g,
            &ConsumerName::new("doomed"),
            100,
            Duration::from_secs(1),
        )
        .await
        .expect("fetch");
    assert_eq!(held.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    // "doomed" never acks and never fetches again. Nothing is due for the live consumer yet.
    let live = ConsumerName::new("live");
    let early = b
        .fetch(&t, &g, &live, 100, Duration::ZERO)
        .await
        .expect("fetch");
    assert!(
        early.is_empty(),
        "claimed before the visibility timeout: {early:?}"
    );

    let deadline = Instant::now() + PATIENCE;
    let mut claimed = Vec::new();
    while claimed.len() < ids.len() && Instant::now() < deadline {
        claimed.extend(
            b.fetch(&t, &g, &live, 100, Duration::from_secs(1))
                .await
                .expect("fetch"),
        );
    }
    let got: Vec<(MessageId, u32, Bytes)> = claimed
        .iter()
        .map(|m| (m.id, m.attempt, m.payload.clone()))
        .collect();
    let want: Vec<(MessageId, u32, Bytes)> = ids
        .iter()
        .zip(payloads(10))
        .map(|(&id, p)| (id, 2, p))
        .collect();
    assert_eq!(
        got, want,
        "the live consumer gets every held message as attempt 2"
    );

    let stream = format!("{}:t:{t}", a.prefix());
    let pending: (u64, redis::Value, redis::Value, Vec<(String, String)>) = redis::cmd("XPENDING")
        .arg(&stream)
        .arg(g.as_str())
        .query(&mut raw(a.url()))
        .expect("XPENDING");
    assert_eq!(
        (pending.0, pending.3),
        (10, vec![("live".to_string(), "10".to_string())])
    );
    b.ack(&t, &g, &ids).await.expect("ack");
    let stats = b.stats().await.expect("stats");
    let group = &stats.iter().find(|s| s.topic == t).expect("topic").groups[0];
    assert_eq!(
        (group.in_flight, group.lag, group.acked, group.redeliveries),
        (0, 0, 10, 10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_does_not_hold_up_other_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, broker, url) = own_server_broker(dir.path()).await;
    let (t, g) = names();
    let other = TopicName::new("other");
    broker.create_group(&t, &g).await.expect("create_group");
    broker.create_group(&other, &g).await.expect("create_group");
    let waiter = {
        let (b, t, g) = (broker.clone(), t.clone(), g.clone());
        tokio::spawn(async move {
            b.fetch(&t, &g, &ConsumerName::new("waiter"), 10, PATIENCE)
                .await
        })
    };
    wait_until_blocked(&url).await;
    for _ in 0..20 {
        broker
            .publish(&other, &payloads(5))
            .await
            .expect("publish elsewhere");
        let got = broker
            .fetch(&other, &g, &ConsumerName::new("busy"), 5, Duration::ZERO)
            .await
            .expect("fetch elsewhere");
        broker
            .ack(&other, &g, &got.iter().map(|m| m.id).collect::<Vec<_>>())
            .await
            .expect("ack");
        broker.stats().await.expect("stats");
    }
    assert!(
        !waiter.is_finished(),
        "the waiting fetch ended before the other calls were done (did they wait for it?)"
    );
    let late = broker
        .publish(&t, &[Bytes::from_static(b"late")])
        .await
        .expect("publish");
    let got = waiter.await.expect("waiter task").expect("fetch");
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), late);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_ends_a_waiting_fetch_of_the_same_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, broker, url) = own_server_broker(dir.path()).await;
    let (t, g) = names();
    broker.create_group(&t, &g).await.expect("create_group");
    let ids = broker.publish(&t, &payloads(1)).await.expect("publish");
    let first = broker
        .fetch(
            &t,
            &g,
            &ConsumerName::new("first"),
            1,
            Duration::from_secs(1),
        )
        .await
        .expect("fetch");
    assert_eq!(first.len(), 1);
    let waiter = {
        let (b, t, g) = (broker.clone(), t.clone(), g.clone());
        // Without a wake-up this fetch would sleep through its whole wait (the message is not
        // due again for 60 s), far past PATIENCE.
        tokio::spawn(async move {
            b.fetch(&t, &g, &ConsumerName::new("second"), 1, 3 * PATIENCE)
                .await
        })
    };
    wait_until_blocked(&url).await;
    broker
        .nack(&t, &g, ids[0], "try elsewhere")
        .await
        .expect("nack");
    let got = tokio::time::timeout(PATIENCE, waiter)
        .await
        .expect("the nack did not end the waiting fetch")
        .expect("waiter task")
        .expect("fetch");
    assert_eq!(
        got.iter().map(|m| (m.id, m.attempt)).collect::<Vec<_>>(),
        vec![(ids[0], 2)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_acked_by_every_group_are_trimmed() {
    let broker = CleanBroker::connect("trim", Duration::from_secs(60), 5).await;
    let (t, g) = names();
    broker.create_group(&t, &g).await.expect("create_group");
    let ids = broker.publish(&t, &payloads(1000)).await.expect("publish");
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + PATIENCE;
    while got.len() < ids.len() && Instant::now() < deadline {
        let batch = broker
            .fetch(
                &t,
                &g,
                &ConsumerName::new("c"),
                1000,
                Duration::from_secs(1),
            )
            .await
            .expect("fetch");
        got.extend(batch.into_iter().map(|m| m.id));
    }
    assert_eq!(got, ids.iter().copied().collect::<BTreeSet<_>>());
    broker.ack(&t, &g, &ids).await.expect("ack");
    let len: u64 = redis::cmd("XLEN")
        .arg(format!("{}:t:{t}", broker.prefix()))
        .query(&mut raw(broker.url()))
        .expect("XLEN");
    // Trimming is approximate (whole stream nodes of at most 100 entries).
    assert!(
        len <= 100,
        "{len} of 1000 acked entries still in the stream"
    );
    let stats = broker.stats().await.expect("stats");
    let topic = stats.iter().find(|s| s.topic == t).expect("topic");
    assert_eq!(
        (topic.published, topic.depth, topic.groups[0].lag),
        (1000, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_every_key_of_its_prefix_and_nothing_else() {
    let doomed = CleanBroker::connect("purge", Duration::from_secs(60), 1).await;
    let bystander = CleanBroker::connect("bystander", Duration::from_secs(60), 1).await;
    let (t, g) = names();
    for b in [&doomed, &bystander] {
        b.create_group(&t, &g).await.expect("create_group");
        b.publish(&t, &payloads(3)).await.expect("publish");
    }
    let got = doomed
        .fetch(&t, &g, &ConsumerName::new("c"), 1, Duration::from_secs(1))
        .await
        .expect("fetch");
    doomed
        .nack(&t, &g, got[0].id, "dead at once")
        .await
        .expect("nack");
    assert_eq!(
        doomed
            .dead_letters(&t, 10)
            .await
            .expect("dead letters")
            .len(),
        1
    );
    assert_eq!(
        doomed.broker.purge().await.expect("purge"),
        2,
        "the stream and its dead stream"
    );
    let keys = |prefix: &str| -> Vec<String> {
        redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut raw(doomed.url()))
            .expect("KEYS")
    };
    assert!(keys(doomed.prefix()).is_empty());
    assert_eq!(
        keys(bystander.prefix()),
        vec![format!("{}:t:jobs", bystander.prefix())]
    );
}

#[tokio::test]
async fn an_absent_server_is_unavailable_and_the_password_stays_hidden() {
    let url = format!("redis://:hunter2-secret@127.0.0.1:{}", free_port());
    let mut cfg = config(&url, "gftest-absent", Duration::from_secs(1), 5);
    cfg.connect_timeout = Duration::from_secs(2);
    let err = RedisBroker::connect(cfg)
        .await
        .expect_err("nothing listens there");
    let text = err.to_string();
    assert!(matches!(err, BrokerError::Unavailable(_)), "{text}");
    assert!(err.is_retryable());
    assert!(
        text.contains("cannot reach Redis at redis://:***@127.0.0.1:"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "password shown: {text}");
}
