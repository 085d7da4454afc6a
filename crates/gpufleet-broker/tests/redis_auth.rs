//! Authentication against a `redis-server` of the test's own with `requirepass` and an ACL user:
//! both URL forms connect and work, a user without `@dangerous` works too (no `INFO`, no
//! `CLIENT UNBLOCK`), and wrong or missing credentials fail with `Unavailable` naming the cause
//! without showing the password.

mod common;

use bytes::Bytes;
use common::redis_support::{config, RedisServer};
use gpufleet_broker::{Broker, BrokerError, RedisBroker};
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use std::time::Duration;

const DEFAULT_PW: &str = "default-pw-4411";
const ALICE_PW: &str = "alice-pw-9932";
const BOB_PW: &str = "bob-pw-2207";

async fn start() -> (tempfile::TempDir, RedisServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice_pw = format!(">{ALICE_PW}");
    let bob_pw = format!(">{BOB_PW}");
    let server = RedisServer::start(
        dir.path(),
        "--port",
        &[
            "--save",
            "",
            "--requirepass",
            DEFAULT_PW,
            "--user",
            "alice",
            "on",
            &alice_pw,
            "~*",
            "&*",
            "+@all",
            "--user",
            "bob",
            "on",
            &bob_pw,
            "~gf:*",
            "&*",
            "+@all",
            "-@dangerous",
        ],
    )
    .await;
    (dir, server)
}

/// Publish, fetch (including a waiting one), nack, ack and stats through a broker on `url`.
async fn round_trip(url: &str, prefix: &str) {
    let broker = RedisBroker::connect(config(url, prefix, Duration::from_secs(30), 5))
        .await
        .unwrap_or_else(|e| panic!("connect with {url}: {e}"));
    let (t, g, c) = (
        TopicName::new("auth"),
        GroupName::new("g"),
        ConsumerName::new("c"),
    );
    broker.create_group(&t, &g).await.expect("create_group");
    let ids = broker
        .publish(&t, &[Bytes::from_static(b"hello")])
        .await
        .expect("publish");
    let got = broker
        .fetch(&t, &g, &c, 10, Duration::from_secs(5))
        .await
        .expect("fetch");
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    broker.nack(&t, &g, ids[0], "again").await.expect("nack");
    let again = broker
        .fetch(&t, &g, &c, 10, Duration::from_secs(5))
        .await
        .expect("fetch");
    assert_eq!(
        again.iter().map(|m| (m.id, m.attempt)).collect::<Vec<_>>(),
        vec![(ids[0], 2)]
    );
    broker.ack(&t, &g, &ids).await.expect("ack");
    let waited = broker
        .fetch(&t, &g, &c, 10, Duration::from_millis(300))
        .await
        .expect("waiting fetch");
    assert!(waited.is_empty());
    let stats = broker.stats().await.expect("stats");
    let topic = stats.iter().find(|s| s.topic == t).expect("topic in stats");
    assert_eq!((topic.published, topic.groups[0].in_flight), (1, 0));
    broker.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_acl_users_connect_and_work() {
    let (_dir, server) = start().await;
    round_trip(&server.url(&format!(":{DEFAULT_PW}@"), false), "gf:default").await;
    round_trip(
        &server.url(&format!("alice:{ALICE_PW}@"), false),
        "gf:alice",
    )
    .await;
    // bob may not run INFO, CLIENT ID or CLIENT UNBLOCK (@dangerous) and only sees keys gf:*.
    round_trip(&server.url(&format!("bob:{BOB_PW}@"), false), "gf:bob").await;
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_unavailable_without_the_password() {
    let (_dir, server) = start().await;
    let port = server.port();
    for (userinfo, secret, shown) in [
        (
            ":not-the-pw-7731@".to_string(),
            "not-the-pw-7731",
            format!("redis://:***@127.0.0.1:{port}"),
        ),
        (
            "alice:bad-pw-5678@".to_string(),
            "bad-pw-5678",
            format!("redis://alice:***@127.0.0.1:{port}"),
        ),
        (
            "nobody:x-pw-0042@".to_string(),
            "x-pw-0042",
            format!("redis://nobody:***@127.0.0.1:{port}"),
        ),
        (
            String::new(),
            DEFAULT_PW,
            format!("redis://127.0.0.1:{port}"),
        ),
    ] {
        let url = server.url(&userinfo, false);
        let err = RedisBroker::connect(config(&url, "gf", Duration::from_secs(1), 5))
            .await
            .expect_err("bad credentials must not connect");
        let text = err.to_string();
        eprintln!("{text}");
        assert!(matches!(err, BrokerError::Unavailable(_)), "{text}");
        assert!(
            text.contains(&format!("cannot reach Redis at {shown}:")),
            "{text}"
        );
        assert!(
            text.to_lowercase().contains("auth") || text.contains("WRONGPASS"),
            "{text}"
        );
        assert!(!text.contains(secret), "password shown: {text}");
    }
}
