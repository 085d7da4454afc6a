//! Client commands: thin HTTP calls to a running server, printed as tables or, with `--json`, as
//! the server's JSON.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fmt::Write as _;

/// GETs a JSON document; a 4xx/5xx becomes an error carrying the server's message.
pub async fn get_json(server: &str, path_and_query: &str) -> Result<Value> {
    let url = format!("{}{}", server.trim_end_matches('/'), path_and_query);
    let resp = reqwest::get(&url).await.with_context(|| format!("cannot reach gpufleet at {server} (is `gpufleet up` running? set --server or GPUFLEET_URL)"))?;
    let status = resp.status();
    let body: Value = resp.json().await.with_context(|| format!("{url} answered {status} with a body that is not JSON"))?;
    if !status.is_success() {
        let msg = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message");
        bail!("{status}: {msg}");
    }
    Ok(body)
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
pub async fn gpus(server: &str, host: Option<String>, json: bool) -> Result<()> {
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

/// `gpufleet hosts`
pub async fn hosts(server: &str, json: bool) -> Result<()> {
    let v = get_json(server, "/api/v1/hosts").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> =
        v["hosts"].as_array().map(|a| a.iter().map(|h| vec![s(h, "/host"), s(h, "/gpus"), s(h, "/stale_gpus"), s(h, "/last_seen")]).collect()).unwrap_or_default();
    table(&["HOST", "GPUS", "STALE", "LAST SAMPLE"], &rows);
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
    let v = get_json(&a.server.server, &format!("/api/v1/gpus/{}/telemetry{q}", encode(&a.uuid))).await?;
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
pub async fn topics(server: &str, json: bool) -> Result<()> {
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
pub async fn stats(server: &str, json: bool) -> Result<()> {
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
    let url = format!("{}/api/v1/telemetry/export{q}", a.server.server.trim_end_matches('/'));
    let resp = reqwest::get(&url).await.with_context(|| format!("cannot reach gpufleet at {}", a.server.server))?;
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
