//! Embedded-backend tests that look at files and crashes: recovery after a drop without close,
//! torn tails, corruption, segment reclaim and redelivery timing under paused time (the property
//! test of random operation sequences is in `embedded_random_ops.rs`).

mod common;

use bytes::Bytes;
use common::config;
use gpufleet_broker::{Broker, BrokerConfig, BrokerError, EmbeddedBroker, FsyncPolicy, MessageId};
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use std::{
    collections::BTreeSet,
    fs::{self, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);

fn names() -> (TopicName, GroupName, ConsumerName) {
    (
        TopicName::new("telemetry"),
        GroupName::new("collectors"),
        ConsumerName::new("c1"),
    )
}

fn payloads(from: usize, n: usize) -> Vec<Bytes> {
    (from..from + n)
        .map(|i| Bytes::from(format!("message-{i:05}")))
        .collect()
}

fn segments(dir: &Path, topic: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(topic))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Fetches with `wait = 0` until nothing more comes (bounded).
async fn drain(b: &EmbeddedBroker, t: &TopicName, g: &GroupName) -> Vec<(MessageId, Bytes, u32)> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let got = b
            .fetch(t, g, &ConsumerName::new("drain"), 1000, Duration::ZERO)
            .await
            .unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got.into_iter().map(|m| (m.id, m.payload, m.attempt)));
    }
    panic!("drain did not finish");
}

#[tokio::test]
async fn crash_recovery_redelivers_exactly_the_unacked() {
    let dir = tempfile::tempdir().unwrap();
    let (t, g, c) = names();
    let cfg = config(dir.path(), HOUR, 5);
    let mut acked = BTreeSet::new();
    {
        let b = EmbeddedBroker::open(cfg.clone()).unwrap();
        b.create_group(&t, &g).await.unwrap();
        for i in 0..4 {
            b.publish(&t, &payloads(i * 25, 25)).await.unwrap();
        }
        let got = b.fetch(&t, &g, &c, 60, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 60);
        // Ack out of order: every third message among the first 60, plus a run at the start.
        let ids: Vec<MessageId> = got
            .iter()
            .map(|m| m.id)
            .filter(|id| id.0 % 3 == 0 || id.0 < 10)
            .collect();
        b.ack(&t, &g, &ids).await.unwrap();
        acked.extend(ids);
        // Dropped without close: the writer thread stops, nothing is flushed on the way out.
    }
    let b = EmbeddedBroker::open(cfg.clone()).unwrap();
    let back = drain(&b, &t, &g).await;
    let back_ids: BTreeSet<MessageId> = back.iter().map(|m| m.0).collect();
    let expected: BTreeSet<MessageId> = (0..100)
        .map(MessageId)
        .filter(|id| !acked.contains(id))
        .collect();
    assert_eq!(back_ids, expected);
    assert_eq!(back.len(), expected.len(), "delivered twice");
    for (id, payload, attempt) in &back {
        assert_eq!(payload, &payloads(id.0 as usize, 1)[0]);
        assert_eq!(*attempt, 1);
    }
    // Ack the rest, crash again: nothing comes back, and numbering continues.
    b.ack(&t, &g, &back_ids.iter().copied().collect::<Vec<_>>())
        .await
        .unwrap();
    drop(b);
    let b = EmbeddedBroker::open(cfg).unwrap();
    assert!(drain(&b, &t, &g).await.is_empty());
    assert_eq!(
        b.publish(&t, &payloads(100, 1)).await.unwrap(),
        vec![MessageId(100)]
    );
    assert_eq!(
        drain(&b, &t, &g)
            .await
            .iter()
            .map(|m| m.0)
            .collect::<Vec<_>>(),
        vec![MessageId(100)]
    );
}

#[tokio::test]
async fn torn_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (t, g, _) = names();
    let cfg = config(dir.path(), HOUR, 5);
    {
        let b = EmbeddedBroker::open(cfg.clone()).unwrap();
        b.create_group(&t, &g).await.unwrap();
        b.publish(&t, &payloads(0, 10)).await.unwrap();
        b.close().await.unwrap();
    }
    let seg = segments(dir.path(), "telemetry").pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // A record header promising 100 bytes, followed by only 5 of them.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&100u32.to_le_bytes()).unwrap();
    f.write_all(&[7u8; 9]).unwrap();
    drop(f);
    {
        let b = EmbeddedBroker::open(cfg.clone()).unwrap();
        assert_eq!(fs::metadata(&seg).unwrap().len(), len, "torn tail cut off");
        assert_eq!(drain(&b, &t, &g).await.len(), 10);
        assert_eq!(
            b.publish(&t, &payloads(10, 1)).await.unwrap(),
            vec![MessageId(10)]
        );
        b.close().await.unwrap();
    }
    // A complete last record with a bad checksum is a torn tail too: it is dropped.
    let mut bytes = fs::read(&seg).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    fs::write(&seg, &bytes).unwrap();
    let b = EmbeddedBroker::open(cfg).unwrap();
    let ids: Vec<u128> = drain(&b, &t, &g).await.iter().map(|m| m.0 .0).collect();
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
    assert_eq!(
        b.publish(&t, &payloads(10, 1)).await.unwrap(),
        vec![MessageId(10)]
    );
}

#[tokio::test]
async fn corrupt_record_in_the_middle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _, _) = names();
    let cfg = config(dir.path(), HOUR, 5);
    {
        let b = EmbeddedBroker::open(cfg.clone()).unwrap();
        b.publish(&t, &payloads(0, 10)).await.unwrap();
        b.close().await.unwrap();
    }
    let seg = segments(dir.path(), "telemetry").pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[16 + 16 + 3] ^= 0xff; // a payload byte of the first record (after the 16-byte header)
    fs::write(&seg, &bytes).unwrap();
    match EmbeddedBroker::open(cfg) {
        Err(BrokerError::Corrupt(msg)) => {
            assert!(
                msg.contains("00000000000000000000.seg") && msg.contains("at byte 16"),
                "{msg}"
            );
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[tokio::test]
async fn segments_are_reclaimed_once_every_group_acked() {
    let dir = tempfile::tempdir().unwrap();
    let (t, g, c) = names();
    let other = GroupName::new("archivers");
    let untracked = TopicName::new("no-groups");
    let mut cfg = config(dir.path(), HOUR, 5);
    cfg.segment_bytes = 1024;
    let b = EmbeddedBroker::open(cfg.clone()).unwrap();
    b.create_group(&t, &g).await.unwrap();
    b.create_group(&t, &other).await.unwrap();
    for i in 0..10 {
        b.publish(&t, &payloads(i * 20, 20)).await.unwrap();
        b.publish(&untracked, &payloads(i * 20, 20)).await.unwrap();
    }
    let before = segments(dir.path(), "telemetry").len();
    assert!(before > 5, "expected several segments, got {before}");
    let all: Vec<MessageId> = b
        .fetch(&t, &g, &c, 1000, Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    b.ack(&t, &g, &all).await.unwrap();
    assert_eq!(
        segments(dir.path(), "telemetry").len(),
        before,
        "the other group still needs them"
    );
    let all: Vec<MessageId> = b
        .fetch(&t, &other, &c, 1000, Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(all.len(), 200);
    b.ack(&t, &other, &all[..150]).await.unwrap();
    let partly = segments(dir.path(), "telemetry").len();
    assert!(partly < before && partly > 1, "{partly} of {before}");
    b.ack(&t, &other, &all[150..]).await.unwrap();
    assert_eq!(
        segments(dir.path(), "telemetry").len(),
        1,
        "only the active segment remains"
    );
    assert!(
        segments(dir.path(), "no-groups").len() > 5,
        "a topic without groups keeps everything"
    );
    let stats = b.stats().await.unwrap();
    let topic = stats.iter().find(|s| s.topic == t).unwrap();
    assert_eq!(topic.depth, 0);
    drop(b);
    let b = EmbeddedBroker::open(cfg).unwrap();
    assert_eq!(
        b.publish(&t, &payloads(200, 1)).await.unwrap(),
        vec![MessageId(200)]
    );
    assert_eq!(drain(&b, &t, &g).await.len(), 1);
}

#[tokio::test]
async fn acks_of_messages_lost_from_the_log_are_forgotten() {
    // Under a relaxed fsync policy a crash can keep acks of records the log lost; the offsets are
    // reused by new messages, which must still be delivered.
    let dir = tempfile::tempdir().unwrap();
    let (t, g, c) = names();
    let cfg = config(dir.path(), HOUR, 5);
    {
        let b = EmbeddedBroker::open(cfg.clone()).unwrap();
        b.create_group(&t, &g).await.unwrap();
        b.publish(&t, &payloads(0, 10)).await.unwrap();
        let ids: Vec<MessageId> = b
            .fetch(&t, &g, &c, 10, Duration::ZERO)
            .await
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        b.ack(&t, &g, &ids).await.unwrap();
        b.close().await.unwrap();
    }
    let seg = segments(dir.path(), "telemetry").pop().unwrap();
    let record = 16 + "message-00000".len() as u64;
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(16 + 5 * record)
        .unwrap();
    let b = EmbeddedBroker::open(cfg).unwrap();
    assert_eq!(
        b.publish(&t, &payloads(50, 3)).await.unwrap(),
        vec![MessageId(5), MessageId(6), MessageId(7)]
    );
    let got = drain(&b, &t, &g).await;
    assert_eq!(
        got.iter().map(|m| m.1.clone()).collect::<Vec<_>>(),
        payloads(50, 3)
    );
}

#[tokio::test]
async fn dead_letters_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (t, g, c) = names();
    let cfg = config(dir.path(), HOUR, 1);
    {
        let b = EmbeddedBroker::open(cfg.clone()).unwrap();
        b.create_group(&t, &g).await.unwrap();
        let ids = b.publish(&t, &payloads(0, 2)).await.unwrap();
        b.fetch(&t, &g, &c, 10, Duration::ZERO).await.unwrap();
        b.nack(&t, &g, ids[1], "cannot parse").await.unwrap();
    }
    let b = EmbeddedBroker::open(cfg).unwrap();
    let letters = b.dead_letters(&t, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].original_id,
            letters[0].reason.as_str(),
            letters[0].attempts
        ),
        (MessageId(1), "cannot parse", 1)
    );
    assert_eq!(letters[0].payload, payloads(1, 1)[0]);
    // The dead-lettered message was acked on the source; the other one comes back.
    assert_eq!(
        drain(&b, &t, &g)
            .await
            .iter()
            .map(|m| m.0)
            .collect::<Vec<_>>(),
        vec![MessageId(0)]
    );
}

#[tokio::test]
async fn relaxed_fsync_policies_deliver_and_recover_after_close() {
    for fsync in [
        FsyncPolicy::Interval(Duration::from_millis(20)),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (t, g, c) = names();
        let cfg = BrokerConfig {
            fsync,
            ..config(dir.path(), HOUR, 5)
        };
        {
            let b = EmbeddedBroker::open(cfg.clone()).unwrap();
            b.create_group(&t, &g).await.unwrap();
            b.publish(&t, &payloads(0, 5)).await.unwrap();
            let got = b
                .fetch(&t, &g, &c, 2, Duration::from_secs(5))
                .await
                .unwrap();
            b.ack(&t, &g, &got.iter().map(|m| m.id).collect::<Vec<_>>())
                .await
                .unwrap();
            b.close().await.unwrap();
            assert!(matches!(
                b.publish(&t, &payloads(0, 1)).await,
                Err(BrokerError::Closed)
            ));
        }
        let b = EmbeddedBroker::open(cfg).unwrap();
        let ids: Vec<u128> = drain(&b, &t, &g).await.iter().map(|m| m.0 .0).collect();
        assert_eq!(ids, vec![2, 3, 4], "{fsync:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn redelivery_happens_when_the_visibility_timeout_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (t, g, c) = names();
    let visibility = Duration::from_secs(30);
    let b = EmbeddedBroker::open(config(dir.path(), visibility, 5)).unwrap();
    b.create_group(&t, &g).await.unwrap();
    let ids = b.publish(&t, &payloads(0, 1)).await.unwrap();
    let start = Instant::now();
    assert_eq!(
        b.fetch(&t, &g, &c, 10, Duration::ZERO).await.unwrap()[0].attempt,
        1
    );
    // Before the deadline a fetch waits out its full `wait` and gets nothing.
    assert!(b
        .fetch(&t, &g, &c, 10, Duration::from_secs(10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    // A longer wait is cut short by the deadline.
    let again = b
        .fetch(&t, &g, &c, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|m| (m.id, m.attempt)).collect::<Vec<_>>(),
        vec![(ids[0], 2)]
    );
    assert_eq!(start.elapsed(), visibility);
    b.ack(&t, &g, &ids).await.unwrap();
    assert!(b
        .fetch(&t, &g, &c, 10, visibility * 3)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn one_fetch_hands_out_a_bounded_number_of_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (t, g, c) = names();
    let b = EmbeddedBroker::open(config(dir.path(), HOUR, 5)).unwrap();
    b.create_group(&t, &g).await.unwrap();
    let big = Bytes::from(vec![1u8; 1 << 20]);
    b.publish(&t, &vec![big; 80]).await.unwrap();
    let first = b
        .fetch(&t, &g, &c, usize::MAX, Duration::ZERO)
        .await
        .unwrap();
    assert!(
        (60..=66).contains(&first.len()),
        "about 64 MiB per fetch, got {} messages",
        first.len()
    );
    let rest = drain(&b, &t, &g).await;
    assert_eq!(first.len() + rest.len(), 80);
}

#[tokio::test]
async fn close_ends_a_waiting_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let (t, g, c) = names();
    let b = std::sync::Arc::new(EmbeddedBroker::open(config(dir.path(), HOUR, 5)).unwrap());
    b.create_group(&t, &g).await.unwrap();
    let waiting = {
        let b = b.clone();
        let (t, g) = (t.clone(), g.clone());
        tokio::spawn(async move { b.fetch(&t, &g, &c, 10, HOUR).await })
    };
    // Let the fetch start waiting (if it has not yet, it sees the closed broker at once).
    tokio::task::yield_now().await;
    b.close().await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("fetch still waiting after close")
        .unwrap();
    assert!(matches!(result, Err(BrokerError::Closed)), "{result:?}");
}
