//! Score card tests: every threshold from both sides, missing data, the relative memory rule,
//! the input built from agent metrics and the fleet mean.

use super::*;
use gpufleet_agent::wire::{ContainerState, CpuPercent, Disk, GpuState, ModelServerKind, ModelServerState};

const NOW: i64 = 1_700_000_000_000;

fn pts(d: DimensionScore) -> u32 {
    assert!(d.points <= d.max, "{d:?}");
    d.points
}

#[test]
fn steal_boundaries() {
    let cases = [(0.0, 20), (1.999, 20), (2.0, 15), (4.999, 15), (5.0, 10), (9.999, 10), (10.0, 5), (60.0, 5)];
    for (v, want) in cases {
        assert_eq!(pts(score_steal(Some(v))), want, "steal {v}");
    }
    let none = score_steal(None);
    assert_eq!((none.points, none.value), (0, None));
    assert!(none.reason.contains("no sample"));
    assert_eq!(score_steal(Some(f64::NAN)).points, 0);
    assert_eq!(score_steal(Some(3.0)).reason, "CPU steal 3.0 % (2–5 %: neighbours on the hypervisor take some CPU)");
}

#[test]
fn memory_boundaries_on_a_reference_host_are_the_absolute_ones() {
    // 64 GiB: scale 1, percentages (3.84/1.92/0.64 GiB) below the absolute values.
    let total = Some(64 * GIB);
    assert_eq!(memory_thresholds(total), [6 * GIB, 3 * GIB, GIB]);
    let cases = [(6 * GIB + 1, 20), (6 * GIB, 15), (3 * GIB + 1, 15), (3 * GIB, 5), (GIB + 1, 5), (GIB, 0), (0, 0), (60 * GIB, 20)];
    for (v, want) in cases {
        assert_eq!(pts(score_memory(Some(v), total)), want, "available {v}");
    }
    // At exactly 32 GiB and 100 GiB the two rules meet the absolute values.
    assert_eq!(memory_thresholds(Some(32 * GIB)), [6 * GIB, 3 * GIB, GIB]);
    assert_eq!(memory_thresholds(Some(100 * GIB)), [6 * GIB, 3 * GIB, GIB]);
    // Unknown total: absolute.
    assert_eq!(memory_thresholds(None), [6 * GIB, 3 * GIB, GIB]);
    assert_eq!(memory_thresholds(Some(0)), [6 * GIB, 3 * GIB, GIB]);
}

#[test]
fn memory_thresholds_shrink_on_small_hosts() {
    let total = Some(16 * GIB);
    assert_eq!(memory_thresholds(total), [3 * GIB, 3 * GIB / 2, GIB / 2]);
    assert_eq!(pts(score_memory(Some(3 * GIB + 1), total)), 20);
    assert_eq!(pts(score_memory(Some(3 * GIB), total)), 15);
    assert_eq!(pts(score_memory(Some(3 * GIB / 2 + 1), total)), 15);
    assert_eq!(pts(score_memory(Some(3 * GIB / 2), total)), 5);
    assert_eq!(pts(score_memory(Some(GIB / 2 + 1), total)), 5);
    assert_eq!(pts(score_memory(Some(GIB / 2), total)), 0);
}

#[test]
fn memory_thresholds_grow_on_large_hosts() {
    let total = 512 * GIB;
    let [t1, t2, t3] = memory_thresholds(Some(total));
    assert_eq!(t1, (0.06 * total as f64) as u64);
    assert_eq!(t2, (0.03 * total as f64) as u64);
    assert_eq!(t3, (0.01 * total as f64) as u64);
    // 6 GiB free on 512 GiB is 1.2 %: tight, not full points.
    assert_eq!(pts(score_memory(Some(6 * GIB), Some(total))), 5);
    assert_eq!(pts(score_memory(Some(t1 + 1), Some(total))), 20);
    assert_eq!(pts(score_memory(Some(t1), Some(total))), 15);
    assert_eq!(pts(score_memory(Some(t2), Some(total))), 5);
    assert_eq!(pts(score_memory(Some(t3), Some(total))), 0);
    assert_eq!(score_memory(None, Some(total)).points, 0);
}

#[test]
fn disk_boundaries() {
    let cases = [(0.0, 15), (39.999, 15), (40.0, 10), (54.999, 10), (55.0, 5), (69.999, 5), (70.0, 0), (100.0, 0)];
    for (v, want) in cases {
        assert_eq!(pts(score_disk(Some((v, "/data")))), want, "disk {v}");
    }
    assert_eq!(score_disk(None).points, 0);
    assert_eq!(score_disk(Some((0.0, ""))).points, 15);
    assert!(score_disk(Some((71.0, "/data"))).reason.starts_with("/data is 71.0 % used"));
}

#[test]
fn service_boundaries() {
    let list = |n: usize| (0..n).map(|i| format!("container c{i}")).collect::<Vec<_>>();
    let cases = [(0, 20), (1, 15), (2, 15), (3, 8), (5, 8), (6, 2), (40, 2)];
    for (n, want) in cases {
        assert_eq!(pts(score_services(Some(&list(n)))), want, "{n} unhealthy");
    }
    assert_eq!(score_services(None).points, 0);
    let r = score_services(Some(&list(7))).reason;
    assert!(r.starts_with("7 unhealthy: container c0,") && r.ends_with("and 2 more"), "{r}");
}

#[test]
fn hygiene_boundaries() {
    let day = 86_400_000;
    let cases = [(0, 15), (7 * day - 1, 15), (7 * day, 8), (30 * day - 1, 8), (30 * day, 0), (400 * day, 0)];
    for (age, want) in cases {
        assert_eq!(pts(score_hygiene(Some(NOW - age), NOW)), want, "age {age}");
    }
    assert_eq!(score_hygiene(None, NOW).points, 0);
    // A cleanup time in the future (clock skew) counts as just now.
    assert_eq!(score_hygiene(Some(NOW + day), NOW).points, 15);
}

#[test]
fn readiness_rules() {
    let m = 40 * GIB;
    assert_eq!(pts(score_readiness(None, None, None)), 10);
    assert_eq!(pts(score_readiness(Some(m), Some(m), Some(0))), 10);
    assert_eq!(pts(score_readiness(Some(m), Some(m - 1), Some(m))), 10);
    assert!(score_readiness(Some(m), Some(m - 1), Some(m)).reason.contains("fits in RAM"));
    assert_eq!(pts(score_readiness(Some(m), Some(m - 1), Some(m - 1))), 0);
    assert_eq!(pts(score_readiness(Some(m), None, Some(m - 1))), 0);
    assert_eq!(score_readiness(Some(m), None, None).points, 0);
    assert!(score_readiness(Some(m), None, None).reason.contains("no sample"));
}

fn container(name: &str, state: &str, health: Option<&str>, on_purpose: bool) -> ContainerState {
    ContainerState {
        id: name.into(),
        name: name.into(),
        image: String::new(),
        state: state.into(),
        health: health.map(Into::into),
        health_log: vec![],
        restart_count: 0,
        oom_killed: false,
        exit_code: None,
        stopped_on_purpose: on_purpose,
    }
}

fn gpu(index: u32, used: u64, total: u64) -> GpuState {
    GpuState {
        index,
        uuid: format!("GPU-{index}"),
        name: "H100".into(),
        util_percent: None,
        mem_util_percent: None,
        memory_used_bytes: Some(used),
        memory_total_bytes: Some(total),
        temperature_c: None,
        power_w: None,
        power_limit_w: None,
        sm_clock_mhz: None,
        mem_clock_mhz: None,
        xid_errors: 0,
        last_xid: None,
        processes: vec![],
    }
}

fn metrics() -> HostMetrics {
    HostMetrics {
        cpu: CpuPercent { steal: 1.0, idle: 90.0, user: 9.0, ..CpuPercent::default() },
        mem_total_bytes: 64 * GIB,
        mem_available_bytes: 10 * GIB,
        disks: vec![
            Disk { mount: "/".into(), fs: "ext4".into(), total_bytes: 100, used_bytes: 30, free_bytes: 70 },
            Disk { mount: "/data".into(), fs: "xfs".into(), total_bytes: 100, used_bytes: 60, free_bytes: 40 },
        ],
        gpus: vec![gpu(0, 70 * GIB, 80 * GIB), gpu(1, 60 * GIB, 80 * GIB)],
        containers: vec![
            container("web", "running", Some("healthy"), false),
            container("api", "running", Some("unhealthy"), false),
            container("backup", "exited", None, true),
            container("worker", "exited", None, false),
        ],
        model_servers: vec![ModelServerState {
            name: "llama".into(),
            kind: ModelServerKind::Llamacpp,
            url: "http://127.0.0.1:1".into(),
            up: false,
            models: vec![],
            slots_busy: None,
            slots_total: None,
            queued: None,
            error: None,
        }],
        ..HostMetrics::default()
    }
}

#[test]
fn input_from_metrics_uses_the_agent_rules() {
    let input = ScoreInput::from_metrics(Some(&metrics()), Some(NOW - 86_400_000), Some(25 * GIB));
    assert_eq!(input.steal_percent, Some(1.0));
    assert_eq!(input.disk_used_pct, Some((60.0, "/data".to_owned())));
    // api unhealthy + worker exited by itself + llama down; backup stopped on purpose is fine.
    assert_eq!(input.unhealthy_services.as_deref().unwrap(), ["container api", "container worker", "model server llama"]);
    assert_eq!(input.free_vram_bytes, Some(30 * GIB));
    let card = score("h1", &input, NOW);
    let p: Vec<u32> = card.dimensions.iter().map(|d| d.points).collect();
    assert_eq!(p, [20, 20, 5, 8, 15, 10]);
    assert_eq!(card.total, 78);
    assert_eq!(card.max, 100);
    assert_eq!(card.weakest().unwrap().dimension, Dimension::ServiceHealth);
    assert_eq!(card.dimension(Dimension::ServiceHealth).unwrap().value, Some(3.0));
}

#[test]
fn no_sample_scores_only_what_needs_no_sample() {
    let card = score("h", &ScoreInput::from_metrics(None, Some(NOW), None), NOW);
    // Hygiene and "no model configured" do not depend on the sample.
    assert_eq!(card.total, 15 + 10);
    let card = score("h", &ScoreInput::from_metrics(None, None, Some(GIB)), NOW);
    assert_eq!(card.total, 0);
    assert!(card.dimensions.iter().all(|d| d.points == 0));
}

#[test]
fn weakest_prefers_the_biggest_loss_then_display_order() {
    let mut input = ScoreInput::from_metrics(Some(&metrics()), Some(NOW), None);
    input.unhealthy_services = Some(vec![]);
    input.disk_used_pct = Some((10.0, "/".into()));
    let card = score("h", &input, NOW);
    assert_eq!(card.total, 100);
    assert!(card.weakest().is_none());
    input.steal_percent = Some(3.0); // −5
    input.mem_available_bytes = Some(4 * GIB); // −5
    let card = score("h", &input, NOW);
    assert_eq!(card.weakest().unwrap().dimension, Dimension::CpuSteal);
}

#[test]
fn fleet_score_is_the_mean_without_maintenance_hosts() {
    let mk = |host: &str, steal: f64| score(host, &ScoreInput { steal_percent: Some(steal), ..ScoreInput::default() }, NOW);
    let a = mk("a", 1.0); // 20 + 0 + 0 + 0 + 0 + 10 = 30
    let b = mk("b", 12.0); // 5 + 10 = 15
    let c = mk("c", 50.0); // in maintenance
    let f = fleet_score([(&a, false), (&b, false), (&c, true)]);
    assert_eq!((f.hosts, f.in_maintenance), (2, 1));
    assert!((f.score - 22.5).abs() < 1e-9);
    assert_eq!(f.lowest, vec![("b".to_owned(), 15), ("a".to_owned(), 30)]);
    let steal = &f.dimensions[0];
    assert_eq!((steal.dimension, steal.max), (Dimension::CpuSteal, 20));
    assert!((steal.mean_points - 12.5).abs() < 1e-9);
    let empty = fleet_score(std::iter::empty());
    assert_eq!((empty.score, empty.hosts), (0.0, 0));
}
