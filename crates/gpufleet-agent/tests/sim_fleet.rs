//! The simulated fleet seen from a client: scenarios, switching at run time (unreachable and back),
//! restarts counted exactly once, registration into a server stub.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use common::{eventually, serve_stub};
use gpufleet_agent::sim::{register_hosts, DEFAULT_SIM_TOKEN};
use gpufleet_agent::{run_sim_fleet, HealthReport, HostMetrics, Scenario, SimFleetConfig, Status};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

async fn health(client: &reqwest::Client, url: &str) -> Result<HealthReport, reqwest::Error> {
    client.get(format!("{url}/health")).send().await?.error_for_status()?.json().await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
}

#[tokio::test]
async fn scenarios_are_served_and_switch_at_run_time() {
    let cfg = SimFleetConfig {
        hosts: 6,
        assign: vec![(1, Scenario::Degraded), (2, Scenario::Unreachable), (3, Scenario::GpuXid), (4, Scenario::Slow { ms: 30 })],
        ..SimFleetConfig::default()
    };
    let fleet = run_sim_fleet(cfg, std::future::pending()).await.unwrap();
    let hosts = fleet.hosts();
    assert_eq!(hosts.len(), 6);
    assert_eq!(hosts[0].name, "sim-host-00000");
    assert_eq!(hosts[2].scenario, Scenario::Unreachable);
    let c = client();

    let h0 = health(&c, &hosts[0].agent_url).await.unwrap();
    assert_eq!((h0.host.as_str(), h0.status), ("sim-host-00000", Status::Ok));
    assert!(h0.agent_version.ends_with("-sim"));
    assert_eq!(h0.components.iter().filter(|c| c.name.starts_with("gpu:")).count(), 8);
    assert_eq!(health(&c, &hosts[1].agent_url).await.unwrap().status, Status::Warn);
    assert_eq!(health(&c, &hosts[3].agent_url).await.unwrap().status, Status::Critical);
    assert_eq!(health(&c, &hosts[4].agent_url).await.unwrap().status, Status::Ok);
    let refused = health(&c, &hosts[2].agent_url).await.unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");

    // Back up: the same address answers again.
    fleet.set_scenario("sim-host-00002", Scenario::Healthy).await.unwrap();
    assert_eq!(health(&c, &hosts[2].agent_url).await.unwrap().status, Status::Ok);
    assert_eq!(fleet.host("sim-host-00002").unwrap().scenario, Scenario::Healthy);

    // A host this client holds a keep-alive connection to goes down: the next call fails.
    assert!(health(&c, &hosts[0].agent_url).await.is_ok());
    fleet.set_scenario("sim-host-00000", Scenario::Unreachable).await.unwrap();
    assert!(health(&c, &hosts[0].agent_url).await.is_err());
    assert!(health(&c, &hosts[0].agent_url).await.unwrap_err().is_connect());
    fleet.set_scenario("sim-host-00000", Scenario::Degraded).await.unwrap();
    assert_eq!(health(&c, &hosts[0].agent_url).await.unwrap().status, Status::Warn);

    // Disk filling: /data passes 95 %.
    fleet.set_scenario("sim-host-00005", Scenario::DiskFilling { percent_per_day: 86_400.0 * 30.0 }).await.unwrap();
    let url = hosts[5].agent_url.clone();
    let r = eventually(10, "disk:/data critical", || {
        let (c, u) = (c.clone(), url.clone());
        async move { health(&c, &u).await.ok().filter(|r| r.status == Status::Critical) }
    })
    .await;
    assert!(r.components.iter().any(|c| c.name == "disk:/data" && c.status == Status::Critical));

    assert!(fleet.set_scenario("sim-host-99999", Scenario::Healthy).await.is_err());
    assert!(fleet.requests() >= 9);
    fleet.stop().await;
    // Stopped: nothing answers.
    assert!(health(&c, &hosts[1].agent_url).await.is_err());
}

#[tokio::test]
async fn restart_is_counted_exactly_once_and_metrics_need_the_token() {
    let fleet = run_sim_fleet(SimFleetConfig { hosts: 2, ..SimFleetConfig::default() }, std::future::pending()).await.unwrap();
    let h = fleet.hosts()[1].clone();
    let c = client();
    let restart = |id: &str| c.post(format!("{}/containers/{id}/restart", h.agent_url));
    assert_eq!(restart("inference").send().await.unwrap().status(), 401);
    assert_eq!(restart("inference").bearer_auth(DEFAULT_SIM_TOKEN).send().await.unwrap().status(), 200);
    assert_eq!(restart("backup-job").bearer_auth(DEFAULT_SIM_TOKEN).send().await.unwrap().status(), 409);
    assert_eq!(restart("nope").bearer_auth(DEFAULT_SIM_TOKEN).send().await.unwrap().status(), 404);
    let counts = fleet.restarts(&h.name).unwrap();
    assert_eq!(counts.get("inference"), Some(&1));
    assert_eq!(counts.len(), 1);
    assert!(fleet.restarts("sim-host-00000").unwrap().is_empty());

    let url = format!("{}/metrics/host", h.agent_url);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    let m: HostMetrics = c.get(&url).bearer_auth(DEFAULT_SIM_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(m.host, h.name);
    assert_eq!(m.gpus.len(), 8);
    assert_eq!(m.containers.iter().find(|c| c.name == "inference").unwrap().restart_count, 1);
    fleet.stop().await;
}

#[tokio::test]
async fn flapping_container_and_mix() {
    let cfg = SimFleetConfig {
        hosts: 20,
        mix: vec![(Scenario::ContainerFlapping { period_ms: 50 }, 0.5)],
        seed: 3,
        ..SimFleetConfig::default()
    };
    let fleet = run_sim_fleet(cfg, std::future::pending()).await.unwrap();
    let flapping: Vec<_> = fleet.hosts().into_iter().filter(|h| matches!(h.scenario, Scenario::ContainerFlapping { .. })).collect();
    assert_eq!(flapping.len(), 10);
    let c = client();
    let url = format!("{}/metrics/host", flapping[0].agent_url);
    // The restart count climbs and the state alternates between unhealthy and restarting.
    let seen = eventually(10, "the inference container restarting with restarts > 0", || {
        let (c, u) = (c.clone(), url.clone());
        async move {
            let m: HostMetrics = c.get(&u).bearer_auth(DEFAULT_SIM_TOKEN).send().await.ok()?.json().await.ok()?;
            let inf = m.containers.into_iter().find(|c| c.name == "inference")?;
            (inf.state == "restarting" && inf.restart_count > 0).then_some(inf)
        }
    })
    .await;
    assert_eq!(seen.health.as_deref(), Some("starting"));
    assert_eq!(health(&c, &flapping[0].agent_url).await.unwrap().status, Status::Warn);
    fleet.stop().await;
}

#[tokio::test]
async fn shutdown_future_stops_the_fleet() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let fleet = run_sim_fleet(SimFleetConfig { hosts: 3, ..SimFleetConfig::default() }, async {
        let _ = rx.await;
    })
    .await
    .unwrap();
    let url = fleet.hosts()[0].agent_url.clone();
    let c = client();
    assert!(health(&c, &url).await.is_ok());
    tx.send(()).unwrap();
    eventually(10, "listener closed", || {
        let (c, u) = (c.clone(), url.clone());
        async move { health(&c, &u).await.err().map(|_| ()) }
    })
    .await;
}

/// Over the connection budget, an idle connection is closed to admit the new one: a client sweeping
/// more hosts than the budget keeps getting answers.
#[tokio::test]
async fn connection_budget_evicts_idle_connections() {
    let fleet = run_sim_fleet(SimFleetConfig { hosts: 6, max_connections: Some(2), ..SimFleetConfig::default() }, std::future::pending()).await.unwrap();
    let hosts = fleet.hosts();
    let c = client();
    for round in 0..3 {
        for h in &hosts {
            // A request can meet a pooled connection in the instant it is being evicted; a health
            // worker retries once on a connection error, and so does this client.
            let r = match health(&c, &h.agent_url).await {
                Ok(r) => Ok(r),
                Err(_) => health(&c, &h.agent_url).await,
            };
            assert!(r.is_ok(), "round {round} {}: {r:?}", h.name);
        }
    }
    assert!(fleet.evicted_connections() >= 4, "evicted {}", fleet.evicted_connections());
    assert_eq!(fleet.shed_connections(), 0);
    assert!(fleet.requests() >= 18);
    fleet.stop().await;
}

#[tokio::test]
async fn config_errors() {
    assert!(run_sim_fleet(SimFleetConfig { hosts: 0, ..SimFleetConfig::default() }, std::future::pending()).await.is_err());
    let e = run_sim_fleet(SimFleetConfig { hosts: 10, base_port: Some(65530), ..SimFleetConfig::default() }, std::future::pending()).await.unwrap_err();
    assert!(e.to_string().contains("65535"), "{e}");
}

#[derive(Default)]
struct Registry {
    bodies: Mutex<Vec<serde_json::Value>>,
    auth: Mutex<Vec<String>>,
}

async fn register(State(r): State<Arc<Registry>>, headers: HeaderMap, Json(body): Json<serde_json::Value>) -> StatusCode {
    r.auth.lock().push(headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned());
    let name = body["name"].as_str().unwrap_or("").to_owned();
    r.bodies.lock().push(body);
    match name.as_str() {
        "sim-host-00001" => StatusCode::CONFLICT, // already registered: fine
        "sim-host-00003" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::CREATED,
    }
}

#[tokio::test]
async fn register_hosts_posts_each_host() {
    let reg = Arc::new(Registry::default());
    let server = serve_stub(Router::new().route("/api/v1/hosts", post(register)).with_state(reg.clone())).await;
    let fleet = run_sim_fleet(SimFleetConfig { hosts: 3, assign: vec![(2, Scenario::Slow { ms: 10 })], ..SimFleetConfig::default() }, std::future::pending()).await.unwrap();
    let hosts = fleet.hosts();
    register_hosts(&format!("{server}/"), "gf_key_123", &hosts).await.unwrap();
    let mut bodies = reg.bodies.lock().clone();
    bodies.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[2]["agent_url"], hosts[2].agent_url.as_str());
    assert_eq!(bodies[2]["address"], "127.0.0.1");
    assert_eq!(bodies[2]["groups"], serde_json::json!(["sim"]));
    assert_eq!(bodies[2]["tags"]["scenario"], "slow:10");
    assert!(reg.auth.lock().iter().all(|a| a == "Bearer gf_key_123"));

    // One failure among more hosts is reported with the count.
    let more = run_sim_fleet(SimFleetConfig { hosts: 5, ..SimFleetConfig::default() }, std::future::pending()).await.unwrap();
    let e = register_hosts(&server, "gf_key_123", &more.hosts()).await.unwrap_err().to_string();
    assert!(e.contains("1 of 5 failed") && e.contains("sim-host-00003"), "{e}");
    fleet.stop().await;
    more.stop().await;
}
