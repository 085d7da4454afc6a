//! The conformance suite every [`Broker`] backend must pass.
//!
//! Each case is a `pub async fn` taking a *factory*: `Fn(visibility_timeout, max_attempts)` that
//! returns a future of a fresh `Arc<dyn Broker>`. [`broker_test_suite!`](crate::broker_test_suite)
//! expands to one `#[tokio::test]` per case:
//!
//! ```ignore
//! gpufleet_broker::broker_test_suite!(my_factory);
//! ```
//!
//! The cases use real time (visibility timeouts of a few hundred milliseconds), bounded waits
//! through `fetch(.., wait)` and polling with a deadline, unique topic names (so backends on a
//! shared server can run them side by side), and never look at files: any backend can run them.
//! This is test-support code: a failed check panics, like an assertion.

use crate::{Broker, BrokerError, Message, MessageId};
use bytes::Bytes;
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use std::{
    collections::BTreeSet,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::time::Instant;

/// Short visibility timeout used where redelivery is expected.
const SHORT_VISIBILITY: Duration = Duration::from_millis(300);
/// Long visibility timeout used where redelivery must not happen during the case.
const LONG_VISIBILITY: Duration = Duration::from_secs(60);
/// Upper bound for anything a case waits for.
const PATIENCE: Duration = Duration::from_secs(10);

/// A topic name no other case (or earlier run against the same server) uses.
pub fn unique_topic(case: &str) -> TopicName {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    TopicName::new(format!(
        "suite-{case}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn payloads(prefix: &str, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("{prefix}-{i}")))
        .collect()
}

/// Fetches until `want` messages arrived or [`PATIENCE`] ran out.
async fn fetch_n(
    b: &dyn Broker,
    t: &TopicName,
    g: &GroupName,
    c: &ConsumerName,
    want: usize,
) -> Vec<Message> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        got.extend(
            b.fetch(t, g, c, want - got.len(), left.min(Duration::from_secs(1)))
                .await
                .expect("fetch"),
        );
    }
    got
}

/// Asserts that nothing is delivered within `wait`.
async fn assert_nothing_within(b: &dyn Broker, t: &TopicName, g: &GroupName, wait: Duration) {
    let got = b
        .fetch(t, g, &ConsumerName::new("probe"), 100, wait)
        .await
        .expect("fetch");
    let ids: Vec<_> = got.iter().map(|m| (m.id, m.attempt)).collect();
    assert!(got.is_empty(), "expected no delivery, got {ids:?}");
}

/// Polls `check` until it returns true, for at most [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn group_stats(b: &dyn Broker, t: &TopicName, g: &GroupName) -> Option<crate::GroupStats> {
    let stats = b.stats().await.expect("stats");
    stats
        .into_iter()
        .find(|s| &s.topic == t)?
        .groups
        .into_iter()
        .find(|s| &s.group == g)
}

async fn setup<F, Fut>(
    factory: F,
    visibility: Duration,
    max_attempts: u32,
    case: &str,
) -> (Arc<dyn Broker>, TopicName, GroupName)
where
    F: Fn(Duration, u32) -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let broker = factory(visibility, max_attempts).await;
    let (topic, group) = (unique_topic(case), GroupName::new("workers"));
    broker
        .create_group(&topic, &group)
        .await
        .expect("create_group");
    broker
        .create_group(&topic, &group)
        .await
        .expect("create_group is idempotent");
    (broker, topic, group)
}

/// Published messages come back in order with attempt 1, and acked ones never again; a waiting
/// fetch returns a message published while it waits.
pub async fn round_trip_in_order<F, Fut>(factory: F)
where
    F: Fn(Duration, u32) -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (b, t, g) = setup(factory, SHORT_VISIBILITY, 5, "roundtrip").await;
    let c = ConsumerName::new("c1");
    let mut ids = b.publish(&t, &payloads("m", 5)).await.expect("publish");
    ids.extend(b.publish(&t, &payloads("n", 5)).await.expect("publish"));
    assert_eq!(ids.len(), 10);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids must increase: {ids:?}"
    );
    let got = fetch_n(&*b, &t, &g, &c, 10).await;
    let want: Vec<Bytes> = payloads("m", 5)
        .into_iter()
        .chain(payloads("n", 5))
        .collect();
    assert_eq!(
        got.iter().map(|m| m.payload.clone()).collect::<Vec<_>>(),
        want
    );
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert!(got.iter().all(|m| m.attempt == 1));
    b.ack(&t, &g, &ids).await.expect("ack");
    assert_nothing_within(&*b, &t, &g, SHORT_VISIBILITY * 2).await;

    let waiter = {
        let (b, t, g, c) = (b.clone(), t.clone(), g.clone(), c.clone());
        tokio::spawn(async move { b.fetch(&t, &g, &c, 10, PATIENCE).await })
    };
    let late = b
        .publish(&t, &[Bytes::from_static(b"late")])
        .await
        .expect("publish");
    let got = waiter.await.expect("fetch task").expect("fetch");
    assert_eq!(
        got.iter()
            .map(|m| (m.id, m.payload.clone()))
            .collect::<Vec<_>>(),
        vec![(late[0], Bytes::from_static(b"late"))]
    );
}

/// A message not acked within the visibility timeout is delivered again as attempt 2.
pub async fn unacked_is_redelivered<F, Fut>(factory: F)
where
    F: Fn(Duration, u32) -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (b, t, g) = setup(factory, SHORT_VISIBILITY, 5, "redeliver").await;
    let c = ConsumerName::new("c1");
    let ids = b
        .publish(&t, &[Bytes::from_static(b"once")])
        .await
        .expect("publish");
    let first = fetch_n(&*b, &t, &g, &c, 1).await;
    assert_eq!((first[0].id, first[0].attempt), (ids[0], 1));
    let again = fetch_n(&*b, &t, &g, &c, 1).await;
    assert_eq!(
        again.len(),
        1,
        "not redelivered after the visibility timeout"
    );
    assert_eq!(
        (again[0].id, again[0].attempt, &again[0].payload[..]),
        (ids[0], 2, &b"once"[..])
    );
    b.ack(&t, &g, &ids).await.expect("ack");
    assert_nothing_within(&*b, &t, &g, SHORT_VISIBILITY * 2).await;
}

/// A nacked message is due at once (long before its visibility timeout).
pub async fn nack_redelivers_at_once<F, Fut>(factory: F)
where
    F: Fn(Duration, u32) -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (b, t, g) = setup(factory, LONG_VISIBILITY, 5, "nack").await;
    let c = ConsumerName::new("c1");
    let ids = b
        .publish(&t, &[Bytes::from_static(b"retry me")])
        .await
        .expect("publish");
    assert_eq!(fetch_n(&*b, &t, &g, &c, 1).await[0].attempt, 1);
    b.nack(&t, &g, ids[0], "transient").await.expect("nack");
    let again = b.fetch(&t, &g, &c, 10, PATIENCE).await.expect("fetch");
    assert_eq!(
        again.iter().map(|m| (m.id, m.attempt)).collect::<Vec<_>>(),
        vec![(ids[0], 2)]
    );
}

/// After `max_attempts` deliveries a message goes to `<topic>.dead` with the last nack reason (or
/// the visibility timeout) and its attempt count, and is not delivered again.
pub async fn dead_letter_after_max_attempts<F, Fut>(factory: F)
where
    F: Fn(Duration, u32) -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (b, t, g) = setup(factory, SHORT_VISIBILITY, 2, "dead").await;
    let c = ConsumerName::new("c1");
    let ids = b.publish(&t, &payloads("p", 3)).await.expect("publish");
    let (poison, slow, fine) = (ids[0], ids[1], ids[2]);
    assert_eq!(fetch_n(&*b, &t, &g, &c, 3).await.len(), 3);
    b.ack(&t, &g, &[fine]).await.expect("ack");
    b.nack(&t, &g, poison, "boom 1").await.expect("nack");
    // `slow` is never acked: its second delivery comes from the visibility timeout.
    let mut second: Vec<(MessageId, u32)> = fetch_n(&*b, &t, &g, &c, 2)
        .await
        .iter()
        .map(|m| (m.id, m.attempt))
        .collect();
    second.sort();
    assert_eq!(second, vec![(poison, 2), (slow, 2)]);
    b.nack(&t, &g, poison, "boom 2").await.expect("nack");
    // Neither comes back: `poison` is out of attempts now, `slow` when its timeout expires.
    assert_nothing_within(&*b, &t, &g, SHORT_VISIBILITY * 3).await;
    eventually("two dead letters", || async {
        b.dead_letters(&t, 10).await.expect("dead_letters").len() == 2
    })
    .await;
    let mut letters = b.dead_letters(&t, 10).await.expect("dead_letters");
    letters.sort_by_key(|l| l.original_id);
    let (p, s) = (&letters[0], &letters[1]);
    assert_eq!(
        (p.original_id, p.reason.as_str(), p.attempts, &p.payload[..]),
        (poison, "boom 2", 2, &b"p-0"[..])
    );
    assert_eq!((&p.topic, &p.group), (&t, &g));
    assert!(p.dead_at_ms > 0);
    assert_eq!(
        (s.original_id, s.attempts, &s.payload[..]),
        (slow, 2, &b"p-1"[..])
    );
    assert!(
        s.reason.contains("visibility timeout"),
        "reason: {}",
        s.reason
    );
    assert_eq!(
        b.dead_letters(&t, 1).await.expect("dead_letters").len(),
        1,
        "limit is honoured"
    );
}

/// Every consumer group gets every message.
pub async fn every_group_gets_every_message<F, Fut>(factory: F)
where
    F: Fn(Duration, u32) -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (b, t, g1) = setup(factory, LONG_VISIBILITY, 5, "groups").await;
    let g2 = GroupName::new("auditors");
    b.create_group(&t, &g2).await.expect("create_group");
    let ids = b.publish(&t, &payloads("x", 20)).await.expect("publish");
    for g in [&g1, &g2] {
        let got = fetch_n(&*b, &t, g, &ConsumerName::new("c"), 20).await;
        assert_eq!(
            got.iter().map(|m| m.id).collect::<Vec<_>>(),
            ids,
            "group {g}"
        );
        b.ack(&t, g, &ids).await.expect("ack");
    }
}

/// Two consumers of one group never hold the same message at the same time, and together get all.
pub async fn consumers_share_a_group<F, Fut>(factory: F)
where
    F: Fn(Duration, u32) -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (b, t, g) = setup(factory, LONG_VISIBILITY, 5, "share").await;
    let ids = b.publish(&t, &payloads("w", 100)).await.expect("publish");
    let consume = |name: &'static str| {
        let (b, t, g) = (b.clone(), t.clone(), g.clone());
        tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..1000 {
                let got = b
                    .fetch(
                        &t,
                        &g,
                        &ConsumerName::new(name),
                        7,
                        Duration::from_millis(200),
                    )
                    .await
                    .expect("fetch");
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|m| m.id));
            }
            mine
        })
    };
    let (a, c) = (consume("a"), consume("b"));
    let (a, c) = (a.await.expect("consumer a"), c.await.expect("consumer b"));
    let all: BTreeSet<MessageId> = a.iter().chain(&c).copied().collect();
    assert_eq!(
        all.len(),
        a.len() + c.len(),
        "a message was held by both consumers"
    );
    assert_eq!(all, ids.into_iter().collect::<BTreeSet<_>>());
}

/// Acking an unknown or already-acked id is not an error and changes nothing.
pub async fn unknown_ack_is_harmless<F, Fut>(factory: F)
where
    F: Fn(Duration, u32) -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (b, t, g) = setup(factory, SHORT_VISIBILITY, 5, "unknown").await;
    let ids = b.publish(&t, &payloads("u", 2)).await.expect("publish");
    let bogus = MessageId(u128::from(u64::MAX) * 3 + 7);
    b.ack(&t, &g, &[bogus]).await.expect("ack of an unknown id");
    b.nack(&t, &g, bogus, "nothing")
        .await
        .expect("nack of an unknown id");
    assert_eq!(
        fetch_n(&*b, &t, &g, &ConsumerName::new("c"), 2).await.len(),
        2
    );
    b.ack(&t, &g, &ids[..1]).await.expect("ack");
    b.ack(&t, &g, &ids[..1])
        .await
        .expect("second ack of the same id");
    let again = fetch_n(&*b, &t, &g, &ConsumerName::new("c"), 1).await;
    assert_eq!(
        again.iter().map(|m| (m.id, m.attempt)).collect::<Vec<_>>(),
        vec![(ids[1], 2)],
        "only the unacked one returns"
    );
    b.ack(&t, &g, &ids).await.expect("ack");
    eventually("acked == 2", || async {
        group_stats(&*b, &t, &g)
            .await
            .is_some_and(|s| s.acked == 2 && s.in_flight == 0)
    })
    .await;
}

/// Stats report lag, in-flight, acked and dead-lettered counts, and the topic's depth.
pub async fn stats_reflect_deliveries<F, Fut>(factory: F)
where
    F: Fn(Duration, u32) -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (b, t, g) = setup(factory, LONG_VISIBILITY, 1, "stats").await;
    let c = ConsumerName::new("c1");
    b.publish(&t, &payloads("s", 6)).await.expect("publish");
    let got = fetch_n(&*b, &t, &g, &c, 3).await;
    assert_eq!(got.len(), 3);
    let s = group_stats(&*b, &t, &g).await.expect("group in stats");
    assert_eq!(
        (s.lag, s.in_flight, s.acked, s.dead_lettered, s.consumers),
        (3, 3, 0, 0, 1)
    );
    b.ack(&t, &g, &[got[0].id, got[1].id]).await.expect("ack");
    b.nack(&t, &g, got[2].id, "bad input").await.expect("nack");
    eventually("stats after ack and dead letter", || async {
        group_stats(&*b, &t, &g)
            .await
            .is_some_and(|s| (s.lag, s.in_flight, s.acked, s.dead_lettered) == (3, 0, 2, 1))
    })
    .await;
    let stats = b.stats().await.expect("stats");
    let topic = stats.iter().find(|s| s.topic == t).expect("topic in stats");
    assert_eq!(
        (topic.published, topic.depth, topic.dead_letters),
        (6, 3, 1)
    );
}

/// Unknown groups and unacceptable names are errors, not panics.
pub async fn rejects_unknown_groups_and_bad_names<F, Fut>(factory: F)
where
    F: Fn(Duration, u32) -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (b, t, _) = setup(factory, SHORT_VISIBILITY, 5, "names").await;
    let missing = GroupName::new("nobody");
    let err = b
        .fetch(&t, &missing, &ConsumerName::new("c"), 1, Duration::ZERO)
        .await
        .expect_err("unknown group");
    assert!(matches!(err, BrokerError::UnknownGroup { .. }), "{err}");
    let err = b
        .publish(&TopicName::new("no spaces/or slashes"), &payloads("z", 1))
        .await
        .expect_err("bad name");
    assert!(matches!(err, BrokerError::InvalidName(_)), "{err}");
    let err = b
        .create_group(&t, &GroupName::new("../escape"))
        .await
        .expect_err("bad group name");
    assert!(matches!(err, BrokerError::InvalidName(_)), "{err}");
}

/// Expands to one `#[tokio::test]` per conformance case, each calling `$factory` for its broker.
/// `$factory`: `Fn(Duration, u32) -> impl Future<Output = Arc<dyn Broker>>` (visibility timeout,
/// max attempts).
/// `extend` keeps a message invisible past its visibility timeout without counting a delivery;
/// once the consumer stops extending, the message is redelivered as attempt 2 (not dead-lettered,
/// though the extensions outlasted `max_attempts` visibility timeouts).
pub async fn extend_keeps_a_message_invisible_without_counting<F, Fut>(factory: F)
where
    F: Fn(Duration, u32) -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (b, t, g) = setup(factory, SHORT_VISIBILITY, 2, "extend").await;
    b.publish(&t, &payloads("x", 1)).await.expect("publish");
    let worker = ConsumerName::new("worker");
    let got = fetch_n(b.as_ref(), &t, &g, &worker, 1).await;
    assert_eq!(got.len(), 1);
    let (id, other) = (got[0].id, ConsumerName::new("other"));
    // Four visibility timeouts of extensions, every third of a timeout; meanwhile nobody else
    // may get the message.
    let until = Instant::now() + SHORT_VISIBILITY * 4;
    while Instant::now() < until {
        b.extend(&t, &g, &worker, &[id]).await.expect("extend");
        let stolen = b.fetch(&t, &g, &other, 10, SHORT_VISIBILITY / 3).await.expect("fetch");
        assert!(stolen.is_empty(), "an extended message was handed to another consumer: {:?}", stolen.iter().map(|m| m.attempt).collect::<Vec<_>>());
    }
    let again = fetch_n(b.as_ref(), &t, &g, &other, 1).await;
    assert_eq!(again.len(), 1, "redelivered once the extensions stop");
    assert_eq!((again[0].id, again[0].attempt), (id, 2), "extensions count no delivery");
    b.ack(&t, &g, &[id]).await.expect("ack");
    // Extending an acked or unknown id is harmless.
    b.extend(&t, &g, &worker, &[id, crate::MessageId(u128::MAX)]).await.expect("extend after ack");
    assert_nothing_within(b.as_ref(), &t, &g, SHORT_VISIBILITY * 2).await;
    assert!(b.dead_letters(&t, 10).await.expect("dead letters").is_empty());
}

#[macro_export]
macro_rules! broker_test_suite {
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testsuite::$case($factory).await;
            }
        )*
    };
    ($factory:expr) => {
        $crate::broker_test_suite!(@cases $factory;
            round_trip_in_order,
            unacked_is_redelivered,
            nack_redelivers_at_once,
            dead_letter_after_max_attempts,
            every_group_gets_every_message,
            consumers_share_a_group,
            unknown_ack_is_harmless,
            stats_reflect_deliveries,
            rejects_unknown_groups_and_bad_names,
            extend_keeps_a_message_invisible_without_counting,
        );
    };
}
