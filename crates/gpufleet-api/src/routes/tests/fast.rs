//! The inference fast path ([`crate::ApiService`]) against the router alone, on the fixture of
//! the router tests.

use super::*;

/// The same request through the fast path and through the router alone: status, error body and
/// security headers must agree (the fast path is an optimisation, not a second policy).
#[tokio::test]
async fn the_inference_fast_path_answers_as_the_router_does() {
    let f = fixture().await;
    let auth = f.state.auth.clone().unwrap();
    let new = NewKey { owner: Owner::new("narrow").unwrap(), role: Role::User, label: None, expires_at_ms: None, allowed_models: Some(vec!["other".into()]) };
    let narrow = auth.create_key(new, &Actor::default(), crate::state::now_ms()).await.unwrap().key.expose_secret().to_owned();
    let viewer = f.keys[&Role::Viewer].clone();
    let admin = f.admin().to_owned();
    let unknown = gpufleet_auth::ApiKey::generate().expose_secret().to_owned();
    let cases: [(&str, &str, Option<&String>, &str); 7] = [
        ("POST", "/v1/chat/completions", Some(&admin), CHAT),
        ("POST", "/v1/chat/completions", None, CHAT),
        ("POST", "/v1/chat/completions", Some(&unknown), CHAT),
        ("POST", "/v1/chat/completions", Some(&viewer), CHAT),
        ("POST", "/v1/chat/completions", Some(&narrow), CHAT),
        ("POST", "/v1/embeddings", Some(&admin), "not json"),
        ("GET", "/v1/chat/completions", Some(&admin), ""),
    ];
    let mut seen = Vec::new();
    for (method, path, key, body) in cases {
        let make = || {
            let mut b = Request::builder().method(method).uri(path).header("content-type", "application/json").header("x-request-id", "req-42");
            if let Some(k) = key {
                b = b.header("authorization", format!("Bearer {k}"));
            }
            b.body(Body::from(body)).unwrap()
        };
        let fast = ApiService::new(f.state.clone()).oneshot(make()).await.unwrap();
        let slow = app(f.state.clone()).oneshot(make()).await.unwrap();
        let what = format!("{method} {path} key={}", key.is_some());
        assert_eq!(fast.status(), slow.status(), "{what}");
        for h in ["x-content-type-options", "x-frame-options", "cache-control", "content-security-policy", "referrer-policy"] {
            assert_eq!(fast.headers().get(h), slow.headers().get(h), "{what}: header {h}");
        }
        assert_eq!(fast.headers()["x-request-id"], "req-42", "{what}");
        assert_eq!(fast.headers().get("www-authenticate"), slow.headers().get("www-authenticate"), "{what}");
        let status = fast.status();
        let fb: Value = serde_json::from_slice(&fast.into_body().collect().await.unwrap().to_bytes()).unwrap_or(Value::Null);
        let sb: Value = serde_json::from_slice(&slow.into_body().collect().await.unwrap().to_bytes()).unwrap_or(Value::Null);
        if status.is_success() {
            assert_eq!(fb["object"], sb["object"], "{what}");
        } else {
            assert_eq!(fb["error"], sb["error"], "{what}");
        }
        seen.push(status.as_u16());
    }
    // Each case reached the outcome it was built for (so the comparison above compared something).
    assert_eq!(seen, [200, 401, 401, 403, 403, 400, 405], "statuses of the cases");
    // Refusals on the fast path are audited like any other.
    auth.audit_log().flush().await.unwrap();
    let filter = gpufleet_auth::AuditFilter { action: Some("auth.failed".into()), limit: 1000, ..Default::default() };
    let failed = auth.store().query_audit(&filter).await.unwrap();
    assert!(failed.iter().filter(|r| r.entry.route == "/v1/chat/completions").count() >= 4, "{} auth.failed records", failed.len());
}
