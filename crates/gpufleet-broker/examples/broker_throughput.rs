//! In-process throughput of the embedded broker: publishers send batches while one consumer
//! fetches up to a batch at a time and acks each batch. Bounded by a message count and a time limit.
//!
//! ```text
//! cargo run -p gpufleet-broker --release --example broker_throughput -- \
//!     [--payload 200] [--batch 1000] [--messages 1000000] [--publishers 1] \
//!     [--fsync per-batch|never|<ms>] [--max-seconds 60] [--dir PATH] [--backlog] [--workers 2]
//! ```
//! Prints messages/s and payload MB/s for publish + fetch + ack together (time from the first
//! publish until the last ack returned). `--backlog`: publish everything, close and reopen the
//! broker (timing recovery), then consume (to watch memory and recovery with a deep log).

use bytes::Bytes;
use gpufleet_broker::{Broker, BrokerConfig, EmbeddedBroker, FsyncPolicy};
use gpufleet_core::{ConsumerName, GroupName, TopicName};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

struct Args {
    payload: usize,
    batch: usize,
    messages: usize,
    publishers: usize,
    fsync: FsyncPolicy,
    max_seconds: u64,
    dir: Option<String>,
    backlog: bool,
    workers: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        payload: 200,
        batch: 1000,
        messages: 1_000_000,
        publishers: 1,
        fsync: FsyncPolicy::PerBatch,
        max_seconds: 60,
        dir: None,
        backlog: false,
        workers: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--backlog" {
            args.backlog = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--payload" => args.payload = number()?,
            "--batch" => args.batch = number()?.max(1),
            "--messages" => args.messages = number()?,
            "--publishers" => args.publishers = number()?.max(1),
            "--workers" => args.workers = number()?.max(1),
            "--max-seconds" => args.max_seconds = number()? as u64,
            "--dir" => args.dir = Some(value),
            "--fsync" => {
                args.fsync = match value.as_str() {
                    "per-batch" => FsyncPolicy::PerBatch,
                    "never" => FsyncPolicy::Never,
                    ms => FsyncPolicy::Interval(Duration::from_millis(
                        ms.parse().map_err(|_| format!("bad --fsync {ms}"))?,
                    )),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir_in(args.dir.as_deref().unwrap_or("."))?;
    let mut config = BrokerConfig::new(tmp.path());
    config.fsync = args.fsync;
    let mut broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::open(config.clone())?);
    let (topic, group) = (TopicName::new("bench"), GroupName::new("consumers"));
    broker.create_group(&topic, &group).await?;

    let batches = args.messages.div_ceil(args.batch);
    let payload = Bytes::from(vec![0xA5u8; args.payload]);
    let batch: Vec<Bytes> = vec![payload; args.batch];
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let start = Instant::now();

    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        let (broker, topic, batch) = (broker.clone(), topic.clone(), batch.clone());
        let mine = (p..batches).step_by(args.publishers).count();
        publishers.push(tokio::spawn(async move {
            let mut waited = Duration::ZERO;
            for _ in 0..mine {
                if Instant::now() > deadline {
                    break;
                }
                let t = Instant::now();
                broker.publish(&topic, &batch).await?;
                waited += t.elapsed();
            }
            Ok::<_, gpufleet_broker::BrokerError>(waited / mine.max(1) as u32)
        }));
    }
    if args.backlog {
        for p in publishers.drain(..) {
            let publish_latency = p.await??;
            println!("mean publish latency {publish_latency:?}");
        }
        println!(
            "backlog of {} messages published in {:.2} s",
            batches * args.batch,
            start.elapsed().as_secs_f64()
        );
        broker.close().await?;
        drop(broker);
        let reopen = Instant::now();
        broker = Arc::new(EmbeddedBroker::open(config)?);
        println!(
            "closed and reopened (recovery scan) in {:.2} s",
            reopen.elapsed().as_secs_f64()
        );
    }
    let consumer = {
        let (broker, topic, group) = (broker.clone(), topic.clone(), group.clone());
        let (want, max) = (batches * args.batch, args.batch);
        tokio::spawn(async move {
            let me = ConsumerName::new("bench");
            let (mut done, mut rounds) = (0usize, 0u32);
            let (mut fetching, mut acking) = (Duration::ZERO, Duration::ZERO);
            while done < want && Instant::now() < deadline {
                let t = Instant::now();
                let got = broker
                    .fetch(&topic, &group, &me, max, Duration::from_millis(500))
                    .await?;
                let ids: Vec<_> = got.iter().map(|m| m.id).collect();
                fetching += t.elapsed();
                let t = Instant::now();
                broker.ack(&topic, &group, &ids).await?;
                acking += t.elapsed();
                done += ids.len();
                rounds += 1;
            }
            let rounds = rounds.max(1);
            Ok::<_, gpufleet_broker::BrokerError>((
                done,
                fetching / rounds,
                acking / rounds,
                rounds,
            ))
        })
    };
    for p in publishers {
        let publish_latency = p.await??;
        println!("mean publish latency {publish_latency:?}");
    }
    let published_at = start.elapsed();
    let (consumed, fetch_latency, ack_latency, fetches) = consumer.await??;
    println!(
        "{fetches} fetches: mean fetch (incl. waiting) {fetch_latency:?}, mean ack {ack_latency:?}"
    );
    let elapsed = start.elapsed().as_secs_f64();
    broker.close().await?;

    let mb = (consumed * args.payload) as f64 / 1e6;
    println!(
        "payload {} B, batch {}, publishers {}, fsync {:?}: {} messages published+consumed+acked in {:.2} s (publishing took {:.2} s)",
        args.payload,
        args.batch,
        args.publishers,
        args.fsync,
        consumed,
        elapsed,
        published_at.as_secs_f64()
    );
    println!(
        "throughput: {:.0} msgs/s, {:.1} MB/s",
        consumed as f64 / elapsed,
        mb / elapsed
    );
    if Instant::now() >= deadline {
        println!("(stopped by the --max-seconds limit)");
    }
    Ok(())
}
