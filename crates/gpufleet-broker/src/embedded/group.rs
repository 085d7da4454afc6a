//! One consumer group's delivery state: the cursor of the next undelivered offset, the in-flight
//! table (offset → deadline, attempt, last nack reason), the redelivery queues, the durable ack set
//! and the counters behind [`GroupStats`].
//!
//! Pure bookkeeping: no I/O. Time is passed in (`tokio::time::Instant`) so tests can pause it.
//! Acks take effect in two steps: [`GroupState::take`] removes messages from the in-flight table
//! when `ack` is called, and [`GroupState::apply_acked`] adds them to the ack set once the writer
//! thread has made them durable.

use super::{ackfile::AckFile, acks::AckSet};
use crate::GroupStats;
use gpufleet_core::{ConsumerName, GroupName};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::{collections::VecDeque, sync::Arc, time::Duration};
use tokio::time::Instant;

/// Consumers remembered before idle ones are dropped (see [`GroupState::touch`]).
const MAX_IDLE_CONSUMERS: usize = 1024;

/// A consumer group of one topic.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) name: GroupName,
    pub(crate) state: Mutex<GroupState>,
    /// Used by the writer thread only.
    pub(crate) file: Mutex<AckFile>,
}

/// Delivery limits from the broker config.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) visibility: Duration,
    pub(crate) max_attempts: u32,
}

/// A delivered, unacked message.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    deadline: Instant,
    attempt: u32,
    /// Bumped on every change so stale queue entries can be recognised.
    generation: u32,
    reason: Option<Arc<str>>,
}

/// A message that ran out of attempts and must go to the dead-letter topic.
#[derive(Clone, Debug)]
pub(crate) struct DeadCandidate {
    pub(crate) offset: u64,
    pub(crate) attempts: u32,
    pub(crate) reason: String,
    entry: InFlight,
}

/// What [`GroupState::claim`] hands out.
#[derive(Debug, Default)]
pub(crate) struct Claim {
    /// `(offset, attempt)`: due redeliveries first, then new messages.
    pub(crate) deliver: Vec<(u64, u32)>,
    pub(crate) dead: Vec<DeadCandidate>,
    /// When the next in-flight message becomes due, if any.
    pub(crate) wake: Option<Instant>,
}

/// Outcome of a nack.
#[derive(Debug)]
pub(crate) enum Nacked {
    /// Not in flight: ignored.
    Unknown,
    /// Due for redelivery now.
    Requeued,
    /// Out of attempts.
    Dead(DeadCandidate),
}

/// The in-memory state of a group.
#[derive(Debug)]
pub(crate) struct GroupState {
    /// Next offset never delivered to this group.
    next: u64,
    /// Durable acks.
    pub(crate) acks: AckSet,
    inflight: FxHashMap<u64, InFlight>,
    /// `(deadline, offset, generation)` in deadline order (the visibility timeout is constant).
    timeouts: VecDeque<(Instant, u64, u32)>,
    /// `(offset, generation)` made due by a nack.
    nacked: VecDeque<(u64, u32)>,
    consumers: FxHashMap<ConsumerName, Instant>,
    acked: u64,
    redeliveries: u64,
    dead_lettered: u64,
}

impl GroupState {
    /// A group that has acked `acks`; delivery resumes at its watermark.
    pub(crate) fn new(acks: AckSet) -> Self {
        Self {
            next: acks.watermark(),
            acks,
            inflight: FxHashMap::default(),
            timeouts: VecDeque::new(),
            nacked: VecDeque::new(),
            consumers: FxHashMap::default(),
            acked: 0,
            redeliveries: 0,
            dead_lettered: 0,
        }
    }

    /// Records that `consumer` fetched at `now` (forgetting consumers idle for longer than the
    /// visibility timeout once there are many, so per-request consumer names cannot grow the map).
    pub(crate) fn touch(&mut self, consumer: &ConsumerName, now: Instant, limits: Limits) {
        match self.consumers.get_mut(consumer) {
            Some(at) => *at = now,
            None => {
                if self.consumers.len() >= MAX_IDLE_CONSUMERS {
                    let visibility = limits.visibility;
                    self.consumers
                        .retain(|_, at| now.saturating_duration_since(*at) < visibility);
                }
                self.consumers.insert(consumer.clone(), now);
            }
        }
    }

    /// Next offset never delivered (at least `first`, the oldest retained one).
    pub(crate) fn next_new(&self, first: u64) -> u64 {
        self.next.max(first)
    }

    /// Hands out up to `max` messages among the retained offsets `[first, end)`: due redeliveries
    /// first, then new ones. Due messages out of attempts are returned in `dead` instead (already
    /// removed from the in-flight table).
    pub(crate) fn claim(
        &mut self,
        now: Instant,
        max: usize,
        (first, end): (u64, u64),
        limits: Limits,
    ) -> Claim {
        let mut claim = Claim::default();
        while claim.deliver.len() < max {
            let (offset, generation) = if let Some(due) = self.nacked.pop_front() {
                due
            } else if let Some(&(deadline, offset, generation)) = self.timeouts.front() {
                if deadline > now {
                    break;
                }
                self.timeouts.pop_front();
                (offset, generation)
            } else {
                break;
            };
            let Some(entry) = self
                .inflight
                .get_mut(&offset)
                .filter(|e| e.generation == generation)
            else {
                continue;
            };
            if entry.attempt >= limits.max_attempts {
                if let Some(entry) = self.inflight.remove(&offset) {
                    claim.dead.push(dead_candidate(offset, entry));
                }
                continue;
            }
            entry.attempt += 1;
            entry.generation = entry.generation.wrapping_add(1);
            entry.deadline = now + limits.visibility;
            self.timeouts
                .push_back((entry.deadline, offset, entry.generation));
            self.redeliveries += 1;
            claim.deliver.push((offset, entry.attempt));
        }
        self.next = self.next.max(first);
        while claim.deliver.len() < max {
            self.next = self.acks.first_unacked_from(self.next);
            if self.next >= end {
                break;
            }
            let deadline = now + limits.visibility;
            self.inflight.insert(
                self.next,
                InFlight {
                    deadline,
                    attempt: 1,
                    generation: 0,
                    reason: None,
                },
            );
            self.timeouts.push_back((deadline, self.next, 0));
            claim.deliver.push((self.next, 1));
            self.next += 1;
        }
        self.drop_stale_front();
        claim.wake = if self.nacked.is_empty() {
            self.timeouts.front().map(|t| t.0)
        } else {
            Some(now)
        };
        claim
    }

    /// Removes acked messages from the in-flight table; returns those that were in flight (the
    /// others are unknown or already acked, and ignored).
    pub(crate) fn take(&mut self, offsets: impl Iterator<Item = u64>) -> Vec<(u64, InFlight)> {
        let taken: Vec<_> = offsets
            .filter_map(|o| self.inflight.remove(&o).map(|e| (o, e)))
            .collect();
        self.drop_stale_front();
        taken
    }

    /// Puts back messages taken by [`GroupState::take`] (or dead candidates) whose ack or dead
    /// letter could not be written; they become due after a visibility timeout.
    pub(crate) fn restore(
        &mut self,
        entries: impl Iterator<Item = (u64, InFlight)>,
        now: Instant,
        limits: Limits,
    ) {
        for (offset, mut entry) in entries {
            entry.generation = entry.generation.wrapping_add(1);
            entry.deadline = now + limits.visibility;
            self.timeouts
                .push_back((entry.deadline, offset, entry.generation));
            self.inflight.insert(offset, entry);
        }
    }

    /// Pushes the deadline of in-flight messages to `now + visibility` without counting a
    /// delivery; returns how many were in flight.
    pub(crate) fn extend(&mut self, offsets: impl Iterator<Item = u64>, now: Instant, limits: Limits) -> usize {
        let mut n = 0;
        for offset in offsets {
            if let Some(entry) = self.inflight.get_mut(&offset) {
                entry.generation = entry.generation.wrapping_add(1);
                entry.deadline = now + limits.visibility;
                self.timeouts.push_back((entry.deadline, offset, entry.generation));
                n += 1;
            }
        }
        self.drop_stale_front();
        n
    }

    /// Makes an in-flight message due now, or returns it as dead when out of attempts.
    pub(crate) fn nack(
        &mut self,
        offset: u64,
        reason: &str,
        now: Instant,
        limits: Limits,
    ) -> Nacked {
        let Some(entry) = self.inflight.get_mut(&offset) else {
            return Nacked::Unknown;
        };
        entry.reason = Some(Arc::from(reason));
        if entry.attempt >= limits.max_attempts {
            return match self.inflight.remove(&offset) {
                Some(entry) => Nacked::Dead(dead_candidate(offset, entry)),
                None => Nacked::Unknown,
            };
        }
        entry.generation = entry.generation.wrapping_add(1);
        entry.deadline = now;
        self.nacked.push_back((offset, entry.generation));
        Nacked::Requeued
    }

    /// Records acks that are now durable (`dead`: they were dead-lettered, not processed).
    pub(crate) fn apply_acked(&mut self, ranges: &[(u64, u64)], dead: bool) {
        for &(start, end) in ranges {
            self.acks.insert(start, end);
            if dead {
                self.dead_lettered += end - start;
            } else {
                self.acked += end - start;
            }
        }
    }

    /// Counters for `stats`; `end` is the topic's next offset.
    pub(crate) fn stats(
        &mut self,
        name: &GroupName,
        now: Instant,
        end: u64,
        limits: Limits,
    ) -> GroupStats {
        self.consumers
            .retain(|_, at| now.saturating_duration_since(*at) < limits.visibility);
        let next = self.next.max(self.acks.watermark()).min(end);
        GroupStats {
            group: name.clone(),
            in_flight: self.inflight.len() as u64,
            lag: (end - next) - self.acks.count_in(next, end),
            acked: self.acked,
            redeliveries: self.redeliveries,
            dead_lettered: self.dead_lettered,
            consumers: self.consumers.len() as u64,
        }
    }

    /// Pops queue entries at the front that no longer match an in-flight message, so the queue
    /// does not keep acked messages until their deadline.
    fn drop_stale_front(&mut self) {
        while let Some(&(_, offset, generation)) = self.timeouts.front() {
            if self
                .inflight
                .get(&offset)
                .is_some_and(|e| e.generation == generation)
            {
                break;
            }
            self.timeouts.pop_front();
        }
    }
}

fn dead_candidate(offset: u64, entry: InFlight) -> DeadCandidate {
    let reason = match &entry.reason {
        Some(r) => r.to_string(),
        None => format!(
            "visibility timeout expired after {} deliveries",
            entry.attempt
        ),
    };
    DeadCandidate {
        offset,
        attempts: entry.attempt,
        reason,
        entry,
    }
}

impl DeadCandidate {
    /// The in-flight entry to restore if dead-lettering fails.
    pub(crate) fn into_entry(self) -> (u64, InFlight) {
        (self.offset, self.entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        visibility: Duration::from_secs(5),
        max_attempts: 2,
    };

    fn offsets(c: &Claim) -> Vec<(u64, u32)> {
        c.deliver.clone()
    }

    #[test]
    fn delivers_new_messages_once() {
        let now = Instant::now();
        let mut g = GroupState::new(AckSet::new(0));
        assert_eq!(
            offsets(&g.claim(now, 2, (0, 3), LIMITS)),
            vec![(0, 1), (1, 1)]
        );
        let c = g.claim(now, 10, (0, 3), LIMITS);
        assert_eq!(offsets(&c), vec![(2, 1)]);
        assert_eq!(c.wake, Some(now + LIMITS.visibility));
        assert!(g.claim(now, 10, (0, 3), LIMITS).deliver.is_empty());
    }

    #[test]
    fn redelivers_after_deadline_then_dead_letters() {
        let now = Instant::now();
        let mut g = GroupState::new(AckSet::new(0));
        g.claim(now, 10, (0, 1), LIMITS);
        let later = now + LIMITS.visibility;
        assert_eq!(offsets(&g.claim(later, 10, (0, 1), LIMITS)), vec![(0, 2)]);
        let c = g.claim(later + LIMITS.visibility, 10, (0, 1), LIMITS);
        assert!(c.deliver.is_empty());
        assert_eq!(c.dead.len(), 1);
        assert_eq!(
            c.dead[0].reason,
            "visibility timeout expired after 2 deliveries"
        );
    }

    #[test]
    fn nack_is_due_at_once_and_keeps_its_reason() {
        let now = Instant::now();
        let mut g = GroupState::new(AckSet::new(0));
        g.claim(now, 10, (0, 1), LIMITS);
        assert!(matches!(g.nack(0, "bad", now, LIMITS), Nacked::Requeued));
        assert_eq!(offsets(&g.claim(now, 10, (0, 1), LIMITS)), vec![(0, 2)]);
        // The old timeout entry is stale and must not deliver it again.
        assert!(g
            .claim(now + LIMITS.visibility / 2, 10, (0, 1), LIMITS)
            .deliver
            .is_empty());
        match g.nack(0, "worse", now, LIMITS) {
            Nacked::Dead(d) => assert_eq!((d.reason.as_str(), d.attempts), ("worse", 2)),
            other => panic!("expected dead, got {other:?}"),
        }
        assert!(matches!(g.nack(0, "again", now, LIMITS), Nacked::Unknown));
    }

    #[test]
    fn acked_messages_are_not_redelivered_and_skipped_after_recovery() {
        let now = Instant::now();
        let mut g = GroupState::new(AckSet::new(0));
        g.claim(now, 10, (0, 4), LIMITS);
        let taken = g.take([1, 2, 9].into_iter());
        assert_eq!(taken.len(), 2);
        g.apply_acked(&[(1, 3)], false);
        let c = g.claim(now + LIMITS.visibility, 10, (0, 4), LIMITS);
        assert_eq!(offsets(&c), vec![(0, 2), (3, 2)]);
        // A recovered group resumes at its watermark and skips acked offsets above it.
        let mut recovered = GroupState::new(g.acks.clone());
        assert_eq!(
            offsets(&recovered.claim(now, 10, (0, 4), LIMITS)),
            vec![(0, 1), (3, 1)]
        );
        let stats = recovered.stats(&GroupName::new("g"), now, 4, LIMITS);
        assert_eq!((stats.in_flight, stats.lag), (2, 0));
    }
}
