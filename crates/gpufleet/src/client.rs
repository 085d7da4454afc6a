//! Client commands: thin HTTP calls to a running server, printed as tables or, with `--json`, as
//! the server's JSON.

use crate::cli::ServerArg;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fmt::Write as _;

/// An HTTP client for one server: base URL, API key, extra trusted CA.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// Builds a client from the common flags.
    pub fn new(arg: &ServerArg) -> Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = &arg.api_key {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).context("--api-key holds characters a header cannot carry")?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let mut b = reqwest::Client::builder().default_headers(headers).connect_timeout(std::time::Duration::from_secs(3)).timeout(std::time::Duration::from_secs(300));
        if let Some(ca) = &arg.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("reading --ca-cert {}", ca.display()))?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).with_context(|| format!("{}: not a PEM certificate", ca.display()))?);
        }
        Ok(Self { base: arg.server.trim_end_matches('/').to_owned(), http: b.build()? })
    }

    /// The underlying client (for the streamer).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs a JSON document.
    pub async fn get_json(&self, path_and_query: &str) -> Result<Value> {
        self.send(reqwest::Method::GET, path_and_query, None).await
    }

    /// Sends a request with an optional JSON body; a 4xx/5xx becomes an error with the server's message.
    pub async fn send(&self, method: reqwest::Method, path_and_query: &str, body: Option<Value>) -> Result<Value> {
        let url = self.url(path_and_query);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach gpufleet at {} (is `gpufleet up` running? set --server or GPUFLEET_URL)", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().await.with_context(|| format!("{url} answered {status} with a body that is not JSON"))?;
        if !status.is_success() {
            let msg = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message");
            bail!("{status}: {msg}");
        }
        Ok(body)
    }
}

/// GETs a JSON document from a server with default credentials (`GPUFLEET_API_KEY`).
pub async fn get_json(server: &ServerArg, path_and_query: &str) -> Result<Value> {
    Client::new(server)?.get_json(path_and_query).await
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Builds `?a=b&c=d` from the pairs that are set, percent-encoding values.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = String::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            q.push(if q.is_empty() { '?' } else { '&' });
            let _ = write!(q, "{k}={}", encode(v));
        }
    }
    q
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prints rows as an aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(s, "{c:<w$}  ", w = widths[i]);
        }
        println!("{}", s.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn s(v: &Value, p: &str) -> String {
    match v.pointer(p) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// `gpufleet gpus`
pub async fn gpus(server: &ServerArg, host: Option<String>, json: bool) -> Result<()> {
    let v = get_json(server, &format!("/api/v1/gpus{}", query(&[("host", host)]))).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let metric = |g: &Value, m: &str| g.pointer(&format!("/latest/{m}/value")).and_then(Value::as_f64).map_or("-".into(), |x| format!("{x}"));
    let rows: Vec<Vec<String>> = v["gpus"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| {
                    vec![
                        s(g, "/host"),
                        s(g, "/index"),
                        s(g, "/uuid"),
                        s(g, "/model"),
                        metric(g, "DCGM_FI_DEV_GPU_UTIL"),
                        metric(g, "DCGM_FI_DEV_GPU_TEMP"),
                        metric(g, "DCGM_FI_DEV_FB_USED"),
                        s(g, "/last_seen"),
                        if g["stale"].as_bool() == Some(true) { "stale".into() } else { "live".into() },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["HOST", "IDX", "UUID", "MODEL", "UTIL%", "TEMP", "FB_USED", "LAST SAMPLE", "STATE"], &rows);
    Ok(())
}

/// `gpufleet telemetry`
pub async fn telemetry(a: &crate::cli::TelemetryArgs) -> Result<()> {
    let metric = if a.metric.is_empty() { None } else { Some(a.metric.join(",")) };
    let q = query(&[
        ("metric", metric),
        ("start", a.start.clone()),
        ("end", a.end.clone()),
        ("step", a.step.clone()),
        ("agg", a.agg.clone()),
        ("limit", a.limit.map(|l| l.to_string())),
    ]);
    let v = get_json(&a.server, &format!("/api/v1/gpus/{}/telemetry{q}", encode(&a.uuid))).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if a.csv {
        println!("timestamp,metric,value");
    }
    let mut rows = Vec::new();
    for series in v["series"].as_array().into_iter().flatten() {
        let m = s(series, "/metric");
        for p in series["points"].as_array().into_iter().flatten() {
            let ts = gpufleet_core::time::format_rfc3339(p[0].as_i64().unwrap_or(0));
            if a.csv {
                println!("{ts},{m},{}", p[1]);
            } else {
                rows.push(vec![ts, m.clone(), p[1].to_string()]);
            }
        }
    }
    if !a.csv {
        table(&["TIME", "METRIC", "VALUE"], &rows);
        if let Some(c) = v["next_cursor"].as_str() {
            println!("(more points: narrow the range or raise --limit; cursor {c})");
        }
    }
    Ok(())
}

/// `gpufleet topics`
pub async fn topics(server: &ServerArg, json: bool) -> Result<()> {
    let v = get_json(server, "/api/v1/broker/topics").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut rows = Vec::new();
    for t in v["topics"].as_array().into_iter().flatten() {
        for g in t["groups"].as_array().into_iter().flatten() {
            rows.push(vec![
                s(t, "/topic"),
                s(t, "/depth"),
                s(g, "/group"),
                s(g, "/lag"),
                s(g, "/in_flight"),
                s(g, "/redeliveries"),
                s(g, "/dead_lettered"),
            ]);
        }
        if t["groups"].as_array().is_none_or(|g| g.is_empty()) {
            rows.push(vec![s(t, "/topic"), s(t, "/depth"), "-".into(), "-".into(), "-".into(), "-".into(), "-".into()]);
        }
    }
    table(&["TOPIC", "DEPTH", "GROUP", "LAG", "IN FLIGHT", "REDELIVERED", "DEAD"], &rows);
    Ok(())
}

/// `gpufleet stats`
pub async fn stats(server: &ServerArg, json: bool) -> Result<()> {
    let v = get_json(server, "/stats").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    table(
        &["WHAT", "VALUE"],
        &[
            vec!["rows accepted".into(), s(&v, "/ingest/rows_accepted")],
            vec!["rows rejected".into(), s(&v, "/ingest/rows_rejected")],
            vec!["samples stored".into(), s(&v, "/store/samples")],
            vec!["duplicates dropped".into(), s(&v, "/store/duplicates")],
            vec!["series".into(), s(&v, "/store/series")],
            vec!["gpus".into(), s(&v, "/store/gpus")],
            vec!["bytes on disk".into(), s(&v, "/store/bytes_on_disk")],
        ],
    );
    Ok(())
}

/// `gpufleet export`
pub async fn export(a: &crate::cli::ExportArgs) -> Result<()> {
    let q = query(&[
        ("format", Some(a.format.clone())),
        ("start", a.start.clone()),
        ("end", a.end.clone()),
        ("host", a.host.clone()),
        ("gpu", a.gpu.clone()),
        ("metric", a.metric.clone()),
    ]);
    let client = Client::new(&a.server)?;
    let resp = client.http().get(client.url(&format!("/api/v1/telemetry/export{q}"))).send().await.with_context(|| format!("cannot reach gpufleet at {}", a.server.server))?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&bytes));
    }
    std::fs::write(&a.output, &bytes).with_context(|| format!("writing {}", a.output.display()))?;
    if a.json {
        println!("{}", serde_json::json!({ "file": a.output, "bytes": bytes.len(), "format": a.format }));
    } else {
        println!("wrote {} bytes of {} to {}", bytes.len(), a.format, a.output.display());
    }
    Ok(())
}

/// `gpufleet keys create`
pub async fn keys_create(server: &ServerArg, owner: &str, role: &str, expires_in: Option<String>, models: &[String], label: Option<String>, json: bool) -> Result<()> {
    let mut body = serde_json::json!({ "owner": owner, "role": role });
    if let Some(e) = expires_in {
        body["expires_in"] = Value::String(e);
    }
    if !models.is_empty() {
        body["allowed_models"] = serde_json::json!(models);
    }
    if let Some(l) = label {
        body["label"] = Value::String(l);
    }
    let v = Client::new(server)?.send(reqwest::Method::POST, "/api/v1/keys", Some(body)).await?;
    if json {
        return print_json(&v);
    }
    println!("key (shown once; store it now): {}", s(&v, "/key"));
    println!("prefix {}  owner {}  role {}  expires {}", s(&v, "/prefix"), s(&v, "/owner"), s(&v, "/role"), s(&v, "/expires_at"));
    Ok(())
}

/// `gpufleet keys list`
pub async fn keys_list(server: &ServerArg, json: bool) -> Result<()> {
    let v = Client::new(server)?.get_json("/api/v1/keys").await?;
    if json {
        return print_json(&v);
    }
    let rows: Vec<Vec<String>> = v["keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|k| vec![s(k, "/prefix"), s(k, "/owner"), s(k, "/role"), s(k, "/created_at"), s(k, "/expires_at"), s(k, "/revoked_at"), s(k, "/last_used")])
                .collect()
        })
        .unwrap_or_default();
    table(&["PREFIX", "OWNER", "ROLE", "CREATED", "EXPIRES", "REVOKED", "LAST USED"], &rows);
    Ok(())
}

/// `gpufleet keys revoke|rotate`
pub async fn keys_change(server: &ServerArg, prefix: &str, rotate: bool, json: bool) -> Result<()> {
    let client = Client::new(server)?;
    let v = if rotate {
        client.send(reqwest::Method::POST, &format!("/api/v1/keys/{}/rotate", encode(prefix)), None).await?
    } else {
        client.send(reqwest::Method::DELETE, &format!("/api/v1/keys/{}", encode(prefix)), None).await?
    };
    if json {
        return print_json(&v);
    }
    if rotate {
        println!("new key (shown once; store it now): {}\nold key {prefix} is revoked", s(&v, "/key"));
    } else {
        println!("key {prefix} revoked");
    }
    Ok(())
}

/// `gpufleet audit list`
pub async fn audit_list(server: &ServerArg, since: Option<String>, actor: Option<String>, action: Option<String>, limit: Option<usize>, json: bool) -> Result<()> {
    let q = query(&[("since", since), ("actor", actor), ("action", action), ("limit", limit.map(|l| l.to_string()))]);
    let v = Client::new(server)?.get_json(&format!("/api/v1/audit{q}")).await?;
    if json {
        return print_json(&v);
    }
    let rows: Vec<Vec<String>> = v["records"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| vec![s(r, "/id"), s(r, "/time"), s(r, "/action"), s(r, "/outcome"), s(r, "/owner"), s(r, "/key_prefix"), s(r, "/client_ip"), s(r, "/method"), s(r, "/target")])
                .collect()
        })
        .unwrap_or_default();
    table(&["ID", "TIME", "ACTION", "OUTCOME", "OWNER", "KEY", "IP", "METHOD", "TARGET"], &rows);
    Ok(())
}

/// `gpufleet audit verify`: an error (exit 1) when the chain is broken.
pub async fn audit_verify(server: &ServerArg, json: bool) -> Result<()> {
    let v = Client::new(server)?.get_json("/api/v1/audit/verify").await?;
    if json {
        print_json(&v)?;
    }
    let checked = s(&v, "/report/checked");
    if v["intact"] == Value::Bool(true) {
        if !json {
            println!("audit chain intact: {checked} records checked");
        }
        Ok(())
    } else {
        bail!("audit chain BROKEN at record {} ({}) after {checked} records", s(&v, "/report/first_broken/id"), s(&v, "/report/first_broken/reason"))
    }
}
