//! Property test of the embedded broker: random sequences of publish / fetch / ack / nack / crash
//! (drop without close) / close-and-reopen, checked against a model. Invariants:
//! - a message whose ack returned Ok is never delivered again (not even after a crash);
//! - every delivered payload is the one published under that id;
//! - nothing is lost: after a final reopen, draining the group returns exactly the published
//!   messages that were not acked, each once.

mod common;

use bytes::Bytes;
use gpufleet_broker::{Broker, BrokerConfig, EmbeddedBroker, MessageId};
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use proptest::prelude::*;
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

#[derive(Clone, Debug)]
enum Step {
    Publish(usize),
    Fetch(usize),
    /// Ack the held messages whose position is a multiple of `n`.
    Ack(usize),
    /// Nack the held message at this position (modulo).
    Nack(usize),
    Crash,
    CloseReopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..6).prop_map(Step::Publish),
        4 => (1usize..8).prop_map(Step::Fetch),
        3 => (1usize..4).prop_map(Step::Ack),
        1 => (0usize..8).prop_map(Step::Nack),
        1 => Just(Step::Crash),
        1 => Just(Step::CloseReopen),
    ]
}

fn open(dir: &Path) -> EmbeddedBroker {
    let mut cfg: BrokerConfig = common::config(dir, Duration::from_secs(3600), 1000);
    // Small segments so that rolling and reclaiming happen within a few steps.
    cfg.segment_bytes = 160;
    EmbeddedBroker::open(cfg).expect("open")
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, g, c) = (
        TopicName::new("t"),
        GroupName::new("g"),
        ConsumerName::new("c"),
    );
    let mut broker = open(dir.path());
    broker.create_group(&t, &g).await.expect("create_group");
    let mut published: BTreeMap<MessageId, Bytes> = BTreeMap::new();
    let mut acked: BTreeSet<MessageId> = BTreeSet::new();
    let mut held: Vec<MessageId> = Vec::new();
    let mut seq = 0usize;
    for step in steps {
        match step {
            Step::Publish(n) => {
                let payloads: Vec<Bytes> = (seq..seq + n)
                    .map(|i| Bytes::from(format!("p{i}")))
                    .collect();
                seq += n;
                let ids = broker.publish(&t, &payloads).await.expect("publish");
                for (id, p) in ids.into_iter().zip(payloads) {
                    prop_assert!(published.insert(id, p).is_none(), "id {} reused", id);
                }
            }
            Step::Fetch(max) => {
                for m in broker
                    .fetch(&t, &g, &c, max, Duration::ZERO)
                    .await
                    .expect("fetch")
                {
                    prop_assert!(
                        !acked.contains(&m.id),
                        "acked message {} delivered again",
                        m.id
                    );
                    prop_assert_eq!(Some(&m.payload), published.get(&m.id));
                    prop_assert!(
                        !held.contains(&m.id),
                        "message {} delivered while in flight",
                        m.id
                    );
                    held.push(m.id);
                }
            }
            Step::Ack(every) => {
                let ids: Vec<MessageId> = held.iter().step_by(every).copied().collect();
                broker.ack(&t, &g, &ids).await.expect("ack");
                held.retain(|id| !ids.contains(id));
                acked.extend(ids);
            }
            Step::Nack(at) if !held.is_empty() => {
                let id = held.remove(at % held.len());
                broker
                    .nack(&t, &g, id, "property test")
                    .await
                    .expect("nack");
            }
            Step::Nack(_) => {}
            Step::Crash => {
                drop(broker);
                broker = open(dir.path());
                held.clear();
            }
            Step::CloseReopen => {
                broker.close().await.expect("close");
                drop(broker);
                broker = open(dir.path());
                held.clear();
            }
        }
    }
    drop(broker);
    let broker = open(dir.path());
    let mut rest = Vec::new();
    for _ in 0..1000 {
        let got = broker
            .fetch(&t, &g, &c, 100, Duration::ZERO)
            .await
            .expect("fetch");
        if got.is_empty() {
            break;
        }
        rest.extend(got.into_iter().map(|m| m.id));
    }
    let rest_set: BTreeSet<MessageId> = rest.iter().copied().collect();
    prop_assert_eq!(
        rest_set.len(),
        rest.len(),
        "a message was delivered twice while drained"
    );
    prop_assert!(
        rest_set.is_disjoint(&acked),
        "acked messages came back: {:?}",
        rest_set.intersection(&acked).collect::<Vec<_>>()
    );
    let unacked: BTreeSet<MessageId> = published
        .keys()
        .filter(|id| !acked.contains(id))
        .copied()
        .collect();
    prop_assert_eq!(
        rest_set,
        unacked,
        "unacked messages lost (or unknown ones delivered)"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_keep_the_delivery_invariants(steps in prop::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(run(steps))?;
    }
}
