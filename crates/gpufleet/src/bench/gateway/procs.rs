//! What the gateway benchmark's processes are started with: the two nginx configurations (mock
//! backends, `least_conn` proxy), the `gpufleet up` configuration, tool installation and bounded
//! readiness waits. The process guard and OS figures are shared with `bench ingest`
//! (`crate::bench::proc`); every process here is spawned with a graceful (SIGTERM-first) guard.

pub(super) use crate::bench::proc::{free_port, ChildProc};
use crate::bench::proc::{kb_to_mb, on_path, vm_hwm_kb};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How often a waiting loop looks again.
const POLL: Duration = Duration::from_millis(50);

/// The mock completion every backend answers (OpenAI chat.completion, 272 bytes).
pub(super) const MOCK_BODY: &str = r#"{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":"mock-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15}}"#;

/// One HTTP/1.1 request on a fresh loopback connection (`Connection: close`); the status code
/// and body text. Bounded by 5 s of socket timeouts.
pub(super) fn http_call(
    port: u16,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Calls `POST path` on `port` until it answers 2xx, at most `limit`, failing early if `proc`
/// exits. Returns the last body.
pub(super) fn wait_ok(
    proc: &mut ChildProc,
    port: u16,
    path: &str,
    key: &str,
    body: &str,
    limit: Duration,
) -> Result<String> {
    let deadline = Instant::now() + limit;
    let mut last;
    loop {
        proc.ensure_running()?;
        match http_call(port, "POST", path, key, body) {
            Ok((s, b)) if (200..300).contains(&s) => return Ok(b),
            Ok((s, b)) => last = format!("answered {s}: {}", b.trim()),
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("POST 127.0.0.1:{port}{path} not 2xx within {limit:?} ({last})");
        }
        std::thread::sleep(POLL);
    }
}

/// Peak resident set size (`VmHWM`) of a live process, in MB (10^6 bytes).
pub(super) fn vm_hwm_mb(pid: u32) -> Result<f64> {
    Ok(kb_to_mb(vm_hwm_kb(pid)?))
}

/// Makes sure `nginx` and `wrk` exist, installing `nginx-light` and `wrk` with apt-get if not.
pub(super) fn ensure_tools() -> Result<()> {
    if on_path("nginx") && on_path("wrk") {
        return Ok(());
    }
    eprintln!("nginx or wrk missing; installing nginx-light and wrk with apt-get …");
    let st = Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null"])
        .status()
        .context("running apt-get")?;
    if !st.success() || !on_path("nginx") || !on_path("wrk") {
        bail!("nginx and wrk are needed (apt-get install nginx-light wrk failed: {st}); install them and run again");
    }
    Ok(())
}

fn nginx_head(prefix: &Path) -> String {
    let p = prefix.display();
    format!(
        "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {p}/tmp_body; proxy_temp_path {p}/tmp_proxy;\n  fastcgi_temp_path {p}/tmp_f; uwsgi_temp_path {p}/tmp_u; scgi_temp_path {p}/tmp_s;\n  keepalive_requests 1000000;\n"
    )
}

/// The mock backends: one nginx, one worker, listening on every port, answering [`MOCK_BODY`].
pub(super) fn mock_conf(prefix: &Path, ports: &[u16]) -> String {
    let listens: String = ports
        .iter()
        .map(|p| format!("listen 127.0.0.1:{p}; "))
        .collect();
    format!("{}  server {{\n    {listens}\n    default_type application/json;\n    location / {{ return 200 '{MOCK_BODY}'; }}\n  }}\n}}\n", nginx_head(prefix))
}

/// The reverse proxy: one nginx, one worker, `least_conn` with keep-alive over the backends.
pub(super) fn proxy_conf(prefix: &Path, listen: u16, backends: &[u16]) -> String {
    let servers: String = backends
        .iter()
        .map(|p| format!("server 127.0.0.1:{p}; "))
        .collect();
    format!(
        "{}  upstream gpus {{ least_conn; {servers}keepalive 128; }}\n  server {{\n    listen 127.0.0.1:{listen};\n    location / {{ proxy_pass http://gpus; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
        nginx_head(prefix)
    )
}

/// Starts `nginx -p prefix -c prefix/nginx.conf -g 'daemon off;'` with `conf`.
pub(super) fn start_nginx(prefix: &Path, conf: &str, what: &str) -> Result<ChildProc> {
    std::fs::create_dir_all(prefix).with_context(|| format!("creating {}", prefix.display()))?;
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildProc::spawn_graceful(&mut cmd, what)
}

/// The `gpufleet up` configuration: three OpenAI-compatible backends serving `mock-gpt`, and an
/// inference rate limit high enough that the benchmark measures forwarding, not refusals.
pub(super) fn gpufleet_conf(backends: &[u16]) -> String {
    let mut s =
        String::from("[auth.rate_limits]\ninference_per_minute = 1000000000\n\n[gateway]\n");
    for (i, p) in backends.iter().enumerate() {
        s.push_str(&format!(
            "\n[[gateway.backends]]\nname = \"gpu{}\"\nkind = \"openai\"\nurl = \"http://127.0.0.1:{p}\"\nmodels = [\"mock-gpt\"]\nmax_concurrency = 256\n",
            i + 1
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mock_body_is_the_reference_size() {
        assert_eq!(MOCK_BODY.len(), 272);
        assert!(serde_json::from_str::<serde_json::Value>(MOCK_BODY).is_ok());
    }

    #[test]
    fn nginx_configs_name_every_port() {
        let dir = Path::new("/tmp/x");
        let m = mock_conf(dir, &[1001, 1002, 1003]);
        assert!(m.contains("listen 127.0.0.1:1001;") && m.contains("listen 127.0.0.1:1003;"));
        assert!(m.contains("worker_processes 1;") && m.contains("pid /tmp/x/nginx.pid;"));
        let p = proxy_conf(dir, 2000, &[1001, 1002, 1003]);
        assert!(p.contains("least_conn; server 127.0.0.1:1001; server 127.0.0.1:1002; server 127.0.0.1:1003; keepalive 128;"));
        assert!(p.contains("listen 127.0.0.1:2000;"));
    }

    #[test]
    fn the_gpufleet_config_parses_with_three_backends() {
        let v: toml::Value = toml::from_str(&gpufleet_conf(&[1, 2, 3])).unwrap();
        let b = v["gateway"]["backends"].as_array().unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b[2]["url"].as_str(), Some("http://127.0.0.1:3"));
        assert_eq!(b[0]["max_concurrency"].as_integer(), Some(256));
    }

    #[test]
    fn dropping_the_guard_stops_the_child() {
        let p = ChildProc::spawn_graceful(Command::new("sleep").arg("30"), "sleep").unwrap();
        let pid = p.pid();
        drop(p);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the child was reaped"
        );
    }
}
