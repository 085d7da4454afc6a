//! Queue ordering, starvation freedom (property test) and the backpressure table.

use super::*;
use proptest::prelude::*;

fn settings() -> QueueSettings {
    QueueSettings {
        hint_depth: 30,
        reject_normal_depth: 40,
        reject_all_depth: 50,
        max_wait: Duration::from_secs(30),
        aging: Duration::from_secs(2),
    }
}

#[test]
fn documented_thresholds() {
    let q = settings();
    use Admission::*;
    use Priority::*;
    for (depth, low, normal, high) in [
        (0, Accept, Accept, Accept),
        (29, Accept, Accept, Accept),
        (30, AcceptWithHint, AcceptWithHint, AcceptWithHint),
        (39, AcceptWithHint, AcceptWithHint, AcceptWithHint),
        (40, Reject, Reject, AcceptWithHint),
        (49, Reject, Reject, AcceptWithHint),
        (50, Reject, Reject, Reject),
        (500, Reject, Reject, Reject),
    ] {
        assert_eq!(
            [
                admission(depth, Low, &q),
                admission(depth, Normal, &q),
                admission(depth, High, &q)
            ],
            [low, normal, high],
            "depth {depth}"
        );
    }
}

#[test]
fn priority_header_values() {
    assert_eq!("HIGH".parse::<Priority>().unwrap(), Priority::High);
    assert_eq!(" low ".parse::<Priority>().unwrap(), Priority::Low);
    assert!("urgent".parse::<Priority>().is_err());
}

#[tokio::test(start_paused = true)]
async fn same_arrival_is_served_high_normal_low_and_fifo_within_a_class() {
    let mut q = WaitQueue::new(Duration::from_secs(2));
    let now = Instant::now();
    q.push(Priority::Low, now, "low1");
    q.push(Priority::Normal, now, "normal1");
    q.push(Priority::High, now, "high1");
    q.push(Priority::Normal, now, "normal2");
    q.push(Priority::High, now, "high2");
    let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
    assert_eq!(order, ["high1", "high2", "normal1", "normal2", "low1"]);
}

#[derive(Clone, Debug)]
struct Op {
    priority: Priority,
    gap_ms: u64,
    pops: usize,
}

fn op() -> impl Strategy<Value = Op> {
    (
        prop_oneof![
            Just(Priority::High),
            Just(Priority::Normal),
            Just(Priority::Low)
        ],
        0u64..3_000,
        0usize..3,
    )
        .prop_map(|(priority, gap_ms, pops)| Op {
            priority,
            gap_ms,
            pops,
        })
}

proptest! {
    /// Every pop takes the best waiting item by (arrival + rank × aging, arrival order), and no
    /// item is ever passed by one that arrived more than 2 × aging after it.
    #[test]
    fn order_is_priority_with_aging_and_starvation_free(ops in proptest::collection::vec(op(), 1..200)) {
        let aging = Duration::from_secs(2);
        let start = Instant::now();
        let mut q = WaitQueue::new(aging);
        // The model: (effective key, seq, arrival ms) of every waiting item.
        let mut model: Vec<(Duration, u64, u64)> = Vec::new();
        let mut popped: Vec<(u64, u64)> = Vec::new(); // (seq, arrival ms) in pop order
        let mut now_ms = 0u64;
        let mut seq = 0u64;
        let pop = |q: &mut WaitQueue<(u64, u64)>, model: &mut Vec<(Duration, u64, u64)>, popped: &mut Vec<(u64, u64)>| {
            let got = q.pop();
            let best = model.iter().enumerate().min_by_key(|(_, m)| (m.0, m.1)).map(|(i, _)| i);
            match (got, best) {
                (None, None) => {}
                (Some(item), Some(i)) => {
                    let m = model.remove(i);
                    assert_eq!(item, (m.1, m.2), "pop must take the best waiting item");
                    popped.push(item);
                }
                (got, best) => panic!("queue and model disagree: {got:?} vs {best:?}"),
            }
        };
        for o in &ops {
            now_ms += o.gap_ms;
            seq += 1;
            let arrived = start + Duration::from_millis(now_ms);
            q.push(o.priority, arrived, (seq, now_ms));
            model.push((Duration::from_millis(now_ms) + aging * o.priority.rank(), seq, now_ms));
            for _ in 0..o.pops {
                pop(&mut q, &mut model, &mut popped);
            }
        }
        while !model.is_empty() {
            pop(&mut q, &mut model, &mut popped);
        }
        prop_assert_eq!(popped.len(), ops.len(), "nothing lost");
        let bound = 2 * aging.as_millis() as u64;
        for (i, &(_, arrived)) in popped.iter().enumerate() {
            for &(_, earlier_arrival) in &popped[..i] {
                // Whatever was served before this item arrived at most `bound` after it.
                prop_assert!(earlier_arrival <= arrived + bound, "starved: served one that arrived {} ms later", earlier_arrival - arrived);
            }
        }
    }
}
