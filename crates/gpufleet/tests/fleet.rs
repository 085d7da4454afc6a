//! System test of fleet health with real processes: `gpufleet up` (fleet role on) and
//! `gpufleet sim fleet --register`: the simulated hosts appear in the registry, the health worker
//! classifies them (healthy, degraded, unreachable), the unreachable one fires the built-in alert,
//! the score card and `gpufleet hosts` CLI answer, and the workers' status counts the checks.

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

fn hosts(url: &str) -> Vec<serde_json::Value> {
    get(&format!("{url}/api/v1/hosts")).and_then(|v| v["hosts"].as_array().cloned()).unwrap_or_default()
}

fn state_of(url: &str, name: &str) -> Option<String> {
    hosts(url).into_iter().find(|h| h["name"] == name).and_then(|h| h["state"].as_str().map(str::to_owned))
}

#[test]
fn simulated_hosts_are_registered_checked_classified_and_alerted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gpufleet.toml");
    std::fs::write(
        &config,
        "[fleet]\nhealth_interval = \"1s\"\nhealth_timeout = \"500ms\"\nunreachable_after = 2\nmetrics_interval = \"2s\"\n\n[alerts]\ninterval = \"1s\"\n",
    )
    .unwrap();
    let server = ServerProc::start_with(&dir.path().join("data"), free_port(), &["--config", config.to_str().unwrap()]);
    let mut child = Command::new(BIN)
        .args(["sim", "fleet", "--hosts", "4", "--assign", "1=unreachable", "--assign", "2=degraded", "--json", "--register", &server.url])
        .env("GPUFLEET_API_KEY", admin_key())
        .env("GPUFLEET_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let names: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .take(4)
        .map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap()["name"].as_str().unwrap().to_owned())
        .collect();
    let _fleet = Proc(child);
    wait_until(Duration::from_secs(30), "4 hosts registered", || hosts(&server.url).iter().filter(|h| h["registered"] == true).count() == 4);
    wait_until(Duration::from_secs(30), "every host classified", || {
        state_of(&server.url, &names[0]).as_deref() == Some("healthy")
            && state_of(&server.url, &names[1]).as_deref() == Some("unreachable")
            && state_of(&server.url, &names[2]).as_deref() == Some("degraded")
            && state_of(&server.url, &names[3]).as_deref() == Some("healthy")
    });
    wait_until(Duration::from_secs(30), "host_unreachable alert firing", || {
        get(&format!("{}/api/v1/alerts", server.url)).is_some_and(|v| {
            v.as_array().is_some_and(|a| a.iter().any(|x| x["rule"] == "host_unreachable" && x["status"] == "firing" && x.to_string().contains(&names[1])))
        })
    });
    let status = get(&format!("{}/api/v1/fleet/workers/status", server.url)).unwrap();
    assert!(status.to_string().contains("fleet.health"), "{status}");
    let summary = get(&format!("{}/api/v1/fleet/summary", server.url)).unwrap();
    assert!(summary.to_string().contains("unreachable"), "{summary}");
    let score = get(&format!("{}/api/v1/hosts/{}/score", server.url, names[0])).unwrap();
    let total = score["total"].as_u64().unwrap();
    assert!(total <= 100 && score["dimensions"].as_array().unwrap().len() == 6, "{score}");

    let out = client(&server.url).args(["hosts", "ls"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&names[1]) && text.contains("unreachable"), "{text}");
    let out = client(&server.url).args(["hosts", "rm", &names[3]]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(hosts(&server.url).iter().filter(|h| h["registered"] == true).count(), 3);
}
