//! The HTTP surface: model routing (body, X-Model, aliases, default), caller restrictions, limits,
//! OpenAI error shapes, `/v1/models`, the route table; and the config section.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{chat_body, Harness, MODEL};
use gpufleet_gateway::{router, CallerModels, GatewayConfig, GATEWAY_ROUTES};
use gpufleet_sim::MockConfig;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn with_aliases() -> Harness {
    Harness::start(vec![MockConfig::new(MODEL)], |c| {
        c.aliases.insert("gpt-4o-mini".into(), MODEL.into());
        c.default_model = Some(MODEL.into());
        c.max_body_bytes = 1024;
    })
    .await
}

#[tokio::test]
async fn models_are_routed_by_body_header_alias_and_default() {
    let h = with_aliases().await;
    for (body, header) in [
        (json!({ "model": "gpt-4o-mini", "messages": [] }), None),
        (json!({ "messages": [] }), None),
        (json!({ "model": "nope", "messages": [] }), Some(MODEL)),
    ] {
        let mut req = h.post("/v1/chat/completions", body);
        if let Some(m) = header {
            req = req.header("x-model", m);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            v["model"], MODEL,
            "the backend was sent the served model name"
        );
    }
    let resp = h.chat(json!({ "model": "unknown", "messages": [] })).await;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("unknown"));

    let models = h.get_json("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o-mini", MODEL]);
    h.shutdown().await;
}

#[tokio::test]
async fn limits_and_bad_bodies_get_openai_errors() {
    let h = with_aliases().await;
    let big = json!({ "model": MODEL, "messages": [{ "content": "x".repeat(2000) }] });
    let resp = h.chat(big).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "payload_too_large"
    );
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-big", "y".repeat(20_000))
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let resp = h
        .post("/v1/chat/completions", chat_body())
        .header("x-priority", "urgent")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    h.shutdown().await;
}

#[tokio::test]
async fn caller_models_restrict_requests_and_the_model_list() {
    let h = with_aliases().await;
    let app = router(h.gw.clone()).layer(axum::Extension(CallerModels(Some(vec!["other".into()]))));
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(chat_body().to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["code"], "model_not_allowed");
    let resp = app
        .clone()
        .oneshot(Request::get("/v1/models").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["data"], json!([]));

    // Allowing the alias allows the model it stands for, through the alias.
    let app = router(h.gw.clone()).layer(axum::Extension(CallerModels(Some(vec![
        "gpt-4o-mini".into()
    ]))));
    let body = json!({ "model": "gpt-4o-mini", "messages": [] }).to_string();
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test]
async fn every_declared_route_exists() {
    let h = with_aliases().await;
    let app = router(h.gw.clone());
    for (method, path) in GATEWAY_ROUTES {
        let path = path.replace("{id}", "1");
        let req = Request::builder()
            .method(*method)
            .uri(&path)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_ne!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let json = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().contains("json"));
        assert!(
            json || resp.status() == StatusCode::NO_CONTENT,
            "{method} {path} answered by the router itself: {}",
            resp.status()
        );
    }
    h.shutdown().await;
}

#[test]
fn config_section_parses_validates_and_redacts_keys() {
    let text = r#"
        default_model = "qwen3-8b"
        aliases = { "gpt-4o-mini" = "qwen3-8b" }
        [[backends]]
        name = "gpu-a"
        kind = "llamacpp"
        url = "http://10.0.0.5:8080/"
        models = ["qwen3-8b"]
        max_concurrency = 4
        [[backends]]
        name = "cloud"
        kind = "openai"
        url = "https://api.example.com"
        models = ["qwen3-8b"]
        api_key = "sk-secret"
        [queue]
        max_wait = "10s"
    "#;
    let config: GatewayConfig = toml::from_str(text).unwrap();
    let s = config.validate().unwrap();
    assert_eq!(s.backends[0].url, "http://10.0.0.5:8080");
    assert_eq!(
        (
            s.queue.hint_depth,
            s.queue.reject_normal_depth,
            s.queue.reject_all_depth
        ),
        (30, 40, 50)
    );
    assert_eq!(s.queue.max_wait, std::time::Duration::from_secs(10));
    assert!(
        !format!("{config:?}").contains("sk-secret"),
        "api keys never appear in Debug"
    );
    assert!(!format!("{s:?}").contains("sk-secret"));

    assert!(
        toml::from_str::<GatewayConfig>("unknown_field = 1").is_err(),
        "deny_unknown_fields"
    );
    let bad = |edit: &dyn Fn(&mut GatewayConfig)| {
        let mut c = config.clone();
        edit(&mut c);
        c.validate().unwrap_err().to_string()
    };
    assert!(bad(&|c| c.backends[1].name = "gpu-a".into()).contains("backends[1].name"));
    assert!(bad(&|c| c.backends[0].url = "ftp://x".into()).contains("backends[0].url"));
    assert!(bad(&|c| c.backends[0].max_concurrency = 0).contains("max_concurrency"));
    assert!(bad(&|c| c.default_model = Some("nope".into())).contains("default_model"));
    assert!(bad(&|c| c.queue.hint_depth = 45).contains("queue"));
    assert!(bad(&|c| c.breaker.cooldown = "soon".into()).contains("breaker.cooldown"));
}
