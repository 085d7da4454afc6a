//! The `/proc` parsers on files of several kernels (`tests/data/proc/<kernel>/`, see its README),
//! read through `ProcReader` as the agent reads them, and a whole `HostSampler` sample over them.

use gpufleet_agent::proc::{mounts, ProcReader};
use gpufleet_agent::sampler::HostSampler;
use gpufleet_agent::wire::ComponentKind;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const KIB: u64 = 1024;

fn reader(kernel: &str) -> ProcReader {
    ProcReader::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/proc").join(kernel))
}

fn disk_mount_points(r: &ProcReader) -> Vec<String> {
    mounts::disk_mounts(&r.mounts().unwrap()).into_iter().map(|m| m.mount_point).collect()
}

fn ifaces(r: &ProcReader) -> Vec<(String, u64, u64)> {
    r.netdev().unwrap().into_iter().map(|n| (n.iface, n.rx_bytes, n.tx_bytes)).collect()
}

#[test]
fn linux_6_18_captured_here() {
    let r = reader("6.18.44-firecracker");
    let s = r.stat().unwrap();
    assert_eq!((s.cpu.fields, s.cpus), (10, 2));
    assert_eq!((s.cpu.user, s.cpu.idle, s.cpu.steal), (50647, 181934, 30));
    let later = gpufleet_agent::proc::stat::parse(&r.read("stat.later").unwrap()).unwrap();
    let p = later.cpu.percent_since(&s.cpu).unwrap();
    // deltas: user 70, system 44, idle 1830, iowait 9, softirq 5, steal 0 → 1958 ticks
    assert!((p.user - 70.0 * 100.0 / 1958.0).abs() < 1e-9, "{p:?}");
    assert_eq!(p.steal, 0.0);
    let m = r.meminfo().unwrap();
    assert_eq!(m.total, 24_684_112 * KIB);
    assert!(!m.available_estimated);
    assert_eq!((m.swap_total, m.swap_cached), (0, 0));
    assert_eq!(r.vmstat().unwrap().oom_kill, Some(0));
    assert_eq!(r.loadavg().unwrap().len(), 3);
    assert!(r.uptime().unwrap() > 0.0);
    assert_eq!(disk_mount_points(&r), ["/"]);
    assert_eq!(ifaces(&r).iter().map(|i| i.0.as_str()).collect::<Vec<_>>(), ["lo", "ifb0", "ifb1", "eth0"]);
}

#[test]
fn linux_5_15_gpu_vm_with_steal_swap_cache_and_oom_kills() {
    let r = reader("5.15.0-ubuntu22.04-gpu-vm");
    let s = r.stat().unwrap();
    assert_eq!((s.cpu.fields, s.cpus, s.cpu.steal), (10, 8, 3_020_117));
    let since_boot = s.cpu.percent_since_boot().unwrap();
    assert!((since_boot.steal - 3_020_117.0 * 100.0 / s.cpu.total() as f64).abs() < 1e-9);
    assert!(since_boot.steal > 0.19 && since_boot.steal < 0.21, "{since_boot:?}");
    let m = r.meminfo().unwrap();
    assert_eq!(m.available, 412_573_148 * KIB);
    assert_eq!(m.swap_cached, 183_204 * KIB);
    assert_eq!(m.swap_used(), (8_388_604 - 7_302_140) * KIB);
    assert_eq!(r.vmstat().unwrap().oom_kill, Some(2));
    assert_eq!(r.loadavg().unwrap(), [7.84, 7.91, 8.02]);
    assert_eq!(r.uptime().unwrap(), 1_894_233.51);
    // snaps, tmpfs, overlay and nsfs left out; /dev/md0 once (the first mount of it).
    assert_eq!(disk_mount_points(&r), ["/", "/boot/efi", "/mnt/nvme-raid", "/mnt/efs"]);
    assert_eq!(ifaces(&r)[1], ("ens5".to_owned(), 4_218_842_213_098, 1_907_331_266_101));
}

#[test]
fn linux_4_19_bare_metal_low_memory_escaped_mount_and_zfs() {
    let r = reader("4.19.0-debian10");
    let s = r.stat().unwrap();
    assert_eq!((s.cpu.fields, s.cpus, s.cpu.steal), (10, 4, 0));
    let m = r.meminfo().unwrap();
    assert!(!m.available_estimated);
    assert!((m.available as f64 / m.total as f64) < 0.05);
    assert_eq!(m.swap_cached, 412_008 * KIB);
    assert_eq!(r.vmstat().unwrap().oom_kill, Some(5));
    assert_eq!(disk_mount_points(&r), ["/", "/srv/model weights", "/var/lib/docker", "/tank/datasets"]);
}

#[test]
fn linux_2_6_18_eight_fields_no_mem_available_no_oom_counter() {
    let r = reader("2.6.18-rhel5");
    let s = r.stat().unwrap();
    assert_eq!((s.cpu.fields, s.cpus, s.cpu.steal, s.cpu.guest), (8, 2, 88_123, 0));
    let m = r.meminfo().unwrap();
    assert!(m.available_estimated);
    assert_eq!(m.available, (512_344 + 302_112 + 4_012_344) * KIB);
    assert_eq!(r.vmstat().unwrap().oom_kill, None);
    let disks = mounts::disk_mounts(&r.mounts().unwrap());
    // `rootfs /` is shadowed by `/dev/root /`.
    assert_eq!(disks[0].fs_type, "ext3");
    assert_eq!(disks.iter().map(|d| d.mount_point.as_str()).collect::<Vec<_>>(), ["/", "/boot", "/data", "/home"]);
    assert_eq!(ifaces(&r)[0], ("lo".to_owned(), 12_033_412, 12_033_412));
    assert_eq!(ifaces(&r)[1].1, 3_120_334_412);
}

#[test]
fn linux_2_6_9_seven_fields() {
    let r = reader("2.6.9-rhel4");
    let s = r.stat().unwrap();
    assert_eq!((s.cpu.fields, s.cpus, s.cpu.iowait, s.cpu.steal), (7, 2, 412_031, 0));
    assert_eq!(s.cpu.softirq, 9123);
    assert!(r.meminfo().unwrap().available_estimated);
    assert_eq!(r.vmstat().unwrap().oom_kill, None);
    assert_eq!(disk_mount_points(&r), ["/", "/boot"]);
}

/// A whole sample over captured files: everything but disks comes from the files (disk sizes come
/// from `statvfs` of this machine, so mount points missing here are probe errors, not panics).
#[test]
fn host_sampler_over_captured_files_gives_rates_on_the_second_sample() {
    let dir = tempfile::tempdir().unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/proc/5.15.0-ubuntu22.04-gpu-vm");
    copy_tree(&src, dir.path());
    let mut s = HostSampler::new(ProcReader::new(dir.path()), "vm-1");
    let t0 = Instant::now();
    let first = s.sample(t0, 1_000);
    assert_eq!(first.cpu_window_ms, 0, "first sample is since boot");
    assert!(first.cpu.steal > 0.0);
    assert_eq!(first.oom_kills, Some(0), "OOM kills count from the agent's start");
    assert!(first.net.iter().all(|n| n.rx_bytes_per_s == 0.0 && n.iface != "lo"));
    assert!(first.probe_errors.iter().all(|e| e.kind == ComponentKind::Disk), "{:?}", first.probe_errors);

    // Ten seconds later: 1 MB more received on ens5, more CPU ticks, one more OOM kill.
    let dev = std::fs::read_to_string(dir.path().join("net/dev")).unwrap().replace("4218842213098", "4218852213098");
    std::fs::write(dir.path().join("net/dev"), dev).unwrap();
    let stat = std::fs::read_to_string(dir.path().join("stat")).unwrap().replace("cpu  184307252 20431 21740317 1318702145 1254302 0 1873121 3020117", "cpu  184307652 20431 21740417 1318702545 1254302 0 1873121 3020217");
    std::fs::write(dir.path().join("stat"), stat).unwrap();
    let vm = std::fs::read_to_string(dir.path().join("vmstat")).unwrap().replace("oom_kill 2", "oom_kill 3");
    std::fs::write(dir.path().join("vmstat"), vm).unwrap();
    let second = s.sample(t0 + Duration::from_secs(10), 11_000);
    assert_eq!(second.cpu_window_ms, 10_000);
    // deltas: user 400, system 100, idle 400, steal 100 → 1000 ticks
    assert!((second.cpu.user - 40.0).abs() < 1e-9 && (second.cpu.steal - 10.0).abs() < 1e-9, "{:?}", second.cpu);
    let ens5 = second.net.iter().find(|n| n.iface == "ens5").unwrap();
    assert!((ens5.rx_bytes_per_s - 1_000_000.0).abs() < 1e-6);
    assert_eq!(second.oom_kills, Some(1));
    let report = gpufleet_agent::health::components(&second, &gpufleet_agent::health::AgentInfo { version: "t".into(), sample_age_ms: 0, sample_interval_ms: 5000 });
    let mem = report.iter().find(|c| c.name == "memory").unwrap();
    assert_eq!(mem.status, gpufleet_agent::Status::Critical);
}

/// A proc root that lacks files: every source is a probe error, nothing panics.
#[test]
fn missing_files_are_probe_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = HostSampler::new(ProcReader::new(dir.path()), "empty").sample(Instant::now(), 0);
    let sources: Vec<&str> = m.probe_errors.iter().map(|e| e.source.rsplit('/').next().unwrap_or("")).collect();
    for f in ["stat", "dev", "loadavg", "meminfo", "vmstat", "uptime", "mounts"] {
        assert!(sources.contains(&f), "{f} missing from {sources:?}");
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}
