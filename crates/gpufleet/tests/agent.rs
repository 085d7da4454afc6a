//! System tests of `gpufleet agent` and `gpufleet sim fleet` as real processes.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_agent_reports_this_hosts_health_and_metrics() {
    let port = free_port();
    let token = "a-test-agent-token-0123456789";
    let _agent = Proc(
        Command::new(BIN)
            .args(["agent", "--listen", &format!("127.0.0.1:{port}"), "--host-name", "test-host", "--token", token])
            .env("GPUFLEET_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(30), "agent /health", || get(&format!("{base}/health")).is_some());
    let h = get(&format!("{base}/health")).unwrap();
    assert_eq!(h["host"], "test-host", "{h}");
    let kinds: Vec<&str> = h["components"].as_array().unwrap().iter().filter_map(|c| c["kind"].as_str()).collect();
    for k in ["cpu", "memory", "disk", "gpu"] {
        assert!(kinds.contains(&k), "component {k} missing: {h}");
    }
    let gpu = h["components"].as_array().unwrap().iter().find(|c| c["kind"] == "gpu").unwrap();
    assert!(gpu["message"].as_str().unwrap().contains("no NVIDIA driver"), "this machine has no GPU: {gpu}");

    // /metrics/host needs the agent token.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (unauth, m) = rt.block_on(async {
        let c = reqwest::Client::new();
        let unauth = c.get(format!("{base}/metrics/host")).send().await.unwrap().status().as_u16();
        let m: serde_json::Value = c.get(format!("{base}/metrics/host")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        (unauth, m)
    });
    assert_eq!(unauth, 401);
    let total = m["mem_total_bytes"].as_u64().unwrap();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = meminfo.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(total, kb * 1024, "MemTotal from /proc/meminfo");
    assert!(m["disks"].as_array().is_some_and(|d| !d.is_empty()), "{m}");
}

#[test]
fn sim_fleet_serves_hosts_with_their_scenarios() {
    let mut child = Command::new(BIN)
        .args(["sim", "fleet", "--hosts", "5", "--assign", "2=unreachable", "--assign", "3=degraded", "--json"])
        .env("GPUFLEET_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let _fleet = Proc(child);
    let hosts: Vec<serde_json::Value> = out.lines().take(5).map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    assert_eq!(hosts.len(), 5);
    let url = |i: usize| hosts[i]["agent_url"].as_str().unwrap().to_owned();
    let h0 = get(&format!("{}/health", url(0))).expect("host 0 answers");
    assert_eq!(h0["status"], "ok", "{h0}");
    assert!(get(&format!("{}/health", url(2))).is_none(), "host 2 is unreachable");
    let h3 = get(&format!("{}/health", url(3))).expect("host 3 answers");
    assert_eq!(h3["status"], "warn", "degraded host: {h3}");
}
