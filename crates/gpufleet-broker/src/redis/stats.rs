//! `stats()` of the Redis backend: finds the topics with `SCAN`, then asks `XINFO STREAM`,
//! `XINFO GROUPS`, `MEMORY USAGE` and the dead stream's `XLEN` in one pipeline, and `XINFO
//! CONSUMERS` of every group in a second one.

use super::{
    error::backend,
    keys::{array_of, bytes_of, fields_of, int_of, Keys},
};
use crate::{BrokerError, GroupStats, TopicStats};
use gpufleet_core::{GroupName, TopicName};
use redis::{aio::ConnectionManager, Value};
use std::{collections::BTreeSet, time::Duration};
use tracing::warn;

/// Most `SCAN` round trips one stats call makes (1000 keys asked for each).
const MAX_SCAN_ROUNDS: usize = 10_000;

/// Counters Redis does not keep, from this process: acked, redeliveries, dead-lettered.
pub(super) type LocalCounters = (u64, u64, u64);

/// One group as `XINFO GROUPS` reports it.
struct GroupInfo {
    name: String,
    pending: u64,
    lag: u64,
}

/// Collects the stats of every topic under `keys`; `local` gives this process's counters of a
/// group; consumers idle less than `visibility` count as live.
pub(super) async fn collect(
    conn: &mut ConnectionManager,
    keys: &Keys,
    visibility: Duration,
    local: impl Fn(&TopicName, &GroupName) -> LocalCounters,
) -> Result<Vec<TopicStats>, BrokerError> {
    let topics = scan_topics(conn, keys).await?;
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for topic in &topics {
        let key = keys.stream(topic);
        pipe.cmd("XINFO").arg("STREAM").arg(&key);
        pipe.cmd("XINFO").arg("GROUPS").arg(&key);
        pipe.cmd("MEMORY").arg("USAGE").arg(&key);
        pipe.cmd("XLEN").arg(keys.dead(topic));
    }
    let replies: Vec<Value> = pipe.query_async(conn).await.map_err(backend)?;
    let mut replies = replies.into_iter();
    let mut partial = Vec::with_capacity(topics.len());
    for topic in topics {
        let (Some(stream), Some(groups), Some(memory), Some(dead_len)) = (
            replies.next(),
            replies.next(),
            replies.next(),
            replies.next(),
        ) else {
            return Err(super::error::bad_reply("stats pipeline reply too short"));
        };
        let stream = fields_of(stream)?;
        let length = count_field(&stream, "length");
        let published = stream
            .iter()
            .find(|(f, _)| f == "entries-added")
            .map_or(length, |(_, v)| {
                int_of(v).map_or(length, |n| n.max(0) as u64)
            });
        let groups = array_of(groups)?
            .into_iter()
            .map(group_info)
            .collect::<Result<Vec<_>, _>>()?;
        let depth = groups
            .iter()
            .map(|g| g.lag + g.pending)
            .max()
            .map_or(length, |d| d.min(length));
        let stats = TopicStats {
            topic: topic.clone(),
            depth,
            published,
            bytes: int_of(&memory).map_or(0, |n| n.max(0) as u64),
            dead_letters: int_of(&dead_len).map_or(0, |n| n.max(0) as u64),
            groups: Vec::with_capacity(groups.len()),
        };
        partial.push((stats, groups));
    }
    let mut pipe = redis::pipe();
    for (stats, groups) in &partial {
        for g in groups {
            pipe.cmd("XINFO")
                .arg("CONSUMERS")
                .arg(keys.stream(&stats.topic))
                .arg(&g.name);
        }
    }
    let consumers: Vec<Value> = pipe.query_async(conn).await.map_err(backend)?;
    let mut consumers = consumers.into_iter();
    let live_ms = i64::try_from(visibility.as_millis()).unwrap_or(i64::MAX);
    let mut out = Vec::with_capacity(partial.len());
    for (mut stats, groups) in partial {
        for g in groups {
            let live = match consumers.next() {
                Some(list) => array_of(list)?
                    .into_iter()
                    .map(fields_of)
                    .collect::<Result<Vec<_>, _>>()?
                    .iter()
                    .filter(|c| {
                        c.iter()
                            .find(|(f, _)| f == "idle")
                            .is_some_and(|(_, v)| int_of(v).is_ok_and(|idle| idle < live_ms))
                    })
                    .count() as u64,
                None => 0,
            };
            let name = GroupName::new(&g.name);
            let (acked, redeliveries, dead_lettered) = local(&stats.topic, &name);
            stats.groups.push(GroupStats {
                group: name,
                in_flight: g.pending,
                lag: g.lag,
                acked,
                redeliveries,
                dead_lettered,
                consumers: live,
            });
        }
        stats.groups.sort_by(|a, b| a.group.cmp(&b.group));
        out.push(stats);
    }
    Ok(out)
}

/// The topics, sorted, found with `SCAN` (dead-letter streams are not topics here: each topic
/// reports its own in `dead_letters`).
async fn scan_topics(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> Result<Vec<TopicName>, BrokerError> {
    let pattern = keys.stream_pattern();
    let mut topics = BTreeSet::new();
    let mut cursor: u64 = 0;
    for round in 0.. {
        if round == MAX_SCAN_ROUNDS {
            warn!(pattern, "stats: SCAN did not finish; topics may be missing");
            break;
        }
        let (next, found): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("stream")
            .query_async(conn)
            .await
            .map_err(backend)?;
        for key in found {
            let Ok(key) = String::from_utf8(key) else {
                continue;
            };
            let Some(name) = keys.topic_of(&key) else {
                continue;
            };
            if !name.ends_with(".dead") {
                topics.insert(name.to_string());
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(topics.into_iter().map(TopicName::new).collect())
}

/// A non-negative integer field of an `XINFO` reply (0 when missing or nil).
fn count_field(fields: &[(String, Value)], name: &str) -> u64 {
    fields
        .iter()
        .find(|(f, _)| f == name)
        .and_then(|(_, v)| int_of(v).ok())
        .map_or(0, |n| n.max(0) as u64)
}

/// One entry of `XINFO GROUPS`. `lag` is reported as 0 when Redis cannot tell (nil: entries
/// deleted in the middle of the stream; missing: Redis < 7).
fn group_info(value: Value) -> Result<GroupInfo, BrokerError> {
    let fields = fields_of(value)?;
    let name = fields
        .iter()
        .find(|(f, _)| f == "name")
        .map(|(_, v)| bytes_of(v.clone()))
        .transpose()?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lag = fields
        .iter()
        .find(|(f, _)| f == "lag")
        .and_then(|(_, v)| int_of(v).ok())
        .map(|n| n.max(0) as u64);
    Ok(GroupInfo {
        name,
        pending: count_field(&fields, "pending"),
        lag: lag.unwrap_or(0),
    })
}
