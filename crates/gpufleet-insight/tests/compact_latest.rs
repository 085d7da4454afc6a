//! The fleet keeps a compact copy of each host's latest metrics sample
//! (`gpufleet_fleet::latest::compact`); the score card, the alert values and the unhealthy
//! containers read from it must equal those read from the full sample.

use gpufleet_agent::sim::host::SimHostState;
use gpufleet_agent::wire::Net;
use gpufleet_agent::Scenario;
use gpufleet_fleet::latest::compact;
use gpufleet_insight::metrics::{named_values, unhealthy_containers};
use gpufleet_insight::score::{score, ScoreInput};

#[test]
fn scores_and_alert_values_are_the_same_from_the_compact_copy() {
    let scenarios = [Scenario::Healthy, Scenario::Degraded, Scenario::GpuXid, Scenario::ContainerFlapping { period_ms: 60_000 }, Scenario::DiskFilling { percent_per_day: 5.0 }];
    let mut unhealthy_seen = 0;
    for scenario in scenarios {
        for seed in 1..=10u64 {
            let host = SimHostState::new(format!("sim-host-{seed}"), seed, 8, scenario.clone(), None);
            let mut full = host.metrics(1_700_000_000_000);
            full.net.push(Net { iface: "eth1".into(), rx_bytes_per_s: 0.1, tx_bytes_per_s: 1e9 / 3.0 });
            let small = compact(&full);
            assert_eq!(named_values(&small), named_values(&full), "{scenario:?} seed {seed}");
            let input = |m: &gpufleet_agent::HostMetrics| ScoreInput::from_metrics(Some(m), Some(1_699_000_000_000), Some(40 << 30));
            assert_eq!(input(&small), input(&full), "{scenario:?} seed {seed}");
            assert_eq!(score("1", &input(&small), 1_700_000_000_000), score("1", &input(&full), 1_700_000_000_000));
            assert_eq!(unhealthy_containers(&small), unhealthy_containers(&full));
            unhealthy_seen += unhealthy_containers(&full).len();
        }
    }
    assert!(unhealthy_seen > 0, "the flapping scenario has an unhealthy container to keep");
}
