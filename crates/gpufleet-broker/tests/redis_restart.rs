//! Redis killed with SIGKILL in the middle of a stream and restarted on the same port and data
//! directory (`appendonly yes`, `appendfsync always`), under one producer and one consumer that
//! retry retryable errors with a bounded backoff.
//!
//! Asserted:
//! 1. every message whose `publish` returned `Ok` is delivered at least once, with its payload;
//! 2. every delivered payload is one the producer tried to publish (nothing invented);
//! 3. no message is delivered after an `ack` of it returned `Ok` (in particular nothing acked
//!    before the kill comes back after the restart);
//! 4. the kill happened mid-stream: at least a quarter of the messages were acked before it, and
//!    the clients saw at least one retryable error (and no other error);
//! 5. afterwards the group has nothing in flight and no lag.

mod common;

use bytes::Bytes;
use common::redis_support::{config, unique_prefix, RedisServer};
use gpufleet_broker::{Broker, BrokerError, MessageId, RedisBroker};
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use parking_lot::Mutex;
use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// Messages published, in batches of [`BATCH`].
const N: usize = 2000;
const BATCH: usize = 10;
/// Upper bound for the whole run and for each wait in it.
const PATIENCE: Duration = Duration::from_secs(90);

/// What producer and consumer observed.
#[derive(Default)]
struct Seen {
    /// Ids whose publish returned `Ok`, with their payload.
    published: HashMap<MessageId, Bytes>,
    /// Every payload the producer tried to publish.
    attempted: HashSet<Bytes>,
    /// Every delivered id with its payload.
    delivered: HashMap<MessageId, Bytes>,
    /// Ids whose ack returned `Ok`.
    acked: HashSet<MessageId>,
    /// Deliveries of an id after its ack returned `Ok`.
    redelivered_after_ack: Vec<MessageId>,
    retryable_errors: u64,
    other_errors: Vec<String>,
    producer_done: bool,
}

/// Calls `op` until it succeeds, sleeping 10 ms doubling to 500 ms after each retryable error;
/// `None` after a non-retryable error or [`PATIENCE`].
async fn retrying<T, F, Fut>(seen: &Mutex<Seen>, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BrokerError>>,
{
    let deadline = Instant::now() + PATIENCE;
    let mut pause = Duration::from_millis(10);
    loop {
        match op().await {
            Ok(value) => return Some(value),
            Err(error) if error.is_retryable() && Instant::now() < deadline => {
                seen.lock().retryable_errors += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(error) => {
                seen.lock().other_errors.push(error.to_string());
                return None;
            }
        }
    }
}

/// Polls `check` every 10 ms until it holds; panics with `what` after [`PATIENCE`].
async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn produce(
    broker: Arc<RedisBroker>,
    topic: TopicName,
    seen: Arc<Mutex<Seen>>,
    killed: Arc<AtomicBool>,
) {
    for batch in 0..N / BATCH {
        if batch == N / BATCH / 2 {
            // The second half goes out while the server is down or coming back.
            wait_for("the kill", || killed.load(Ordering::Acquire)).await;
        }
        let payloads: Vec<Bytes> = (batch * BATCH..(batch + 1) * BATCH)
            .map(|i| Bytes::from(format!("m-{i}")))
            .collect();
        seen.lock().attempted.extend(payloads.iter().cloned());
        let Some(ids) = retrying(&seen, || broker.publish(&topic, &payloads)).await else {
            break;
        };
        seen.lock().published.extend(ids.into_iter().zip(payloads));
    }
    seen.lock().producer_done = true;
}

/// Fetches and acks until everything published was delivered and the group is drained; false when
/// that did not happen within [`PATIENCE`].
async fn consume(
    broker: Arc<RedisBroker>,
    topic: TopicName,
    group: GroupName,
    seen: Arc<Mutex<Seen>>,
) -> bool {
    let me = ConsumerName::new("c1");
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let Some(got) = retrying(&seen, || {
            broker.fetch(&topic, &group, &me, 25, Duration::from_millis(200))
        })
        .await
        else {
            return false;
        };
        let ids: Vec<MessageId> = got.iter().map(|m| m.id).collect();
        {
            let mut seen = seen.lock();
            for m in got {
                if seen.acked.contains(&m.id) {
                    seen.redelivered_after_ack.push(m.id);
                }
                seen.delivered.insert(m.id, m.payload);
            }
        }
        if !ids.is_empty() {
            // One try: an ack that failed is redelivered after the visibility timeout.
            match broker.ack(&topic, &group, &ids).await {
                Ok(()) => seen.lock().acked.extend(ids),
                Err(error) if error.is_retryable() => seen.lock().retryable_errors += 1,
                Err(error) => seen.lock().other_errors.push(error.to_string()),
            }
        }
        // (An ack that returned an error may still have been applied, so "drained" is asked of
        // Redis rather than derived from the acks that returned Ok.)
        let finished = {
            let seen = seen.lock();
            seen.producer_done
                && seen
                    .published
                    .keys()
                    .all(|id| seen.delivered.contains_key(id))
        };
        if finished {
            let drained = broker.stats().await.is_ok_and(|stats| {
                stats
                    .iter()
                    .find(|s| s.topic == topic)
                    .is_some_and(|s| s.groups.iter().all(|g| g.lag == 0 && g.in_flight == 0))
            });
            if drained {
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = RedisServer::start(
        dir.path(),
        "--port",
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ],
    )
    .await;
    let cfg = config(
        &server.url("", false),
        &unique_prefix("restart"),
        Duration::from_secs(1),
        1000,
    );
    let broker = Arc::new(
        RedisBroker::connect(cfg)
            .await
            .expect("connect to own redis-server"),
    );
    let (topic, group) = (TopicName::new("telemetry"), GroupName::new("collectors"));
    broker
        .create_group(&topic, &group)
        .await
        .expect("create_group");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let killed = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn(produce(
        broker.clone(),
        topic.clone(),
        seen.clone(),
        killed.clone(),
    ));
    let consumer = tokio::spawn(consume(
        broker.clone(),
        topic.clone(),
        group.clone(),
        seen.clone(),
    ));

    wait_for("a quarter acked", || seen.lock().acked.len() >= N / 4).await;
    server.kill9();
    let acked_before_kill = seen.lock().acked.clone();
    killed.store(true, Ordering::Release);
    wait_for("a client to notice the outage", || {
        seen.lock().retryable_errors > 0
    })
    .await;
    server.restart().await;

    tokio::time::timeout(PATIENCE, producer)
        .await
        .expect("producer finishes")
        .expect("producer task");
    let drained = tokio::time::timeout(PATIENCE, consumer)
        .await
        .expect("consumer finishes")
        .expect("consumer task");

    assert!(
        drained,
        "the consumer did not drain the group within {PATIENCE:?}"
    );
    let stats = broker.stats().await.expect("stats");
    let group_stats = &stats
        .iter()
        .find(|s| s.topic == topic)
        .expect("topic")
        .groups[0];
    assert_eq!((group_stats.in_flight, group_stats.lag), (0, 0));
    let seen = seen.lock();
    eprintln!(
        "published {} ids for {N} payloads, delivered {}, acked {} ({} before the kill), {} retryable errors",
        seen.published.len(),
        seen.delivered.len(),
        seen.acked.len(),
        acked_before_kill.len(),
        seen.retryable_errors
    );
    assert!(
        seen.other_errors.is_empty(),
        "non-retryable errors: {:?}",
        seen.other_errors
    );
    assert!(seen.retryable_errors > 0);
    assert!(acked_before_kill.len() >= N / 4);
    let published_payloads: HashSet<&Bytes> = seen.published.values().collect();
    assert_eq!(
        published_payloads.len(),
        N,
        "the producer got every batch published"
    );
    let lost: Vec<_> = seen
        .published
        .iter()
        .filter(|(id, payload)| seen.delivered.get(id) != Some(payload))
        .collect();
    assert!(
        lost.is_empty(),
        "published with Ok but never delivered: {lost:?}"
    );
    let invented: Vec<_> = seen
        .delivered
        .values()
        .filter(|p| !seen.attempted.contains(*p))
        .collect();
    assert!(
        invented.is_empty(),
        "delivered but never published: {invented:?}"
    );
    assert!(
        seen.redelivered_after_ack.is_empty(),
        "delivered after an ack returned Ok: {:?}",
        seen.redelivered_after_ack
    );
}
