//! CLI system tests: demo end to end, config check, error messages.

mod common;

use common::*;
use std::process::Command;

#[test]
fn demo_replays_the_bundled_capture_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--exit-after-replay", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("d"))
        .env("GPUFLEET_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("streamed 2470 rows (2470 samples)"), "{stdout}");
    assert!(stdout.contains("stored 2470 samples for 247 GPUs"), "{stdout}");
    assert!(stdout.contains("/api/v1/gpus/GPU-"), "{stdout}");
}

#[test]
fn config_check_reports_unknown_key_with_file_and_prints_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[telemetry]\ncolectors = 3\n").unwrap();
    let out = Command::new(BIN).args(["--config"]).arg(&bad).args(["config", "check"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("colectors") && err.contains("bad.toml"), "{err}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[telemetry]\ncollectors = 3\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(&good)
        .args(["config", "check", "--json"])
        .env("GPUFLEET_SERVER_LISTEN", "127.0.0.1:9999")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"]["telemetry"]["collectors"], 3);
    assert_eq!(v["config"]["server"]["listen"], "127.0.0.1:9999");
    assert_eq!(v["env"][0], "GPUFLEET_SERVER_LISTEN");
}

#[test]
fn client_commands_explain_an_unreachable_server() {
    let port = free_port();
    let out = Command::new(BIN).args(["gpus", "--server", &format!("http://127.0.0.1:{port}")]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach gpufleet"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn stream_reports_malformed_rows_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n\
         2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-1,H100,h1,,,,50,\n\
         2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,nvidia0,GPU-1,H100,h1,,,,hot,\n\
         not-a-time,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-1,H100,h1,,,,51,\n",
    )
    .unwrap();
    let server = ServerProc::start(&dir.path().join("data"), free_port());
    let out = Command::new(BIN).args(["stream", "--server", &server.url]).arg(&csv).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("streamed 3 rows (1 samples)"), "{stdout}");
    assert!(stdout.contains("bad.csv:3:"), "{stdout}");
    assert!(stdout.contains("bad.csv:4:"), "{stdout}");
}
