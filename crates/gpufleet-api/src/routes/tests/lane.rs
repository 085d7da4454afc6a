//! The inference lane ([`crate::lane`]) over real loopback sockets, served as the listener
//! serves it (lane first, hyper after a handoff), on the fixture of the router tests.

use super::*;
use axum::extract::ConnectInfo;
use bytes::{Buf, BytesMut};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves `state` on 127.0.0.1:0 as `gpufleet`'s listener does for plain TCP.
async fn listen(state: &AppState) -> (SocketAddr, Shutdown, ApiService) {
    listen_with(state, crate::lane::TIMEOUTS).await
}

/// [`listen`] with other lane timeouts.
async fn listen_with(state: &AppState, timeouts: crate::lane::Timeouts) -> (SocketAddr, Shutdown, ApiService) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let api = ApiService::new(state.clone());
    let shutdown = Shutdown::new();
    let (stop, served) = (shutdown.clone(), api.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else { return };
            let (api, stop) = (api.clone(), stop.clone());
            tokio::spawn(async move {
                let Some(handoff) = api.serve_lane_with(tcp, peer, &stop, timeouts).await else { return };
                let svc = api.map_request(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(handoff.into_io()), svc).await;
            });
        }
    });
    (addr, shutdown, served)
}

/// One parsed answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A client that writes raw bytes and reads answers (length-delimited or chunked) off one
/// connection.
struct Raw {
    tcp: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        Self { tcp: TcpStream::connect(addr).await.unwrap(), buf: BytesMut::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self) -> usize {
        tokio::time::timeout(Duration::from_secs(20), self.tcp.read_buf(&mut self.buf)).await.expect("an answer within 20 s").unwrap()
    }

    /// The next answer; `None` when the server closed the connection first.
    async fn answer(&mut self) -> Option<Answer> {
        let (status, headers, head_len) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut hs);
            if let httparse::Status::Complete(n) = resp.parse(&self.buf).unwrap() {
                let headers = resp.headers.iter().map(|h| (h.name.to_ascii_lowercase(), String::from_utf8(h.value.to_vec()).unwrap())).collect::<Vec<_>>();
                break (resp.code.unwrap(), headers, n);
            }
            if self.fill().await == 0 {
                assert!(self.buf.is_empty(), "connection closed inside an answer");
                return None;
            }
        };
        self.buf.advance(head_len);
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if get("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let (used, size) = loop {
                    if let Ok(httparse::Status::Complete(x)) = httparse::parse_chunk_size(&self.buf) {
                        break x;
                    }
                    assert!(self.fill().await > 0, "closed inside a chunked body");
                };
                let size = size as usize;
                while self.buf.len() < used + size + 2 {
                    assert!(self.fill().await > 0, "closed inside a chunk");
                }
                self.buf.advance(used);
                body.extend_from_slice(&self.buf.split_to(size));
                assert_eq!(&self.buf.split_to(2)[..], b"\r\n");
                if size == 0 {
                    break;
                }
            }
        } else {
            let len: usize = get("content-length").map_or(0, |v| v.parse().unwrap());
            while self.buf.len() < len {
                assert!(self.fill().await > 0, "closed inside a body");
            }
            body = self.buf.split_to(len).to_vec();
        }
        Some(Answer { status, headers, body })
    }

    /// Whether the server closes the connection (end of stream with nothing more to read).
    async fn closed(&mut self) -> bool {
        self.fill().await == 0 && self.buf.is_empty()
    }
}

fn post(path: &str, key: Option<&str>, body: &str, extra: &str) -> Vec<u8> {
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Request-Id: req-42\r\n{auth}{extra}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// Polls `cond` every 10 ms for at most 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 10 s: {what}");
}

/// The same requests on the lane and through the router alone: status, error body, security
/// headers and request id agree, and refusals on the lane are audited.
#[tokio::test]
async fn the_lane_answers_as_the_router_does() {
    let f = fixture().await;
    let (addr, _stop, api) = listen(&f.state).await;
    let auth = f.state.auth.clone().unwrap();
    let new = NewKey { owner: Owner::new("narrow").unwrap(), role: Role::User, label: None, expires_at_ms: None, allowed_models: Some(vec!["other".into()]) };
    let narrow = auth.create_key(new, &Actor::default(), crate::state::now_ms()).await.unwrap().key.expose_secret().to_owned();
    let unknown = gpufleet_auth::ApiKey::generate().expose_secret().to_owned();
    let (admin, viewer) = (f.admin().to_owned(), f.keys[&Role::Viewer].clone());
    let cases: [(&str, Option<&str>, &str, &str); 8] = [
        ("/v1/chat/completions", Some(&admin), CHAT, ""),
        ("/v1/chat/completions", None, CHAT, ""),
        ("/v1/chat/completions", Some(&unknown), CHAT, ""),
        ("/v1/chat/completions", Some(&viewer), CHAT, ""),
        ("/v1/chat/completions", Some(&narrow), CHAT, ""),
        ("/v1/embeddings", Some(&admin), "not json", ""),
        ("/v1/completions", Some(&admin), r#"{"prompt":"hi","max_tokens":2}"#, "X-Model: nope\r\n"),
        ("/v1/completions", Some(&admin), r#"{"model":"m1","prompt":"hi","max_tokens":2}"#, "X-Priority: urgent\r\n"),
    ];
    let mut raw = Raw::connect(addr).await;
    let mut seen = Vec::new();
    for (path, key, body, extra) in cases {
        raw.send(&post(path, key, body, extra)).await;
        let lane = raw.answer().await.expect("an answer");
        let mut req = Request::post(path).header("content-type", "application/json").header("x-request-id", "req-42");
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        for line in extra.split("\r\n").filter(|l| !l.is_empty()) {
            let (n, v) = line.split_once(": ").unwrap();
            req = req.header(n, v);
        }
        let router = app(f.state.clone()).oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
        let what = format!("{path} key={} {extra:?}", key.is_some());
        assert_eq!(lane.status, router.status().as_u16(), "{what}");
        for h in ["x-content-type-options", "x-frame-options", "cache-control", "content-security-policy", "referrer-policy", "www-authenticate", "content-type"] {
            assert_eq!(lane.header(h), router.headers().get(h).map(|v| v.to_str().unwrap()), "{what}: header {h}");
        }
        assert_eq!(lane.header("x-request-id"), Some("req-42"), "{what}");
        assert!(lane.header("date").is_some(), "{what}");
        let rb: Value = serde_json::from_slice(&router.into_body().collect().await.unwrap().to_bytes()).unwrap_or(Value::Null);
        if lane.status == 200 {
            assert_eq!(lane.json()["object"], rb["object"], "{what}");
        } else {
            assert_eq!(lane.json()["error"], rb["error"], "{what}");
        }
        seen.push(lane.status);
    }
    assert_eq!(seen, [200, 401, 401, 403, 403, 400, 404, 400], "statuses of the cases");
    assert_eq!(api.lane_counts(), (8, 0), "all served by the lane, none by hyper");
    auth.audit_log().flush().await.unwrap();
    let filter = gpufleet_auth::AuditFilter { action: Some("auth.failed".into()), limit: 1000, ..Default::default() };
    let failed = auth.store().query_audit(&filter).await.unwrap();
    assert!(failed.iter().filter(|r| r.entry.route == "/v1/chat/completions").count() >= 2, "lane refusals audited");
}

/// Pipelined requests are answered in order on one connection; the first request the lane does
/// not serve hands the connection to hyper, which serves the rest of it (inference calls too).
#[tokio::test]
async fn pipelined_requests_and_the_handoff_to_hyper_share_one_connection() {
    let f = fixture().await;
    let (addr, _stop, api) = listen(&f.state).await;
    let key = f.admin().to_owned();
    let mut raw = Raw::connect(addr).await;
    let mut burst = post("/v1/chat/completions", Some(&key), CHAT, "");
    burst.extend(post("/v1/completions", Some(&key), r#"{"model":"m1","prompt":"x","max_tokens":1}"#, ""));
    burst.extend(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    burst.extend(post("/v1/chat/completions", Some(&key), CHAT, ""));
    raw.send(&burst).await;
    let objects: Vec<(u16, Value)> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            let a = raw.answer().await.expect("four answers");
            v.push((a.status, a.json()["object"].clone()));
        }
        v
    };
    assert_eq!(objects[0], (200, "chat.completion".into()));
    assert_eq!(objects[1], (200, "text_completion".into()));
    assert_eq!(objects[2].0, 200, "health, served by hyper after the handoff");
    assert_eq!(objects[3], (200, "chat.completion".into()), "an inference call after the handoff");
    assert_eq!(api.lane_counts(), (2, 1), "two on the lane, then the connection went to hyper");
}

/// What the lane leaves to hyper gets hyper's and the router's answers: a chunked request body,
/// `Expect: 100-continue`, a body over the limit, a wrong method.
#[tokio::test]
async fn unusual_requests_get_the_same_answers_as_before_the_lane() {
    let f = fixture().await;
    let (addr, _stop, api) = listen(&f.state).await;
    let key = f.admin().to_owned();
    let chunked = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{CHAT}\r\n0\r\n\r\n",
        CHAT.len()
    );
    let mut raw = Raw::connect(addr).await;
    raw.send(chunked.as_bytes()).await;
    assert_eq!(raw.answer().await.unwrap().json()["object"], "chat.completion");

    let mut raw = Raw::connect(addr).await;
    raw.send(&post("/v1/chat/completions", Some(&key), "", "Expect: 100-continue\r\n")[..]).await;
    let first = raw.answer().await.unwrap();
    assert!(first.status == 100 || first.status == 400, "hyper answers the expectation: {}", first.status);

    let limit = f.state.gateway.as_ref().unwrap().settings().max_body_bytes;
    let big = format!(r#"{{"model":"m1","prompt":"{}"}}"#, "x".repeat(limit));
    let mut raw = Raw::connect(addr).await;
    raw.send(&post("/v1/completions", Some(&key), &big, "")).await;
    let a = raw.answer().await.unwrap();
    assert_eq!(a.status, 413, "{:?}", a.json());
    assert!(a.json()["error"]["message"].as_str().unwrap().contains("exceeds"), "{:?}", a.json());

    let mut raw = Raw::connect(addr).await;
    raw.send(format!("PUT /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes()).await;
    assert_eq!(raw.answer().await.unwrap().status, 405);
    assert_eq!(api.lane_counts(), (0, 4), "each went to hyper");
}

/// A streamed completion is relayed in chunked coding; `Connection: close` ends the connection
/// after the answer.
#[tokio::test]
async fn streams_are_relayed_chunked_and_close_is_honoured() {
    let f = fixture().await;
    let (addr, _stop, api) = listen(&f.state).await;
    let body = r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}"#;
    let mut raw = Raw::connect(addr).await;
    raw.send(&post("/v1/chat/completions", Some(f.admin()), body, "Connection: close\r\n")).await;
    let a = raw.answer().await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("text/event-stream"));
    assert_eq!(a.header("transfer-encoding"), Some("chunked"));
    assert_eq!(a.header("connection"), Some("close"));
    let text = String::from_utf8(a.body).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.len() >= 5, "one event per token at least: {text}");
    assert!(events.iter().all(|e| e.starts_with("data: ")), "{text}");
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    assert!(raw.closed().await, "closed after the answer");
    assert_eq!(api.lane_counts(), (1, 0));
}

/// A client that goes away while its request runs cancels the request upstream; idle
/// connections close at shutdown.
#[tokio::test]
async fn a_client_that_leaves_cancels_upstream_and_idle_connections_close_at_shutdown() {
    let f = fixture().await;
    let (addr, stop, api) = listen(&f.state).await;
    let mock = f._mock.handle().clone();
    mock.set_hang_rate(1.0);
    let mut raw = Raw::connect(addr).await;
    raw.send(&post("/v1/chat/completions", Some(f.admin()), CHAT, "")).await;
    eventually("the request reaches the backend", || mock.stats().in_flight == 1).await;
    drop(raw);
    eventually("the backend's request is cancelled", || mock.stats().in_flight == 0).await;
    let gw = f.state.gateway.clone().unwrap();
    eventually("the gateway's lease is released", || gw.backends()[0].in_flight == 0).await;
    mock.set_hang_rate(0.0);

    let mut idle = Raw::connect(addr).await;
    idle.send(&post("/v1/chat/completions", Some(f.admin()), CHAT, "")).await;
    assert_eq!(idle.answer().await.unwrap().status, 200);
    stop.trigger();
    assert!(idle.closed().await, "an idle keep-alive connection closes at shutdown");
    assert_eq!(api.lane_counts(), (2, 0));
}

/// A head trickling in byte by byte is cut off at the head timeout although every single read is
/// quick; a keep-alive connection with nothing to do is closed at the idle timeout.
#[tokio::test]
async fn a_trickling_head_and_an_idle_connection_are_closed() {
    let f = fixture().await;
    let timeouts = crate::lane::Timeouts { head: Duration::from_millis(300), idle: Duration::from_millis(400) };
    let (addr, _stop, _api) = listen_with(&f.state, timeouts).await;

    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\n").await.unwrap();
    let mut closed_after = None;
    // Up to 3 s of one header byte every 50 ms: ten times the head timeout.
    for i in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut probe = [0u8; 64];
        match slow.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(n) if n > 0 => panic!("the server answered a head that never ended"),
            _ => {
                closed_after = Some(i); // end of stream or reset
                break;
            }
        }
        if slow.write_all(b"x").await.is_err() {
            closed_after = Some(i);
            break;
        }
    }
    assert!(closed_after.is_some(), "the trickling head was never cut off");

    let mut idle = Raw::connect(addr).await;
    idle.send(&post("/v1/chat/completions", Some(f.admin()), CHAT, "")).await;
    assert_eq!(idle.answer().await.unwrap().status, 200);
    assert!(idle.closed().await, "the idle connection is closed by the server");
}
