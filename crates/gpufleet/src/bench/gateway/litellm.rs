//! The LiteLLM peer of `bench gateway --peer litellm`, started exactly as the peer script
//! `bench/peers/gateway/run.sh` starts it: `litellm --config litellm.yaml --host 127.0.0.1
//! --port P` (its default uvicorn server, one worker) from a virtual environment with
//! `litellm[proxy]` (reused when present, else created with `pip install`), one model name mapped
//! to the three mock backends (`simple-shuffle`), a random `sk-` master key, custom per-token
//! prices, and the offline / telemetry-off environment. No database, no Redis.

use super::procs::{wait_ok, ChildProc};
use crate::bench::proc::log_tail;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest `pip install 'litellm[proxy]'` may take.
const INSTALL_LIMIT: Duration = Duration::from_secs(20 * 60);
/// Longest LiteLLM may take from start to its first proxied completion (it imports a lot).
const START_LIMIT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(200);

/// Where the peer script keeps its virtual environment; reused when it has LiteLLM.
const PEERS_VENV: &str = "/tmp/gpufleet-peers/venv";

/// The environment the peer script runs LiteLLM with (offline cost map, no telemetry).
const ENV: &[(&str, &str)] = &[
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
    ("LITELLM_TELEMETRY", "False"),
    ("LITELLM_LOG", "ERROR"),
    ("DISABLE_ADMIN_UI", "True"),
    ("NO_DOCS", "True"),
    ("ANONYMIZED_TELEMETRY", "False"),
    ("DO_NOT_TRACK", "1"),
    ("HF_HUB_OFFLINE", "1"),
];

/// `<target dir>/litellm-venv` when this executable runs from `<target dir>/<profile>/`,
/// else `target/litellm-venv` under the working directory.
pub(super) fn default_venv() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let target = exe.parent()?.parent()?;
            (target.file_name()? == "target").then(|| target.join("litellm-venv"))
        })
        .unwrap_or_else(|| PathBuf::from("target/litellm-venv"))
}

/// The `litellm` executable: from `venv` if it has one, else from the peer script's venv, else
/// `venv` is created (`python3 -m venv`) and `litellm[proxy]` installed into it with pip.
pub(super) fn ensure_installed(venv: &Path, log: &Path) -> Result<PathBuf> {
    // Absolute: LiteLLM is started in its own working directory.
    let venv =
        &std::path::absolute(venv).with_context(|| format!("resolving {}", venv.display()))?;
    for dir in [venv, Path::new(PEERS_VENV)] {
        let exe = dir.join("bin/litellm");
        if exe.is_file() {
            return Ok(exe);
        }
    }
    eprintln!(
        "installing LiteLLM into {} (pip install 'litellm[proxy]'; a few minutes) …",
        venv.display()
    );
    if !venv.join("bin/pip").is_file() {
        run_logged(
            Command::new("python3").arg("-m").arg("venv").arg(venv),
            log,
            Duration::from_secs(120),
            "python3 -m venv",
        )?;
    }
    run_logged(
        Command::new(venv.join("bin/pip")).args(["install", "-q", "litellm[proxy]"]),
        log,
        INSTALL_LIMIT,
        "pip install 'litellm[proxy]'",
    )?;
    let exe = venv.join("bin/litellm");
    anyhow::ensure!(
        exe.is_file(),
        "pip installed LiteLLM but {} is missing",
        exe.display()
    );
    Ok(exe)
}

/// Runs `cmd` to completion within `limit`, output appended to `log`.
fn run_logged(cmd: &mut Command, log: &Path, limit: Duration, what: &str) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let mut child = ChildProc::spawn(cmd, what)?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_exited()? {
            if st.success() {
                return Ok(());
            }
            bail!("{what} failed ({st}): {}", log_tail(log, 1500));
        }
        if Instant::now() >= deadline {
            bail!("{what} did not finish within {limit:?}; killed it");
        }
        std::thread::sleep(POLL);
    }
}

/// A master key as LiteLLM wants it: `sk-` and 64 hex digits.
pub(super) fn master_key() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().fold(String::from("sk-"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The proxy configuration: `mock-gpt` three times, one per backend port.
pub(super) fn config(backends: &[u16], master_key: &str) -> String {
    let mut s = String::from("model_list:\n");
    for p in backends {
        let _ = writeln!(
            s,
            "  - model_name: mock-gpt\n    litellm_params: {{model: openai/mock-model, api_base: \"http://127.0.0.1:{p}/v1\", api_key: sk-mock, input_cost_per_token: 0.0000001, output_cost_per_token: 0.0000002}}"
        );
    }
    let _ = write!(
        s,
        "router_settings:\n  routing_strategy: simple-shuffle\nlitellm_settings:\n  telemetry: false\n  set_verbose: false\n  json_logs: false\n  success_callback: []\ngeneral_settings:\n  master_key: \"{master_key}\"\n"
    );
    s
}

/// Starts LiteLLM (one worker) on `port` in `dir` and waits until it routes a completion.
pub(super) fn start(
    exe: &Path,
    dir: &Path,
    backends: &[u16],
    port: u16,
    master_key: &str,
    body: &str,
) -> Result<ChildProc> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let conf = dir.join("litellm.yaml");
    std::fs::write(&conf, config(backends, master_key)).context("writing litellm.yaml")?;
    let log_path = dir.join("litellm.log");
    let log = std::fs::File::create(&log_path).context("creating litellm.log")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--config")
        .arg(&conf)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .current_dir(dir)
        .envs(ENV.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut child = ChildProc::spawn_graceful(&mut cmd, "litellm")?;
    wait_ok(
        &mut child,
        port,
        "/v1/chat/completions",
        master_key,
        body,
        START_LIMIT,
    )
    .with_context(|| {
        format!(
            "LiteLLM did not route a completion; log tail: {}",
            log_tail(&log_path, 1500)
        )
    })?;
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_maps_one_model_to_every_backend() {
        let c = config(&[1001, 1002, 1003], "sk-abc");
        assert_eq!(c.matches("model_name: mock-gpt").count(), 3);
        assert!(c.contains("api_base: \"http://127.0.0.1:1003/v1\""));
        assert!(c.contains("routing_strategy: simple-shuffle"));
        assert!(c.contains("master_key: \"sk-abc\""));
    }

    #[test]
    fn master_keys_are_sk_and_64_hex_digits() {
        let k = master_key();
        assert!(k.starts_with("sk-") && k.len() == 67, "{k}");
        assert!(k[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(k, master_key());
    }
}
