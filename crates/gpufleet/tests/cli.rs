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
    assert!(stdout.contains("admin key of this demo (shown once): gf_"), "{stdout}");
    assert!(stdout.contains("gateway: 3 simulated backends for model qwen3-8b; a chat completion answered"), "{stdout}");
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
    let out = client(&server.url).args(["stream"]).arg(&csv).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("streamed 3 rows (1 samples)"), "{stdout}");
    assert!(stdout.contains("bad.csv:3:"), "{stdout}");
    assert!(stdout.contains("bad.csv:4:"), "{stdout}");
}

#[test]
fn keys_lifecycle_and_audit_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data"), free_port());
    let out = client(&server.url).args(["keys", "create", "--owner", "carol", "--role", "viewer", "--expires-in", "7d", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (key, prefix) = (created["key"].as_str().unwrap().to_owned(), created["prefix"].as_str().unwrap().to_owned());
    // The viewer key reads but cannot manage keys.
    let as_carol = |args: &[&str]| Command::new(BIN).args(args).env("GPUFLEET_URL", &server.url).env("GPUFLEET_API_KEY", &key).output().unwrap();
    assert!(as_carol(&["gpus"]).status.success());
    let denied = as_carol(&["keys", "list"]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("403"), "{}", String::from_utf8_lossy(&denied.stderr));
    // Listing never shows the secret; revoking stops the key at once.
    let list = client(&server.url).args(["keys", "list", "--json"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&key));
    assert!(client(&server.url).args(["keys", "revoke", &prefix]).status().unwrap().success());
    let after = as_carol(&["gpus"]);
    assert!(String::from_utf8_lossy(&after.stderr).contains("401"), "{}", String::from_utf8_lossy(&after.stderr));
    let verify = client(&server.url).args(["audit", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("audit chain intact"));
    let audit = client(&server.url).args(["audit", "list", "--action", "key.revoked", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(v["records"][0]["target"], prefix.as_str(), "{v}");
}

#[test]
fn plain_http_on_a_public_address_is_refused_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["up", "--listen", "0.0.0.0:0", "--data-dir"]).arg(dir.path().join("d")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to serve plain HTTP on 0.0.0.0"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn https_with_a_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["certs", "generate", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let port = free_port();
    // Non-loopback with TLS is allowed; clients trust the self-signed certificate explicitly.
    let mut child = Command::new(BIN)
        .args(["up", "--listen", &format!("0.0.0.0:{port}"), "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .env("GPUFLEET_ADMIN_KEY", admin_key())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("https://localhost:{port}");
    let mut ok = false;
    for _ in 0..200 {
        let out = client(&url).args(["stats", "--json", "--ca-cert"]).arg(&cert).output().unwrap();
        if out.status.success() {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Plain HTTP to the TLS port does not get an answer.
    let plain = client(&format!("http://127.0.0.1:{port}")).args(["stats"]).output().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "https request with the generated CA never succeeded");
    assert!(!plain.status.success());
}

#[test]
fn mtls_requires_a_client_certificate_signed_by_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["certs", "generate", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .env("GPUFLEET_SERVER_TLS_CLIENT_CA", &cert)
        .env("GPUFLEET_ADMIN_KEY", admin_key())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pem = std::fs::read(&cert).unwrap();
    let mut identity_pem = pem.clone();
    identity_pem.extend_from_slice(&std::fs::read(&key).unwrap());
    let url = format!("https://localhost:{port}/health");
    let (with, without) = rt.block_on(async {
        let ca = reqwest::Certificate::from_pem(&pem).unwrap();
        let anonymous = reqwest::Client::builder().add_root_certificate(ca.clone()).build().unwrap();
        let with_cert = reqwest::Client::builder().add_root_certificate(ca).identity(reqwest::Identity::from_pem(&identity_pem).unwrap()).build().unwrap();
        let mut with = None;
        for _ in 0..200 {
            if let Ok(r) = with_cert.get(&url).send().await {
                with = Some(r.status());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        (with, anonymous.get(&url).send().await.map(|r| r.status()))
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(with, Some(reqwest::StatusCode::OK), "a client with a certificate signed by the CA is served");
    assert!(without.is_err(), "a client without a certificate is refused in the handshake: {without:?}");
}
