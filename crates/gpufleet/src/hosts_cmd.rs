//! `gpufleet hosts [ls|add|rm|show]`: the host registry from the command line.

use crate::cli::ServerArg;
use crate::client::{table, Client};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

/// `gpufleet hosts …`.
#[derive(Subcommand, Debug, Clone)]
pub enum HostsCommand {
    /// List hosts: registered ones with their state, and hosts known only from telemetry.
    Ls {
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// Only this state (healthy, degraded, critical, unreachable, unknown).
        #[arg(long)]
        state: Option<String>,
    },
    /// Register a host.
    Add {
        /// Unique host name.
        name: String,
        /// The agent's base URL, e.g. http://10.0.0.5:9101.
        #[arg(long)]
        agent_url: String,
        /// Address (default: the agent URL's host).
        #[arg(long)]
        address: Option<String>,
        /// Groups (repeat).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Tags as KEY=VALUE (repeat).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Start in maintenance.
        #[arg(long)]
        maintenance: bool,
        /// Let the watchdog restart unhealthy containers on it.
        #[arg(long)]
        watchdog: bool,
    },
    /// Remove a host (by id or name).
    Rm {
        /// Host id or name.
        host: String,
    },
    /// One host: registry entry, score card and latest checks.
    Show {
        /// Host id or name.
        host: String,
    },
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Runs a `hosts` subcommand (`ls` when none is given).
pub async fn run(server: &ServerArg, command: Option<&HostsCommand>, json_out: bool) -> Result<()> {
    let api = Client::new(server)?;
    let ls = HostsCommand::Ls { group: None, state: None };
    match command.unwrap_or(&ls) {
        HostsCommand::Ls { group, state } => {
            let mut q = Vec::new();
            if let Some(g) = group {
                q.push(format!("group={}", enc(g)));
            }
            if let Some(s) = state {
                q.push(format!("state={}", enc(s)));
            }
            let path = if q.is_empty() { "/api/v1/hosts".to_owned() } else { format!("/api/v1/hosts?{}", q.join("&")) };
            let v = api.get_json(&path).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["hosts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|h| {
                            let registered = h["registered"].as_bool().unwrap_or(false);
                            vec![
                                text(h, "name"),
                                if registered { text(h, "state") } else { "(telemetry only)".into() },
                                text(h, "status"),
                                h["groups"].as_array().map_or("-".into(), |g| g.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")),
                                text(h, "gpus"),
                                text(h, "last_seen"),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(&["HOST", "STATE", "STATUS", "GROUPS", "GPUS", "LAST SEEN"], &rows);
        }
        HostsCommand::Add { name, agent_url, address, groups, tags, maintenance, watchdog } => {
            let mut tag_map = serde_json::Map::new();
            for t in tags {
                let (k, v) = t.split_once('=').with_context(|| format!("--tag {t:?}: expected KEY=VALUE"))?;
                tag_map.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            let mut body = json!({ "name": name, "agent_url": agent_url, "groups": groups, "tags": tag_map, "maintenance": maintenance, "watchdog": watchdog });
            if let Some(a) = address {
                body["address"] = json!(a);
            }
            let v = api.send(reqwest::Method::POST, "/api/v1/hosts", Some(body)).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("registered host {} (id {})", text(&v, "name"), text(&v, "id"));
            }
        }
        HostsCommand::Rm { host } => {
            let resp = api.http().delete(api.url(&format!("/api/v1/hosts/{}", enc(host)))).send().await.with_context(|| format!("cannot reach gpufleet at {}", server.server))?;
            let status = resp.status();
            if !status.is_success() {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                bail!("{status}: {}", body.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message"));
            }
            if json_out {
                println!("{}", json!({ "removed": host }));
            } else {
                println!("removed host {host}");
            }
        }
        HostsCommand::Show { host } => {
            let h = api.get_json(&format!("/api/v1/hosts/{}", enc(host))).await?;
            let score = api.get_json(&format!("/api/v1/hosts/{}/score", enc(host))).await.ok();
            let health = api.get_json(&format!("/api/v1/hosts/{}/health?limit=5", enc(host))).await.ok();
            if json_out {
                println!("{}", serde_json::to_string_pretty(&json!({ "host": h, "score": score, "health": health }))?);
                return Ok(());
            }
            println!("{} (id {}): {} / {}; agent {}; last seen {}", text(&h, "name"), text(&h, "id"), text(&h, "state"), text(&h, "status"), text(&h, "agent_url"), text(&h, "last_seen"));
            if let Some(s) = score {
                println!("score {}/100", text(&s, "total"));
                if let Some(dims) = s["dimensions"].as_array() {
                    let rows: Vec<Vec<String>> = dims.iter().map(|d| vec![text(d, "dimension"), format!("{}/{}", text(d, "points"), text(d, "max")), text(d, "reason")]).collect();
                    table(&["DIMENSION", "POINTS", "WHY"], &rows);
                }
            }
        }
    }
    Ok(())
}
