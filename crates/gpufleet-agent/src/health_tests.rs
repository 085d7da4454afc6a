use super::*;
use crate::wire::*;

fn info() -> AgentInfo {
    AgentInfo { version: "t".into(), sample_age_ms: 100, sample_interval_ms: 5000 }
}

fn metrics() -> HostMetrics {
    HostMetrics { host: "h".into(), mem_total_bytes: 100, mem_available_bytes: 50, ..Default::default() }
}

fn disk(used: u64, free: u64) -> Disk {
    Disk { mount: "/data".into(), fs: "xfs".into(), total_bytes: used + free, used_bytes: used, free_bytes: free }
}

#[test]
fn disk_thresholds_are_strictly_above_85_and_95() {
    assert_eq!(disk_component(&disk(85, 15)).status, Status::Ok);
    assert_eq!(disk_component(&disk(851, 149)).status, Status::Warn);
    assert_eq!(disk_component(&disk(95, 5)).status, Status::Warn);
    assert_eq!(disk_component(&disk(951, 49)).status, Status::Critical);
    assert_eq!(disk_component(&disk(0, 0)).status, Status::Ok);
    assert_eq!(disk_component(&disk(1, 1)).name, "disk:/data");
}

#[test]
fn memory_warns_below_5_percent_and_oom_is_critical() {
    let mut m = metrics();
    assert_eq!(memory_component(&m).status, Status::Ok);
    m.mem_available_bytes = 4;
    assert_eq!(memory_component(&m).status, Status::Warn);
    m.mem_available_bytes = 5;
    assert_eq!(memory_component(&m).status, Status::Ok);
    m.oom_kills = Some(0);
    assert_eq!(memory_component(&m).status, Status::Ok);
    m.oom_kills = Some(2);
    let c = memory_component(&m);
    assert_eq!(c.status, Status::Critical);
    assert!(c.message.contains("2 OOM kill"), "{}", c.message);
}

fn gpu(xid: u64) -> GpuState {
    GpuState {
        index: 1,
        uuid: "GPU-1".into(),
        name: "H100".into(),
        util_percent: Some(50.0),
        mem_util_percent: None,
        memory_used_bytes: None,
        memory_total_bytes: None,
        temperature_c: None,
        power_w: None,
        power_limit_w: None,
        sm_clock_mhz: None,
        mem_clock_mhz: None,
        xid_errors: xid,
        last_xid: (xid > 0).then_some(79),
        processes: vec![],
    }
}

#[test]
fn gpu_xid_is_critical_and_no_driver_is_ok() {
    assert_eq!(gpu_component(&gpu(0)).status, Status::Ok);
    let c = gpu_component(&gpu(1));
    assert_eq!((c.status, c.name.as_str()), (Status::Critical, "gpu:1"));
    assert!(c.message.contains("79"));
    assert_eq!(gpu_driver_component(&GpuDriver::Absent).status, Status::Ok);
    assert_eq!(gpu_driver_component(&GpuDriver::Failed { error: "mismatch".into() }).status, Status::Warn);
}

fn container(state: &str, health: Option<&str>, on_purpose: bool) -> ContainerState {
    ContainerState {
        id: "id".into(),
        name: "web".into(),
        image: String::new(),
        state: state.into(),
        health: health.map(str::to_owned),
        health_log: vec!["exit 1: refused".into()],
        restart_count: 3,
        oom_killed: false,
        exit_code: Some(1),
        stopped_on_purpose: on_purpose,
    }
}

#[test]
fn container_rules() {
    assert_eq!(container_component(&container("running", Some("healthy"), false)).status, Status::Ok);
    assert_eq!(container_component(&container("running", None, false)).status, Status::Ok);
    let c = container_component(&container("running", Some("unhealthy"), false));
    assert_eq!(c.status, Status::Warn);
    assert!(c.message.contains("exit 1: refused"));
    assert_eq!(container_component(&container("restarting", None, false)).status, Status::Warn);
    assert_eq!(container_component(&container("exited", None, false)).status, Status::Warn);
    assert_eq!(container_component(&container("exited", None, true)).status, Status::Ok);
}

#[test]
fn model_server_down_warns() {
    let mut s = ModelServerState {
        name: "llama".into(),
        kind: ModelServerKind::Llamacpp,
        url: "http://x".into(),
        up: true,
        models: vec!["m".into()],
        slots_busy: Some(1),
        slots_total: Some(4),
        queued: None,
        error: None,
    };
    let c = model_server_component(&s);
    assert_eq!(c.status, Status::Ok);
    assert!(c.message.contains("1/4 slots busy"));
    s.up = false;
    s.error = Some("connection refused".into());
    let c = model_server_component(&s);
    assert_eq!(c.status, Status::Warn);
    assert!(c.message.contains("connection refused"));
}

#[test]
fn agent_warns_on_probe_errors_and_stale_samples() {
    let mut m = metrics();
    assert_eq!(agent_component(&m, &info()).status, Status::Ok);
    let stale = AgentInfo { sample_age_ms: 15_001, ..info() };
    assert_eq!(agent_component(&m, &stale).status, Status::Warn);
    m.probe_errors.push(ProbeError { kind: ComponentKind::Disk, source: "statvfs /x".into(), error: "EIO".into() });
    let c = agent_component(&m, &info());
    assert_eq!(c.status, Status::Warn);
    assert!(c.message.contains("statvfs /x"));
}

#[test]
fn report_status_is_the_worst_and_order_is_stable() {
    let mut m = metrics();
    m.disks.push(disk(90, 10));
    let r = report(&m, &info(), 7);
    assert_eq!(r.status, Status::Warn);
    let names: Vec<&str> = r.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["agent", "cpu", "memory", "swap", "disk:/data", "gpu"]);
    m.gpus.push(gpu(2));
    let r = report(&m, &info(), 7);
    assert_eq!(r.status, Status::Critical);
    assert!(!r.components.iter().any(|c| c.name == "gpu"), "per-GPU components replace the driver one");
    // The wire form is lowercase.
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["status"], "critical");
    assert_eq!(v["components"][0]["kind"], "agent");
    assert_eq!(HealthReport::new("h", "v", 0, vec![]).status, Status::Ok);
}

#[test]
fn human_bytes_units() {
    assert_eq!(human_bytes(512), "512 B");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(human_bytes(3 << 30), "3.0 GiB");
}
