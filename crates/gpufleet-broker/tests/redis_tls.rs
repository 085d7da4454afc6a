//! TLS: a `redis-server` of the test's own listening only on a TLS port, with a CA and a server
//! certificate for 127.0.0.1 made by the test. `rediss://` with that CA trusted connects and does
//! a publish/fetch/ack round trip; without it (web PKI roots only) the handshake is refused and
//! `connect` reports `Unavailable`.

mod common;

use bytes::Bytes;
use common::redis_support::{config, RedisServer};
use gpufleet_broker::{Broker, BrokerError, RedisBroker};
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::{path::Path, time::Duration};

/// Writes `ca.pem`, `server.pem` and `server.key` into `dir`; returns the CA certificate PEM.
fn make_certs(dir: &Path) -> String {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let server_key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write server.pem");
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("write server.key");
    ca.pem()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_trusted_ca_round_trips_and_an_untrusted_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_pem = make_certs(dir.path());
    let server = RedisServer::start(
        dir.path(),
        "--tls-port",
        &[
            "--save",
            "",
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.pem",
            "--tls-auth-clients",
            "no",
        ],
    )
    .await;
    let url = server.url("", true);

    let mut cfg = config(&url, "gf-tls", Duration::from_secs(30), 5);
    cfg.tls_ca_pem = Some(ca_pem.into_bytes());
    let broker = RedisBroker::connect(cfg)
        .await
        .expect("rediss:// with the test CA");
    let (t, g, c) = (
        TopicName::new("secure"),
        GroupName::new("g"),
        ConsumerName::new("c"),
    );
    broker.create_group(&t, &g).await.expect("create_group");
    let ids = broker
        .publish(&t, &[Bytes::from_static(b"over tls")])
        .await
        .expect("publish");
    let got = broker
        .fetch(&t, &g, &c, 10, Duration::from_secs(5))
        .await
        .expect("fetch");
    assert_eq!(
        got.iter()
            .map(|m| (m.id, &m.payload[..]))
            .collect::<Vec<_>>(),
        vec![(ids[0], &b"over tls"[..])]
    );
    broker.ack(&t, &g, &ids).await.expect("ack");
    // A waiting fetch goes over a dedicated TLS connection.
    let waited = broker
        .fetch(&t, &g, &c, 10, Duration::from_millis(300))
        .await
        .expect("waiting fetch");
    assert!(waited.is_empty());
    let stats = broker.stats().await.expect("stats");
    assert_eq!(stats[0].groups[0].acked, 1);

    let err = RedisBroker::connect(config(&url, "gf-tls", Duration::from_secs(30), 5))
        .await
        .expect_err("the test CA is not among the web PKI roots");
    let text = err.to_string();
    assert!(matches!(err, BrokerError::Unavailable(_)), "{text}");
    assert!(
        text.contains("cannot reach Redis at rediss://127.0.0.1:"),
        "{text}"
    );
    eprintln!("{text}");
}
